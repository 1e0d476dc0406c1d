//! Operators' error answers for the generic codecs (`error_reply` / `error_reply_hex` on a
//! listener): bytes with `{id}`, `{key}` and `{reason}` put in, framed for the listener's
//! response codec, so a failed request is answered in its place and its client stays
//! connected. A [`Templated`] protocol is the listener's protocol with the template as its
//! error answer; [`check`] tries the template when the config is loaded.

use crate::error::CodecError;
use crate::frame::{Failure, FrameSet, IdFormat};
use crate::length_field::LengthFieldSpec;
use crate::protocol::{
    BackendSetup, Capabilities, ConnState, Correlation, Direction, Framer, HandshakeStep, Merge,
    Oversize, Part, Plan, Protocol,
};
use bytes::Bytes;
use std::sync::Arc;

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Bytes(Vec<u8>),
    Id,
    Key,
    Reason,
}

/// What the answer's framing needs after the pieces are put together (from the listener's
/// response codec).
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
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
    /// A template written as text (`error_reply`), for answers finished by `finish`.
    pub fn from_text(text: &str, finish: Finish) -> Result<Template, String> {
        let mut pieces = Vec::new();
        for (literal, placeholder) in split_placeholders(text)? {
            if !literal.is_empty() {
                pieces.push(Piece::Bytes(literal.as_bytes().to_vec()));
            }
            pieces.extend(placeholder);
        }
        Ok(Template { pieces, finish })
    }

    /// A template written as hex digits with placeholders between them (`error_reply_hex`),
    /// e.g. `"00000000 {key} {id} 03 455252 {reason}"`; spaces are ignored.
    pub fn from_hex(text: &str, finish: Finish) -> Result<Template, String> {
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
        Ok(Template { pieces, finish })
    }

    /// Whether the answer names the request's key (so it must be kept while in flight).
    pub fn uses_key(&self) -> bool {
        self.pieces.contains(&Piece::Key)
    }

    /// Whether the answer carries the client's id.
    pub fn uses_id(&self) -> bool {
        self.pieces.contains(&Piece::Id)
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
        crate::length_field::Endian::Big => field.copy_from_slice(bytes),
        crate::length_field::Endian::Little => {
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

/// A protocol whose failed requests are answered by an operator's template; everything
/// else is the inner protocol's.
#[derive(Debug)]
pub struct Templated {
    inner: Arc<dyn Protocol>,
    template: Template,
}

impl Templated {
    /// `inner`, answering failures with `template`.
    pub fn new(inner: Arc<dyn Protocol>, template: Template) -> Self {
        Templated { inner, template }
    }
}

impl Protocol for Templated {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn fixed_correlation(&self) -> Option<Correlation> {
        self.inner.fixed_correlation()
    }
    fn framer(&self, d: Direction, max: usize) -> Result<Box<dyn Framer>, CodecError> {
        self.inner.framer(d, max)
    }
    fn plan(&self, frame: &[u8], state: &mut ConnState) -> Plan {
        self.inner.plan(frame, state)
    }
    fn join(&self, m: Merge, parts: &[&Part]) -> Part {
        self.inner.join(m, parts)
    }
    fn unjoin(&self, m: Merge, answer: &[u8], parts: &[&Part]) -> Vec<Bytes> {
        self.inner.unjoin(m, answer, parts)
    }
    fn merge(&self, m: Merge, answers: &[Bytes]) -> Bytes {
        self.inner.merge(m, answers)
    }
    fn handshake(&self, setup: &BackendSetup) -> Vec<HandshakeStep> {
        self.inner.handshake(setup)
    }
    fn error_answer(&self, f: &Failure<'_>) -> Result<Option<Bytes>, String> {
        Ok(Some(self.template.render(f)))
    }
    fn error_answer_needs_key(&self) -> bool {
        self.template.uses_key()
    }
    fn error_answer_needs_id(&self) -> bool {
        self.template.uses_id()
    }
    fn retries_by_default(&self) -> bool {
        self.inner.retries_by_default()
    }

    fn oversize_answer(&self, e: &CodecError) -> Option<Oversize> {
        self.inner.oversize_answer(e)
    }
}

/// Tries `template` as the config is loaded: its answer to a sample failure must be exactly
/// one frame of `answers` and, under `by_id`, carry the client's id where that protocol
/// finds ids. `requests` says what the sample's id and key look like.
pub fn check(
    template: &Template,
    requests: &Capabilities,
    key_width: Option<usize>,
    answers: &dyn Protocol,
    by_id: bool,
    max_frame: usize,
) -> Result<(), String> {
    let id: Vec<u8> = match requests.id_format {
        IdFormat::Binary => (0..requests.id_width).map(|i| 0xa0 + i as u8).collect(),
        IdFormat::Text => b"4242".to_vec(),
    };
    let key = key_width.map_or_else(|| b"k".to_vec(), |w| vec![b'k'; w]);
    let sample = template.render(&Failure {
        id: Some(&id),
        key: Some(&key),
        reason: "backend b1 failed: connection reset",
        request: None,
    });
    let bad = |why: String| format!("the answer it makes ({sample:?}) {why}");
    let mut framer = answers
        .framer(Direction::Answers, max_frame)
        .map_err(|e| bad(format!("cannot be checked: {e}")))?;
    let mut frames = FrameSet::new();
    framer
        .scan(&sample, &mut frames)
        .map_err(|e| bad(format!("is refused by the response codec: {e}")))?;
    match frames.as_slice() {
        [f] if f.len as usize == sample.len() => {
            if by_id && f.id.map(|s| s.slice(&sample)) != Some(&id) {
                return Err(bad(
                    "does not carry the client's id where the response codec finds ids".into(),
                ));
            }
            Ok(())
        }
        _ => Err(bad(format!(
            "is not one whole answer of the response codec ({} frames)",
            frames.len()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::length_field::Endian;

    fn demo_answers() -> Finish {
        Finish::Length(crate::length_field::demo_spec())
    }

    #[test]
    fn a_binary_template_gets_its_length_id_and_key() {
        let t =
            Template::from_hex("00000000 {key} {id} 03 455252 {reason}", demo_answers()).unwrap();
        let a = t.render(&Failure {
            id: Some(&[0, 0, 0, 9]),
            key: Some(&[1, 2, 3, 4, 5, 6, 7, 8]),
            reason: "gone",
            request: None,
        });
        let mut want = vec![0, 0, 0, 20, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 9, 3];
        want.extend_from_slice(b"ERRgone");
        assert_eq!(&a[..], &want[..]);
    }

    #[test]
    fn a_text_template_is_one_line() {
        let t =
            Template::from_text("{id} ERR {reason}", Finish::Delimiter(b"\r\n".to_vec())).unwrap();
        let a = t.render(&Failure {
            id: Some(b"77"),
            key: None,
            reason: "backend b1 failed:\r\nclosed",
            request: None,
        });
        assert_eq!(&a[..], b"77 ERR backend b1 failed:  closed\r\n");
        assert!(!t.uses_key());
    }

    #[test]
    fn little_endian_whole_frame_lengths() {
        let spec = Finish::Length(LengthFieldSpec {
            length_offset: 1,
            length_width: 2,
            endian: Endian::Little,
            length_adjust: -3,
            key: None,
            id: None,
        });
        let t = Template::from_hex("ff 0000 {reason}", spec).unwrap();
        let a = t.render(&Failure {
            id: None,
            key: None,
            reason: "abc",
            request: None,
        });
        assert_eq!(&a[..], &[0xff, 6, 0, b'a', b'b', b'c']);
    }

    #[test]
    fn bad_templates_say_why() {
        let d = demo_answers();
        assert!(Template::from_hex("0", d.clone())
            .unwrap_err()
            .contains("odd"));
        assert!(Template::from_hex("zz", d.clone())
            .unwrap_err()
            .contains("not hex"));
        assert!(Template::from_text("{nope}", d.clone())
            .unwrap_err()
            .contains("unknown placeholder `{nope}`"));
        assert!(Template::from_text("x {id", d)
            .unwrap_err()
            .contains("does not close"));
    }
}
