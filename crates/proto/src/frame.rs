//! Frames, as every protocol reports them: a frame is `(len, id, key)`, the exact byte length
//! of one message at the head of a buffer plus where its correlation id and session key sit
//! inside it (offsets from the frame's first byte), so nothing is copied or allocated per
//! frame. Also the proxy's own ids, written into requests on shared backend connections
//! (`by_id`) and read back out of answers.

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
    #[inline]
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
    #[inline]
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
    /// The request's bytes, where the proxy still has them (kept while in flight for a
    /// protocol whose error answer repeats part of its request, such as DNS's question;
    /// the id field may hold the proxy's id, not the client's).
    pub request: Option<&'a [u8]>,
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
    /// What the message is in its exchange, where it is not the usual one-request,
    /// one-answer (a script's `mark`): [`Flags::NONE`] for the rest.
    pub flags: Flags,
}

/// What a frame is in its exchange, set per frame by the codec (a script's `mark`). With
/// none set, a frame from a client is a request awaiting one answer and a frame from a
/// backend is the one answer to a request (or a push).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Flags(pub u8);

impl Flags {
    /// Nothing special.
    pub const NONE: Flags = Flags(0);
    /// A request that gets no answer (SIP's ACK): forwarded, never waited on.
    pub const ONE_WAY: u8 = 1;
    /// An answer that does not end its request (SIP's 1xx): forwarded to the client that
    /// asked; the request keeps waiting for its final answer.
    pub const PROVISIONAL: u8 = 2;
    /// Ends its session: on a request, the session's pin is released at its final answer
    /// (a failed request ends nothing); on an answer, when it arrives; on a one-way
    /// message, once it is written to its backend.
    pub const ENDS_SESSION: u8 = 4;
    /// An answer, where the usual is a request: a client answering a request its server
    /// sent (SIP's 200 to a server's BYE). It goes to the server that holds the session.
    pub const ANSWER: u8 = 8;
    /// A request, where the usual is an answer: a backend asking something of the client
    /// that owns the session (SIP's server-sent BYE). Never matched to a request.
    pub const REQUEST: u8 = 16;
    /// Answered by the protocol itself, without a backend (a keep-alive, an OPTIONS ping):
    /// the script's `local_reply` makes the answer, or none.
    pub const LOCAL: u8 = 32;
    /// Consumed and forgotten (a keep-alive's pong).
    pub const DROP: u8 = 64;
    /// Every flag a frame may carry.
    pub const ALL: u8 = 127;

    /// Whether `flag` is set.
    #[inline]
    pub fn has(self, flag: u8) -> bool {
        self.0 & flag != 0
    }

    /// Whether the frame runs against its direction's usual role: a client's answer
    /// (`requests` true) or a backend's request.
    #[inline]
    pub fn reversed(self, requests: bool) -> bool {
        self.has(if requests {
            Self::ANSWER
        } else {
            Self::REQUEST
        })
    }
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

/// Reads a binary id field as an unsigned big-endian integer (at most 8 bytes), or parses a
/// text id as decimal. Returns `None` if the bytes are not an id the proxy could have written.
#[inline]
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
#[inline]
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
