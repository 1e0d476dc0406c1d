//! `delimiter`: line protocols. A frame is everything up to and including the delimiter
//! (`"\n"`, `"\r\n"`, or any other byte string). The key and the id are optional 0-based
//! tokens of the line, split on spaces and tabs.

use crate::error::CodecError;
use crate::error::Invalid;
use crate::frame::{Flags, Frame, FrameSet, IdFormat, Key, Span};
use crate::protocol::{Capabilities, Direction, Framer, Protocol};

/// The codec table of `kind = "delimiter"`, as written in the config file.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    delimiter: Option<String>,
    key_token: Option<usize>,
    id_token: Option<usize>,
}

impl Config {
    /// The validated spec; errors name the key within the codec table.
    pub fn spec(&self) -> Result<DelimiterSpec, Invalid> {
        let delimiter = self.delimiter.clone().unwrap_or_else(|| "\n".into());
        if delimiter.is_empty() {
            return Err(("delimiter".into(), "must not be empty".into()));
        }
        Ok(DelimiterSpec {
            delimiter: delimiter.into_bytes(),
            key_token: self.key_token,
            id_token: self.id_token,
        })
    }
}

/// The `delimiter` protocol: the same framing both ways; ids are text.
#[derive(Debug, Clone, PartialEq)]
pub struct DelimiterProtocol {
    spec: DelimiterSpec,
}

impl DelimiterProtocol {
    /// The protocol of `spec`.
    pub fn new(spec: DelimiterSpec) -> Self {
        DelimiterProtocol { spec }
    }

    /// Its validated settings.
    pub fn spec(&self) -> &DelimiterSpec {
        &self.spec
    }
}

impl Protocol for DelimiterProtocol {
    fn kind(&self) -> &'static str {
        "delimiter"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            keys: self.spec.key_token.is_some(),
            ids: self.spec.id_token.is_some(),
            id_format: IdFormat::Text,
            id_width: 8,
            interprets: false,
            correlation: None,
        }
    }

    fn framer(&self, _: Direction, max_frame: usize) -> Result<Box<dyn Framer>, CodecError> {
        Ok(Box::new(Delimiter::new(self.spec.clone(), max_frame)))
    }
}

/// Validated `delimiter` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DelimiterSpec {
    /// The end-of-frame marker; never empty.
    pub delimiter: Vec<u8>,
    /// Which whitespace-separated token is the session key.
    pub key_token: Option<usize>,
    /// Which whitespace-separated token is the correlation id.
    pub id_token: Option<usize>,
}

/// The `delimiter` framer.
#[derive(Debug, Clone)]
pub struct Delimiter {
    spec: DelimiterSpec,
    finder: memchr::memmem::Finder<'static>,
    max_frame: usize,
    /// Bytes at the head of the buffer already searched without finding a delimiter, so a
    /// slowly growing line is not searched from its start on every read.
    searched: usize,
}

impl Delimiter {
    /// A codec for `spec`, refusing lines over `max_frame` bytes.
    pub fn new(spec: DelimiterSpec, max_frame: usize) -> Self {
        let finder = memchr::memmem::Finder::new(&spec.delimiter).into_owned();
        Delimiter {
            spec,
            finder,
            max_frame,
            searched: 0,
        }
    }
}

/// The span of the `n`th token of `line`, tokens separated by runs of spaces or tabs.
fn token(line: &[u8], n: usize) -> Option<Span> {
    line.split(|b| *b == b' ' || *b == b'\t')
        .scan(0usize, |pos, tok| {
            let start = *pos;
            *pos += tok.len() + 1;
            Some((start, tok.len()))
        })
        .filter(|(_, len)| *len > 0)
        .nth(n)
        .map(|(offset, len)| Span {
            offset: offset as u32,
            len: len as u32,
        })
}

impl Framer for Delimiter {
    fn scan(&mut self, buf: &[u8], out: &mut FrameSet) -> Result<(), CodecError> {
        let dlen = self.spec.delimiter.len();
        let mut pos = 0usize;
        loop {
            let rest = &buf[pos..];
            // Resume the search where the last call stopped (minus a delimiter's overlap).
            let from = if pos == 0 {
                self.searched.saturating_sub(dlen - 1).min(rest.len())
            } else {
                0
            };
            let Some(at) = self.finder.find(&rest[from..]).map(|i| i + from) else {
                // With the delimiter still to come, the frame would be longer than `rest`.
                if rest.len() >= self.max_frame {
                    return Err(CodecError::TooLarge {
                        len: rest.len() as u64,
                        max: self.max_frame as u64,
                    });
                }
                // Only a scan that found nothing leaves the caller's buffer head unchanged.
                self.searched = if pos == 0 { rest.len() } else { 0 };
                return Ok(());
            };
            let len = at + dlen;
            if len > self.max_frame {
                return Err(CodecError::TooLarge {
                    len: len as u64,
                    max: self.max_frame as u64,
                });
            }
            let line = &rest[..at];
            out.push(Frame {
                len: len as u32,
                id: self.spec.id_token.and_then(|n| token(line, n)),
                key: self
                    .spec
                    .key_token
                    .and_then(|n| token(line, n))
                    .map(Key::Bytes),
                flags: Flags::NONE,
            });
            pos += len;
            self.searched = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(delim: &str) -> Delimiter {
        Delimiter::new(
            DelimiterSpec {
                delimiter: delim.as_bytes().to_vec(),
                key_token: Some(1),
                id_token: Some(0),
            },
            64,
        )
    }

    #[test]
    fn crlf_lines_with_tokens() {
        let mut c = codec("\r\n");
        let buf = b"17 alice  hello\r\n18\tbob\r\npartial";
        let mut out = Vec::new();
        c.scan(buf, &mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].len, 17);
        assert_eq!(out[0].id.unwrap().slice(buf), b"17");
        assert_eq!(out[0].key.unwrap().display(buf), "alice");
        let second = &buf[17..];
        assert_eq!(out[1].key.unwrap().display(second), "bob");
    }

    #[test]
    fn missing_tokens_are_none() {
        let mut c = codec("\n");
        let mut out = Vec::new();
        c.scan(b"only\n\n", &mut out).unwrap();
        assert_eq!(out[0].key, None);
        assert_eq!(out[1].id, None);
    }

    #[test]
    fn delimiter_split_across_reads() {
        let mut c = codec("\r\n");
        let mut out = Vec::new();
        c.scan(b"1 a\r", &mut out).unwrap();
        assert!(out.is_empty());
        c.scan(b"1 a\r\n", &mut out).unwrap();
        assert_eq!(out[0].len, 5);
    }

    #[test]
    fn overlong_line_is_refused() {
        let mut c = codec("\n");
        let mut out = Vec::new();
        assert!(matches!(
            c.scan(&[b'x'; 65], &mut out),
            Err(CodecError::TooLarge { .. })
        ));
    }
}
