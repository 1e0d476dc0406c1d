//! `length_field`: binary frames whose length is a big- or little-endian integer at a fixed
//! offset. Frame length = `length_offset + length_width + value + length_adjust`, so both
//! "the length counts the body" (adjust 0) and "the length counts the whole frame"
//! (adjust = -(offset + width)) can be described. Requests may be checked before any
//! backend sees them ([`Guard`]: a smallest frame size and byte-mask checks), so that a
//! client's frame a server would close its connection on is refused at the proxy.

use crate::error::CodecError;
use crate::error::Invalid;
use crate::frame::{Flags, Frame, FrameSet, IdFormat, Key, Span};
use crate::protocol::{Capabilities, Direction, Framer, Protocol};

/// Largest offset of a length, key or id field in a frame.
const MAX_FIELD_OFFSET: u32 = 1 << 20;

/// Byte order of the length field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endian {
    /// Most significant byte first (network order).
    Big,
    /// Least significant byte first.
    Little,
}

/// A fixed field inside a frame (`key` or `id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpec {
    /// Offset from the start of the frame.
    pub offset: u32,
    /// Width in bytes.
    pub width: u32,
}

/// Validated `length_field` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LengthFieldSpec {
    /// Offset of the length field.
    pub length_offset: u32,
    /// Width of the length field: 1, 2, 4 or 8.
    pub length_width: u32,
    /// Byte order of the length field.
    pub endian: Endian,
    /// Added to the computed frame length (may be negative).
    pub length_adjust: i64,
    /// Session key field.
    pub key: Option<FieldSpec>,
    /// Correlation id field.
    pub id: Option<FieldSpec>,
}

/// The codec table of `kind = "length_field"`, as written in the config file.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    length_offset: Option<u32>,
    length_width: Option<u32>,
    length_adjust: Option<i64>,
    endian: Option<String>,
    key: Option<FieldConfig>,
    id: Option<FieldConfig>,
    min_frame_size: Option<u64>,
    must: Option<MustConfig>,
}

/// `must = { offset, mask, value }`, or a list of them.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(untagged)]
enum MustConfig {
    One(CheckConfig),
    All(Vec<CheckConfig>),
}

/// One `{ offset = N, mask = N, value = N }`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckConfig {
    offset: u32,
    mask: u32,
    value: u32,
}

/// One byte-mask check: the frame's byte at `offset`, masked, must equal `value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteCheck {
    /// Offset from the start of the frame.
    pub offset: u32,
    /// The bits that are checked.
    pub mask: u8,
    /// What they must be.
    pub value: u8,
}

/// What a request must be before it is forwarded: at least `min_frame` bytes, and every
/// byte check true. A request that fails is refused (its client closed with the reason);
/// answers are not checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guard {
    /// The smallest request, in bytes (the whole frame, length field included).
    pub min_frame: u64,
    /// Byte checks.
    pub must: Vec<ByteCheck>,
}

impl Guard {
    /// Why a frame of `len` bytes may not be forwarded, if it may not; its byte checks are
    /// made once its bytes (`frame`) are all there.
    fn refuse(&self, len: u64, frame: Option<&[u8]>) -> Option<CodecError> {
        if len < self.min_frame {
            return Some(CodecError::Malformed(format!(
                "a frame of {len} bytes is shorter than min_frame_size {}",
                self.min_frame
            )));
        }
        for c in &self.must {
            let Some(frame) = frame else { break };
            let Some(&b) = frame.get(c.offset as usize) else {
                return Some(CodecError::Malformed(format!(
                    "a frame of {len} bytes has no byte at offset {} for its `must` check",
                    c.offset
                )));
            };
            if b & c.mask != c.value {
                return Some(CodecError::Malformed(format!(
                    "byte {} is 0x{b:02x}: `must` wants (byte & 0x{:02x}) == 0x{:02x}",
                    c.offset, c.mask, c.value
                )));
            }
        }
        None
    }

    fn is_empty(&self) -> bool {
        self.min_frame == 0 && self.must.is_empty()
    }
}

/// `{ offset = N, width = N }`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldConfig {
    offset: u32,
    width: u32,
}

impl Config {
    /// The validated spec; errors name the key within the codec table.
    pub fn spec(&self) -> Result<LengthFieldSpec, Invalid> {
        let length_width = self
            .length_width
            .ok_or_else(|| ("length_width".to_string(), "is required".to_string()))?;
        if ![1, 2, 4, 8].contains(&length_width) {
            return Err((
                "length_width".into(),
                format!("must be 1, 2, 4 or 8, got {length_width}"),
            ));
        }
        let endian = match self.endian.as_deref() {
            None | Some("big") => Endian::Big,
            Some("little") => Endian::Little,
            Some(o) => {
                return Err((
                    "endian".into(),
                    format!("must be `big` or `little`, got `{o}`"),
                ))
            }
        };
        let length_offset = self.length_offset.unwrap_or(0);
        if length_offset > MAX_FIELD_OFFSET {
            return Err((
                "length_offset".into(),
                format!("must be at most {MAX_FIELD_OFFSET}, got {length_offset}"),
            ));
        }
        let field = |name: &str, f: Option<FieldConfig>, max_width: u32| {
            f.map(|f| {
                if f.offset > MAX_FIELD_OFFSET {
                    Err((
                        format!("{name}.offset"),
                        format!("must be at most {MAX_FIELD_OFFSET}, got {}", f.offset),
                    ))
                } else if f.width == 0 || f.width > max_width {
                    Err((
                        format!("{name}.width"),
                        format!("must be 1 to {max_width} bytes, got {}", f.width),
                    ))
                } else {
                    Ok(FieldSpec {
                        offset: f.offset,
                        width: f.width,
                    })
                }
            })
            .transpose()
        };
        Ok(LengthFieldSpec {
            length_offset,
            length_width,
            endian,
            length_adjust: self.length_adjust.unwrap_or(0),
            key: field("key", self.key, 4096)?,
            id: field("id", self.id, 8)?,
        })
    }

    /// The validated request checks (`min_frame_size`, `must`); errors name the key.
    pub fn guard(&self) -> Result<Guard, Invalid> {
        let min_frame = match self.min_frame_size {
            None => 0,
            Some(0) => return Err(("min_frame_size".into(), "must be at least 1".into())),
            Some(n) => n,
        };
        let checks = match &self.must {
            None => Vec::new(),
            Some(MustConfig::One(c)) => vec![*c],
            Some(MustConfig::All(v)) => v.clone(),
        };
        let mut must = Vec::with_capacity(checks.len());
        for (i, c) in checks.into_iter().enumerate() {
            let name = |k: &str| match &self.must {
                Some(MustConfig::All(_)) => format!("must[{i}].{k}"),
                _ => format!("must.{k}"),
            };
            if c.offset > MAX_FIELD_OFFSET {
                return Err((
                    name("offset"),
                    format!("must be at most {MAX_FIELD_OFFSET}, got {}", c.offset),
                ));
            }
            let byte = |k: &str, v: u32| {
                u8::try_from(v)
                    .map_err(|_| (name(k), format!("must be a byte (0 to 255), got {v}")))
            };
            let (mask, value) = (byte("mask", c.mask)?, byte("value", c.value)?);
            if mask == 0 {
                return Err((name("mask"), "must have at least one bit set".into()));
            }
            if value & !mask != 0 {
                return Err((
                    name("value"),
                    format!("0x{value:02x} has bits outside mask 0x{mask:02x}: no byte can match"),
                ));
            }
            must.push(ByteCheck {
                offset: c.offset,
                mask,
                value,
            });
        }
        Ok(Guard { min_frame, must })
    }
}

/// The `length_field` protocol: the same framing both ways; requests also pass its
/// [`Guard`].
#[derive(Debug, Clone, PartialEq)]
pub struct LengthFieldProtocol {
    spec: LengthFieldSpec,
    guard: Guard,
}

impl LengthFieldProtocol {
    /// The protocol of `spec`, checking nothing more of requests.
    pub fn new(spec: LengthFieldSpec) -> Self {
        Self::guarded(spec, Guard::default())
    }

    /// The protocol of `spec`, refusing requests that fail `guard`.
    pub fn guarded(spec: LengthFieldSpec, guard: Guard) -> Self {
        LengthFieldProtocol { spec, guard }
    }

    /// Its validated settings.
    pub fn spec(&self) -> &LengthFieldSpec {
        &self.spec
    }
}

impl Protocol for LengthFieldProtocol {
    fn kind(&self) -> &'static str {
        "length_field"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            keys: self.spec.key.is_some(),
            ids: self.spec.id.is_some(),
            id_format: IdFormat::Binary,
            id_width: self.spec.id.map_or(8, |f| f.width as usize),
            interprets: false,
            correlation: None,
        }
    }

    fn framer(&self, d: Direction, max_frame: usize) -> Result<Box<dyn Framer>, CodecError> {
        let mut f = LengthField::new(self.spec.clone(), max_frame);
        if d == Direction::Requests && !self.guard.is_empty() {
            f.guard = Some(self.guard.clone());
        }
        Ok(Box::new(f))
    }
}

/// The `length_field` framer.
#[derive(Debug, Clone)]
pub struct LengthField {
    spec: LengthFieldSpec,
    header: usize,
    /// The smallest legal frame: the header and every configured field must fit.
    min_frame: u64,
    max_frame: u64,
    /// Checks each frame must pass (requests only).
    guard: Option<Guard>,
}

impl LengthField {
    /// A codec for `spec`, refusing frames over `max_frame` bytes.
    pub fn new(spec: LengthFieldSpec, max_frame: usize) -> Self {
        // In u64: offsets come from config and must not overflow (found by fuzzing).
        let header = (u64::from(spec.length_offset) + u64::from(spec.length_width)) as usize;
        let field_end =
            |f: &Option<FieldSpec>| f.map_or(0, |f| u64::from(f.offset) + u64::from(f.width));
        let min_frame = (header as u64)
            .max(field_end(&spec.key))
            .max(field_end(&spec.id));
        LengthField {
            spec,
            header,
            min_frame,
            max_frame: max_frame as u64,
            guard: None,
        }
    }

    fn read_len(&self, b: &[u8]) -> u64 {
        let field = &b[self.spec.length_offset as usize..self.header];
        match self.spec.endian {
            Endian::Big => field.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)),
            Endian::Little => field
                .iter()
                .rev()
                .fold(0u64, |acc, x| (acc << 8) | u64::from(*x)),
        }
    }
}

impl Framer for LengthField {
    fn scan(&mut self, buf: &[u8], out: &mut FrameSet) -> Result<(), CodecError> {
        let mut pos = 0usize;
        let key = self.spec.key.map(|f| {
            Key::Bytes(Span {
                offset: f.offset,
                len: f.width,
            })
        });
        let id = self.spec.id.map(|f| Span {
            offset: f.offset,
            len: f.width,
        });
        while buf.len() - pos >= self.header {
            let rest = &buf[pos..];
            let value = self.read_len(rest);
            let total = i128::from(self.header as u64)
                + i128::from(value)
                + i128::from(self.spec.length_adjust);
            if total < self.min_frame as i128 {
                return Err(CodecError::Malformed(format!(
                    "length field value {value} gives a frame of {total} bytes, \
                     shorter than its header and fields ({} bytes)",
                    self.min_frame
                )));
            }
            if total > self.max_frame as i128 {
                return Err(CodecError::TooLarge {
                    len: u64::try_from(total).unwrap_or(u64::MAX),
                    max: self.max_frame,
                });
            }
            let total = total as usize;
            if let Some(g) = &self.guard {
                // Too short is known from the length; the byte checks need the frame.
                let checked = if rest.len() >= total {
                    g.refuse(total as u64, Some(&rest[..total]))
                } else {
                    g.refuse(total as u64, None)
                };
                if let Some(e) = checked {
                    return Err(e);
                }
            }
            if rest.len() < total {
                break;
            }
            out.push(Frame {
                len: total as u32,
                id,
                key,
                flags: Flags::NONE,
            });
            pos += total;
        }
        Ok(())
    }
}

/// The demo protocol's framing (u32 BE length, u64 key at 4, u32 id at 12), for the crate's
/// tests; the proxy's `demo::proto::codec_spec` is the same for everything above.
#[cfg(test)]
pub(crate) fn demo_spec() -> LengthFieldSpec {
    LengthFieldSpec {
        length_offset: 0,
        length_width: 4,
        endian: Endian::Big,
        length_adjust: 0,
        key: Some(FieldSpec {
            offset: 4,
            width: 8,
        }),
        id: Some(FieldSpec {
            offset: 12,
            width: 4,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(width: u32, endian: Endian, adjust: i64) -> LengthFieldSpec {
        LengthFieldSpec {
            length_offset: 0,
            length_width: width,
            endian,
            length_adjust: adjust,
            key: Some(FieldSpec {
                offset: width,
                width: 2,
            }),
            id: None,
        }
    }

    #[test]
    fn body_length_big_endian() {
        let mut c = LengthField::new(spec(2, Endian::Big, 0), 1024);
        let buf = [0, 3, b'k', b'1', b'x', 0, 2, b'k'];
        let mut out = Vec::new();
        c.scan(&buf, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len, 5);
        assert_eq!(out[0].key, Some(Key::Bytes(Span { offset: 2, len: 2 })));
    }

    #[test]
    fn whole_frame_length_little_endian() {
        // length counts the whole frame, including the 4-byte length itself.
        let mut c = LengthField::new(spec(4, Endian::Little, -4), 1024);
        let buf = [7, 0, 0, 0, b'a', b'b', b'c', 6, 0, 0, 0, b'd', b'e'];
        let mut out = Vec::new();
        c.scan(&buf, &mut out).unwrap();
        assert_eq!(out.iter().map(|f| f.len).collect::<Vec<_>>(), vec![7, 6]);
    }

    #[test]
    fn refuses_oversized_and_short_frames() {
        let mut c = LengthField::new(spec(4, Endian::Big, 0), 100);
        let mut out = Vec::new();
        assert!(matches!(
            c.scan(&[0, 0, 1, 0], &mut out),
            Err(CodecError::TooLarge { len: 260, max: 100 })
        ));
        // A frame too short to hold its key field.
        assert!(matches!(
            c.scan(&[0, 0, 0, 1, 9], &mut out),
            Err(CodecError::Malformed(_))
        ));
    }

    fn dns_like() -> LengthFieldProtocol {
        let config: Config = toml::from_str(
            "length_width = 2\nid = { offset = 2, width = 2 }\nmin_frame_size = 14\n\
             must = [{ offset = 4, mask = 0x80, value = 0 }, { offset = 4, mask = 0x78, value = 0 }]",
        )
        .unwrap();
        LengthFieldProtocol::guarded(config.spec().unwrap(), config.guard().unwrap())
    }

    #[test]
    fn the_guard_refuses_short_frames_and_failed_byte_checks_of_requests_only() {
        let p = dns_like();
        let mut req = p.framer(Direction::Requests, 1024).unwrap();
        let mut ans = p.framer(Direction::Answers, 1024).unwrap();
        let mut out = Vec::new();
        // A query: 12 bytes of header, QR and opcode clear.
        let mut good = vec![0, 12, 0xab, 0xcd, 0x01, 0x00];
        good.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        req.scan(&good, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        // Too short: refused from its length alone, before its bytes arrive.
        let e = req.scan(&[0, 2, 0xab], &mut out).unwrap_err();
        assert!(
            e.to_string().contains("shorter than min_frame_size 14"),
            "{e}"
        );
        // QR set: refused once the frame is whole, the good frame before it still reported.
        let mut answer = good.clone();
        answer[4] = 0x81;
        let mut both = good.clone();
        both.extend_from_slice(&answer);
        out.clear();
        let e = req.scan(&both[..both.len() - 1], &mut out);
        assert!(e.is_ok() && out.len() == 1, "incomplete: not judged yet");
        out.clear();
        let e = req.scan(&both, &mut out).unwrap_err();
        assert_eq!(out.len(), 1);
        assert!(e.to_string().contains("byte 4 is 0x81"), "{e}");
        // Opcode 5 (UPDATE) fails the second check.
        let mut update = good.clone();
        update[4] = 0x28;
        assert!(req.scan(&update, &mut Vec::new()).is_err());
        // Answers are not checked.
        out.clear();
        ans.scan(&answer, &mut out).unwrap();
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn guard_settings_are_validated_by_key() {
        let err = |t: &str| {
            let c: Config = toml::from_str(&format!("length_width = 2\n{t}")).unwrap();
            c.guard().unwrap_err()
        };
        assert_eq!(err("min_frame_size = 0").0, "min_frame_size");
        assert_eq!(
            err("must = { offset = 1, mask = 256, value = 0 }").0,
            "must.mask"
        );
        assert_eq!(
            err("must = { offset = 1, mask = 0, value = 0 }").0,
            "must.mask"
        );
        let (k, p) = err(
            "must = [{ offset = 1, mask = 1, value = 0 }, { offset = 1, mask = 1, value = 2 }]",
        );
        assert_eq!(k, "must[1].value");
        assert!(p.contains("outside mask"), "{p}");
    }

    #[test]
    fn eight_byte_length_does_not_overflow() {
        let mut c = LengthField::new(spec(8, Endian::Big, 0), 100);
        let mut out = Vec::new();
        assert!(matches!(
            c.scan(&[0xff; 8], &mut out),
            Err(CodecError::TooLarge { .. })
        ));
    }
}
