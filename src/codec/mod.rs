//! Codecs: turning a connection's buffered bytes into frame sets, in both directions.
//!
//! A codec is called once per read with *everything* buffered on a connection and appends
//! every complete frame at the head of that buffer to a [`FrameSet`]. It never does I/O and
//! never keeps a clock; "need more bytes" is simply a frame set that stops early. A frame is
//! `(len, id, key)`: the exact byte length of the message, plus where its correlation id and
//! its session key sit inside it (offsets relative to the frame's first byte), so nothing is
//! copied or allocated per frame.
//!
//! Malformed input is a [`CodecError`]: the caller closes that one connection with the error
//! as the logged reason.

mod delimiter;
pub mod error_reply;
mod length_field;
pub mod lua;
pub mod memcache;
pub mod plan;
#[cfg(test)]
mod props;
pub mod resp;

pub use delimiter::{Delimiter, DelimiterSpec};
pub use length_field::{Endian, FieldSpec, LengthField, LengthFieldSpec};

/// Where a field (key or id) sits inside a frame: offset from the frame's start, and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Offset of the first byte, relative to the start of the frame.
    pub offset: u32,
    /// Length in bytes.
    pub len: u32,
}

impl Span {
    /// The bytes of this span inside `frame`.
    pub fn slice<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        let start = self.offset as usize;
        &frame[start..start + self.len as usize]
    }
}

/// A frame's session key: bytes inside the frame, or an integer a script computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// These bytes of the frame.
    Bytes(Span),
    /// An integer (hashed as its 8 big-endian bytes).
    Int(u64),
}

impl Key {
    /// The key's bytes: a slice of `frame`, or the integer's big-endian bytes in `scratch`.
    pub fn bytes<'a>(&self, frame: &'a [u8], scratch: &'a mut [u8; 8]) -> &'a [u8] {
        match self {
            Key::Bytes(s) => s.slice(frame),
            Key::Int(v) => {
                *scratch = v.to_be_bytes();
                &scratch[..]
            }
        }
    }

    /// A printable form: the bytes (lossy UTF-8, or hex if not text) or the integer.
    pub fn display(&self, frame: &[u8]) -> String {
        match self {
            Key::Int(v) => v.to_string(),
            Key::Bytes(s) => {
                let b = s.slice(frame);
                match std::str::from_utf8(b) {
                    Ok(t) if t.chars().all(|c| !c.is_control()) => t.to_string(),
                    _ => b
                        .iter()
                        .map(|x| format!("{x:02x}"))
                        .collect::<Vec<_>>()
                        .join(""),
                }
            }
        }
    }
}

/// What is known of a request that failed, for its error answer.
#[derive(Debug, Clone, Copy)]
pub struct Failure<'a> {
    /// The client's own id, as it sent it (`by_id`).
    pub id: Option<&'a [u8]>,
    /// The request's session key bytes, if it had one (integer keys as 8 big-endian bytes).
    pub key: Option<&'a [u8]>,
    /// Why it failed, for people.
    pub reason: &'a str,
}

/// One complete message at the head of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Exact byte length of the message.
    pub len: u32,
    /// Correlation id field, if the codec found one.
    pub id: Option<Span>,
    /// Session key, if the codec found one.
    pub key: Option<Key>,
}

/// The frames found by one scan, in stream order. Reused across reads.
pub type FrameSet = Vec<Frame>;

/// How an id field is written when the proxy puts its own ids on shared backend connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdFormat {
    /// A fixed-width binary integer; the proxy writes its id big-endian in the same width.
    Binary,
    /// A text token; the proxy writes its id as decimal digits.
    Text,
}

/// Why a codec refused the input. Always the client's (or backend's) fault, never ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// A frame announces (or has grown to) more bytes than the configured maximum.
    #[error("frame of {len} bytes exceeds max_frame_size {max}")]
    TooLarge {
        /// Announced or buffered size.
        len: u64,
        /// Configured bound.
        max: u64,
    },
    /// A request announcing more bytes than the configured maximum, whose length is known
    /// and which the protocol lets a connection skip (memcached's storage commands): the
    /// caller may answer it and discard its `len` bytes instead of closing.
    #[error("frame of {len} bytes exceeds max_frame_size {max}")]
    Oversized {
        /// The frame's announced length, from its first byte.
        len: u64,
        /// Configured bound.
        max: u64,
    },
    /// The bytes cannot be a frame of this protocol.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A protocol script failed (error, time or memory limit, or a bad report), or said the
    /// input is garbage; the message names the script's file and line where known.
    #[error("{0}")]
    Script(String),
}

/// A protocol codec. Implementations are cheap, per-connection values.
pub trait Codec {
    /// Appends every complete frame at the head of `buf` to `out`, in order, and stops at the
    /// first incomplete one. `out` is not cleared. Returns an error if the head of `buf` can
    /// never become a valid frame.
    fn scan(&mut self, buf: &[u8], out: &mut FrameSet) -> Result<(), CodecError>;

    /// How ids of this codec are rewritten.
    fn id_format(&self) -> IdFormat;

    /// Why the codec takes no new connections for now, if it does not (a protocol script
    /// suspended after failing repeatedly), and whether this is the first time that is asked
    /// during the suspension (so one line is logged for it).
    fn suspended(&self) -> Option<(String, bool)> {
        None
    }
}

/// A protocol whose frames have no fixed header (RESP, memcache text): each frame is
/// measured by scanning it.
pub(crate) trait Measured {
    /// The length of the request at the head of `buf`; `Ok(None)`: incomplete.
    fn request_len(buf: &[u8], max: usize) -> Result<Option<usize>, CodecError>;
    /// The length of the answer at the head of `buf`; `Ok(None)`: incomplete.
    fn answer_len(buf: &[u8], max: usize) -> Result<Option<usize>, CodecError>;
    /// The key of one whole request.
    fn request_key(frame: &[u8]) -> Option<Key>;
}

/// The codec of a [`Measured`] protocol, for requests or (with `answers`) answers: cuts
/// frames from the head of the buffer one at a time and refuses any over `max_frame`.
#[derive(Debug, Clone)]
pub struct Scanned<P> {
    answers: bool,
    max_frame: usize,
    protocol: std::marker::PhantomData<P>,
}

impl<P> Scanned<P> {
    /// A codec for requests (`answers` false) or answers, bounded by `max_frame`.
    pub fn new(answers: bool, max_frame: usize) -> Self {
        Scanned {
            answers,
            max_frame,
            protocol: std::marker::PhantomData,
        }
    }
}

impl<P: Measured> Codec for Scanned<P> {
    fn scan(&mut self, buf: &[u8], out: &mut FrameSet) -> Result<(), CodecError> {
        let max = self.max_frame;
        let mut pos = 0;
        while pos < buf.len() {
            let rest = &buf[pos..];
            let measured = if self.answers {
                P::answer_len(rest, max)?
            } else {
                P::request_len(rest, max)?
            };
            let Some(len) = measured else {
                return Ok(());
            };
            if len > max {
                return Err(CodecError::TooLarge {
                    len: len as u64,
                    max: max as u64,
                });
            }
            let key = if self.answers {
                None
            } else {
                P::request_key(&rest[..len])
            };
            out.push(Frame {
                len: len as u32,
                id: None,
                key,
            });
            pos += len;
        }
        Ok(())
    }

    fn id_format(&self) -> IdFormat {
        IdFormat::Binary
    }
}

/// A validated codec description from config; builds codec instances.
#[derive(Debug, Clone, PartialEq)]
pub enum CodecSpec {
    /// Binary frames with a length field.
    LengthField(LengthFieldSpec),
    /// Line (or other delimiter) framed text.
    Delimiter(DelimiterSpec),
    /// A user's protocol script.
    Lua(lua::LuaSpec),
    /// Redis RESP; `answers` frames replies.
    Resp {
        /// Frames answers rather than requests.
        answers: bool,
    },
    /// memcached's text protocol; `answers` frames replies.
    Memcache {
        /// Frames answers rather than requests.
        answers: bool,
    },
}

impl CodecSpec {
    /// A fresh codec instance bounded by `max_frame` bytes per frame. Fails only for a
    /// script that cannot be loaded on this thread (it was loaded once when the config was
    /// validated, so this means e.g. memory exhaustion).
    pub fn build(&self, max_frame: usize) -> Result<Box<dyn Codec>, CodecError> {
        Ok(match self {
            CodecSpec::LengthField(s) => Box::new(LengthField::new(s.clone(), max_frame)),
            CodecSpec::Delimiter(s) => Box::new(Delimiter::new(s.clone(), max_frame)),
            CodecSpec::Lua(s) => Box::new(lua::LuaCodec::new(s, max_frame)?),
            CodecSpec::Resp { answers } => Box::new(resp::Resp::new(*answers, max_frame)),
            CodecSpec::Memcache { answers } => {
                Box::new(memcache::Memcache::new(*answers, max_frame))
            }
        })
    }

    /// The codec for answers when no `response_codec` is configured: the same one (a
    /// script frames answers with its `answers` function if it has one).
    pub fn for_answers(&self) -> CodecSpec {
        match self {
            CodecSpec::Lua(s) => CodecSpec::Lua(lua::LuaSpec {
                direction: lua::Direction::Answers,
                ..s.clone()
            }),
            CodecSpec::Resp { .. } => CodecSpec::Resp { answers: true },
            CodecSpec::Memcache { .. } => CodecSpec::Memcache { answers: true },
            other => other.clone(),
        }
    }

    /// How ids of this codec are rewritten.
    pub fn id_format(&self) -> IdFormat {
        match self {
            CodecSpec::LengthField(_) => IdFormat::Binary,
            CodecSpec::Delimiter(_) => IdFormat::Text,
            CodecSpec::Lua(s) => s.info.id_format,
            CodecSpec::Resp { .. } | CodecSpec::Memcache { .. } => IdFormat::Binary,
        }
    }

    /// Width in bytes of a binary id field, for the proxy's id space.
    pub fn id_width(&self) -> usize {
        match self {
            CodecSpec::LengthField(s) => s.id.map_or(8, |f| f.width as usize),
            CodecSpec::Delimiter(_) => 8,
            CodecSpec::Lua(s) => s.info.id_width,
            CodecSpec::Resp { .. } | CodecSpec::Memcache { .. } => 8,
        }
    }

    /// Whether frames of this codec can carry a session key.
    pub fn has_key(&self) -> bool {
        match self {
            CodecSpec::LengthField(s) => s.key.is_some(),
            CodecSpec::Delimiter(s) => s.key_token.is_some(),
            CodecSpec::Lua(_) | CodecSpec::Resp { .. } | CodecSpec::Memcache { .. } => true,
        }
    }

    /// Whether frames of this codec can carry a correlation id.
    pub fn has_id(&self) -> bool {
        match self {
            CodecSpec::LengthField(s) => s.id.is_some(),
            CodecSpec::Delimiter(s) => s.id_token.is_some(),
            CodecSpec::Lua(_) => true,
            CodecSpec::Resp { .. } | CodecSpec::Memcache { .. } => false,
        }
    }

    /// The codec kind's config name.
    pub fn kind(&self) -> &'static str {
        match self {
            CodecSpec::LengthField(_) => "length_field",
            CodecSpec::Delimiter(_) => "delimiter",
            CodecSpec::Lua(_) => "lua",
            CodecSpec::Resp { .. } => "resp",
            CodecSpec::Memcache { .. } => "memcache",
        }
    }

    /// What the proxy does with one request of this protocol (Forward for protocols the
    /// proxy does not interpret). `password`: the listener's client password, if any.
    pub fn plan(
        &self,
        frame: &[u8],
        state: &mut plan::ConnState,
        password: Option<&[u8]>,
    ) -> plan::Plan {
        match self {
            CodecSpec::Resp { .. } => resp::plan(frame, state, password),
            CodecSpec::Memcache { .. } => memcache::plan(frame, state),
            _ => plan::Plan::Forward,
        }
    }

    /// How the protocol answers a request over `max_frame_size` (the scan's error `e`):
    /// the answer, and how many bytes to skip to go on with the connection (`None`: close
    /// it once the answer is out). `None` for protocols without error answers, whose
    /// clients are closed.
    pub fn oversize_answer(&self, e: &CodecError) -> Option<(bytes::Bytes, Option<u64>)> {
        let (len, max, skip) = match *e {
            CodecError::TooLarge { len, max } => (len, max, None),
            CodecError::Oversized { len, max } => (len, max, Some(len)),
            _ => return None,
        };
        match self {
            // As Redis for a bulk string or query past its limits: an error, then the
            // connection closes (the rest of the stream cannot be trusted).
            CodecSpec::Resp { .. } => Some((
                format!("-ERR Protocol error: a request of {len} bytes exceeds max_frame_size {max}\r\n").into(),
                None,
            )),
            // As memcached: the data block is swallowed and the connection goes on.
            CodecSpec::Memcache { .. } if skip.is_some() => {
                Some((bytes::Bytes::from_static(b"SERVER_ERROR object too large for cache\r\n"), skip))
            }
            CodecSpec::Memcache { .. } => Some((
                bytes::Bytes::from_static(b"CLIENT_ERROR line too long\r\n"),
                None,
            )),
            _ => None,
        }
    }

    /// Whether requests of this protocol go through [`Self::plan`].
    pub fn has_plans(&self) -> bool {
        matches!(self, CodecSpec::Resp { .. } | CodecSpec::Memcache { .. })
    }
}

/// Reads a binary id field as an unsigned big-endian integer (at most 8 bytes), or parses a
/// text id as decimal. Returns `None` if the bytes are not an id the proxy could have written.
pub fn parse_proxy_id(format: IdFormat, bytes: &[u8]) -> Option<u64> {
    match format {
        IdFormat::Binary => {
            if bytes.is_empty() || bytes.len() > 8 {
                return None;
            }
            Some(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
        }
        IdFormat::Text => {
            if bytes.is_empty() || bytes.len() > 19 {
                return None;
            }
            bytes.iter().try_fold(0u64, |acc, b| {
                b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0'))
            })
        }
    }
}

/// Writes `id` in `format` into `out`: big-endian in `width` bytes for binary ids, decimal
/// digits for text ids.
pub fn write_proxy_id(format: IdFormat, id: u64, width: usize, out: &mut bytes::BytesMut) {
    match format {
        IdFormat::Binary => {
            let be = id.to_be_bytes();
            // Config validation keeps binary id widths within 1..=8.
            out.extend_from_slice(&be[8 - width.clamp(1, 8)..]);
        }
        IdFormat::Text => {
            let mut digits = [0u8; 20];
            let mut n = id;
            let mut i = digits.len();
            loop {
                i -= 1;
                digits[i] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            out.extend_from_slice(&digits[i..]);
        }
    }
}

/// The number of distinct proxy ids an id field of `width` bytes can hold.
pub fn id_space(format: IdFormat, width: usize) -> u64 {
    match format {
        IdFormat::Binary if width < 8 => 1u64 << (8 * width),
        IdFormat::Binary => u64::MAX,
        // At most 19 decimal digits: what `parse_proxy_id` reads back.
        IdFormat::Text => 10_000_000_000_000_000_000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_ids_round_trip() {
        for (fmt, width) in [
            (IdFormat::Binary, 4),
            (IdFormat::Binary, 8),
            (IdFormat::Text, 0),
        ] {
            for id in [0u64, 1, 255, 65_536, 4_000_000_000] {
                let mut b = bytes::BytesMut::new();
                write_proxy_id(fmt, id, width, &mut b);
                assert_eq!(parse_proxy_id(fmt, &b), Some(id), "{fmt:?} {id}");
            }
        }
        assert_eq!(parse_proxy_id(IdFormat::Text, b"12a"), None);
        assert_eq!(parse_proxy_id(IdFormat::Binary, &[0; 9]), None);
        assert_eq!(id_space(IdFormat::Binary, 2), 65_536);
        // Every text id the proxy can hand out reads back (found by the proxy_id fuzz target).
        let last = id_space(IdFormat::Text, 0) - 1;
        let mut b = bytes::BytesMut::new();
        write_proxy_id(IdFormat::Text, last, 0, &mut b);
        assert_eq!(parse_proxy_id(IdFormat::Text, &b), Some(last));
    }
}
