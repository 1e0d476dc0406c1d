//! How a protocol answers a request that failed (its backend was lost with the request in
//! flight, it timed out, or no backend could take it), so the client connection can stay
//! open: Redis's `-ERR …`, memcached's `SERVER_ERROR …`, an operator's template for the
//! generic codecs, or a protocol script's `error_reply` function. Pure: the caller hands in
//! the failed request's id and key and gets the answer's bytes.

pub use super::Failure;
use super::{CodecSpec, LengthFieldSpec};
use bytes::Bytes;

/// How failed requests of a listener are answered; built from config.
#[derive(Debug, Clone, PartialEq)]
pub enum ErrorReplySpec {
    /// `-ERR reason` (the `resp` codec).
    Resp,
    /// `SERVER_ERROR reason` (the `memcache` codec).
    Memcache,
    /// An operator's template (`error_reply` / `error_reply_hex`).
    Template(Template),
    /// The protocol script's `error_reply(id, key, reason)` function.
    Script(super::lua::LuaSpec),
}

impl ErrorReplySpec {
    /// Whether the answer uses the request's key, so it must be kept while in flight.
    pub fn needs_key(&self) -> bool {
        match self {
            ErrorReplySpec::Template(t) => t.pieces.contains(&Piece::Key),
            ErrorReplySpec::Script(_) => true,
            ErrorReplySpec::Resp | ErrorReplySpec::Memcache => false,
        }
    }

    /// The answerer for this thread (a script's runs on this thread's VM for it).
    pub fn build(&self) -> Result<ErrorReplier, super::CodecError> {
        Ok(match self {
            ErrorReplySpec::Resp => ErrorReplier::Resp,
            ErrorReplySpec::Memcache => ErrorReplier::Memcache,
            ErrorReplySpec::Template(t) => ErrorReplier::Template(t.clone()),
            ErrorReplySpec::Script(s) => {
                ErrorReplier::Script(super::lua::ScriptErrorReply::new(s)?)
            }
        })
    }
}

/// A listener's error answers on one worker thread.
#[derive(Debug)]
pub enum ErrorReplier {
    /// `-ERR reason`.
    Resp,
    /// `SERVER_ERROR reason`.
    Memcache,
    /// An operator's template.
    Template(Template),
    /// A script's `error_reply`.
    Script(super::lua::ScriptErrorReply),
}

impl ErrorReplier {
    /// The answer to `failure`, or `None` if the protocol has none for it (the client is
    /// then closed).
    pub fn answer(&self, failure: &Failure<'_>) -> Option<Bytes> {
        match self {
            ErrorReplier::Resp => Some(one_line("-ERR ", failure.reason)),
            ErrorReplier::Memcache => Some(one_line("SERVER_ERROR ", failure.reason)),
            ErrorReplier::Template(t) => Some(t.render(failure)),
            ErrorReplier::Script(s) => s.answer(failure),
        }
    }
}

/// `prefix reason\r\n`, with CR and LF in the reason made spaces.
fn one_line(prefix: &str, reason: &str) -> Bytes {
    let reason = reason.replace(['\r', '\n'], " ");
    Bytes::from(format!("{prefix}{reason}\r\n"))
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Bytes(Vec<u8>),
    Id,
    Key,
    Reason,
}

/// What the answer's framing needs after the pieces are put together.
#[derive(Debug, Clone, PartialEq)]
enum Finish {
    /// The length field is written for the answer's size.
    Length(LengthFieldSpec),
    /// The delimiter ends the answer; the reason must not contain it (nor CR or LF).
    Delimiter(Vec<u8>),
    /// Nothing (a script frames the answers).
    Nothing,
}

/// An operator's error answer: bytes with `{id}`, `{key}` and `{reason}` put in, framed for
/// the listener's response codec.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pieces: Vec<Piece>,
    finish: Finish,
}

impl Template {
    /// A template written as text (`error_reply`), for answers framed by `response`.
    pub fn from_text(text: &str, response: &CodecSpec) -> Result<Template, String> {
        let mut pieces = Vec::new();
        for (literal, placeholder) in split_placeholders(text)? {
            if !literal.is_empty() {
                pieces.push(Piece::Bytes(literal.as_bytes().to_vec()));
            }
            pieces.extend(placeholder);
        }
        Ok(Self::new(pieces, response))
    }

    /// A template written as hex digits with placeholders between them (`error_reply_hex`),
    /// e.g. `"00000000 {key} {id} 03 455252 {reason}"`; spaces are ignored.
    pub fn from_hex(text: &str, response: &CodecSpec) -> Result<Template, String> {
        let mut pieces = Vec::new();
        for (literal, placeholder) in split_placeholders(text)? {
            let digits: Vec<u8> = literal
                .bytes()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            if digits.len() % 2 != 0 {
                return Err(format!("`{literal}` has an odd number of hex digits"));
            }
            let bytes = digits
                .chunks(2)
                .map(|pair| {
                    std::str::from_utf8(pair)
                        .ok()
                        .and_then(|p| u8::from_str_radix(p, 16).ok())
                        .ok_or_else(|| format!("`{literal}` is not hex"))
                })
                .collect::<Result<Vec<u8>, String>>()?;
            if !bytes.is_empty() {
                pieces.push(Piece::Bytes(bytes));
            }
            pieces.extend(placeholder);
        }
        Ok(Self::new(pieces, response))
    }

    fn new(pieces: Vec<Piece>, response: &CodecSpec) -> Template {
        let finish = match response {
            CodecSpec::LengthField(s) => Finish::Length(s.clone()),
            CodecSpec::Delimiter(d) => Finish::Delimiter(d.delimiter.clone()),
            _ => Finish::Nothing,
        };
        Template { pieces, finish }
    }

    /// The answer for `f`.
    pub fn render(&self, f: &Failure<'_>) -> Bytes {
        let mut out = Vec::with_capacity(64 + f.reason.len());
        for p in &self.pieces {
            match p {
                Piece::Bytes(b) => out.extend_from_slice(b),
                Piece::Id => out.extend_from_slice(f.id.unwrap_or_default()),
                Piece::Key => out.extend_from_slice(f.key.unwrap_or_default()),
                Piece::Reason => match &self.finish {
                    Finish::Delimiter(d) => out.extend_from_slice(&one_line_reason(f.reason, d)),
                    _ => out.extend_from_slice(f.reason.as_bytes()),
                },
            }
        }
        match &self.finish {
            Finish::Length(spec) => write_length(spec, &mut out),
            Finish::Delimiter(d) => out.extend_from_slice(d),
            Finish::Nothing => {}
        }
        out.into()
    }
}

/// The reason with the delimiter's bytes, CR and LF made spaces, so the line stays one line.
fn one_line_reason(reason: &str, delimiter: &[u8]) -> Vec<u8> {
    reason
        .bytes()
        .map(|b| {
            if b == b'\r' || b == b'\n' || delimiter.contains(&b) {
                b' '
            } else {
                b
            }
        })
        .collect()
}

/// Writes the frame's length into its length field (the field must lie inside the frame;
/// config validation checks that the template's answers frame).
fn write_length(spec: &LengthFieldSpec, out: &mut [u8]) {
    let at = spec.length_offset as usize;
    let width = spec.length_width as usize;
    if out.len() < at + width {
        return;
    }
    let value = out.len() as i64 - (at + width) as i64 - spec.length_adjust;
    let value = value.max(0) as u64;
    let be = value.to_be_bytes();
    let bytes = &be[8 - width..];
    let field = &mut out[at..at + width];
    match spec.endian {
        super::Endian::Big => field.copy_from_slice(bytes),
        super::Endian::Little => {
            for (d, s) in field.iter_mut().zip(bytes.iter().rev()) {
                *d = *s;
            }
        }
    }
}

/// Splits a template into (literal text, the placeholder after it) pairs.
fn split_placeholders(text: &str) -> Result<Vec<(&str, Option<Piece>)>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let close = rest[open..]
            .find('}')
            .map(|c| open + c)
            .ok_or_else(|| format!("`{}` opens a placeholder it does not close", &rest[open..]))?;
        let piece = match &rest[open + 1..close] {
            "id" => Piece::Id,
            "key" => Piece::Key,
            "reason" => Piece::Reason,
            other => {
                return Err(format!(
                    "unknown placeholder `{{{other}}}`; expected {{id}}, {{key}} or {{reason}}"
                ))
            }
        };
        out.push((&rest[..open], Some(piece)));
        rest = &rest[close + 1..];
    }
    out.push((rest, None));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{DelimiterSpec, Endian, FieldSpec};

    fn demo_answers() -> CodecSpec {
        CodecSpec::LengthField(LengthFieldSpec {
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
        })
    }

    #[test]
    fn a_binary_template_gets_its_length_id_and_key() {
        let t =
            Template::from_hex("00000000 {key} {id} 03 455252 {reason}", &demo_answers()).unwrap();
        let a = t.render(&Failure {
            id: Some(&[0, 0, 0, 9]),
            key: Some(&[1, 2, 3, 4, 5, 6, 7, 8]),
            reason: "gone",
        });
        let mut want = vec![0, 0, 0, 20, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 9, 3];
        want.extend_from_slice(b"ERRgone");
        assert_eq!(&a[..], &want[..]);
    }

    #[test]
    fn a_text_template_is_one_line() {
        let spec = CodecSpec::Delimiter(DelimiterSpec {
            delimiter: b"\r\n".to_vec(),
            key_token: None,
            id_token: Some(0),
        });
        let t = Template::from_text("{id} ERR {reason}", &spec).unwrap();
        let a = t.render(&Failure {
            id: Some(b"77"),
            key: None,
            reason: "backend b1 failed:\r\nclosed",
        });
        assert_eq!(&a[..], b"77 ERR backend b1 failed:  closed\r\n");
        assert!(!ErrorReplySpec::Template(t).needs_key());
    }

    #[test]
    fn little_endian_whole_frame_lengths() {
        let spec = CodecSpec::LengthField(LengthFieldSpec {
            length_offset: 1,
            length_width: 2,
            endian: Endian::Little,
            length_adjust: -3,
            key: None,
            id: None,
        });
        let t = Template::from_hex("ff 0000 {reason}", &spec).unwrap();
        let a = t.render(&Failure {
            id: None,
            key: None,
            reason: "abc",
        });
        assert_eq!(&a[..], &[0xff, 6, 0, b'a', b'b', b'c']);
    }

    #[test]
    fn bad_templates_say_why() {
        let d = demo_answers();
        assert!(Template::from_hex("0", &d).unwrap_err().contains("odd"));
        assert!(Template::from_hex("zz", &d)
            .unwrap_err()
            .contains("not hex"));
        assert!(Template::from_text("{nope}", &d)
            .unwrap_err()
            .contains("unknown placeholder `{nope}`"));
        assert!(Template::from_text("x {id", &d)
            .unwrap_err()
            .contains("does not close"));
    }

    #[test]
    fn redis_and_memcached_errors_are_one_line() {
        let f = Failure {
            id: None,
            key: None,
            reason: "backend b1 failed: closed\r\nx",
        };
        assert_eq!(
            ErrorReplier::Resp.answer(&f).unwrap(),
            Bytes::from_static(b"-ERR backend b1 failed: closed  x\r\n")
        );
        assert_eq!(
            ErrorReplier::Memcache
                .answer(&Failure {
                    reason: "no backend",
                    ..f
                })
                .unwrap(),
            Bytes::from_static(b"SERVER_ERROR no backend\r\n")
        );
    }
}
