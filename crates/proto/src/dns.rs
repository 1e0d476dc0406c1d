//! `dns`: DNS over TCP (RFC 1035 §4.2.2, RFC 7766). Every message is a 2-byte big-endian
//! length and the message; the 16-bit id after the length is the correlation id, which the
//! proxy rewrites on shared backend connections (servers may answer pipelined queries out
//! of order, so `by_id` is the only correlation). Queries are checked before any server
//! sees them: at least a header, QR clear, opcode QUERY, exactly one well-formed question.
//! The session key is optionally the question's name, case-folded and hashed, so that a
//! key-hashing policy keeps each name on one server and in its cache. A failed query is
//! answered SERVFAIL with the client's id and question. Everything else in a message (EDNS,
//! the TCP keep-alive option of RFC 7828) passes through untouched.

use crate::error::{CodecError, Invalid};
use crate::frame::{Failure, Flags, Frame, FrameSet, IdFormat, Key, Span};
use crate::protocol::{Capabilities, Correlation, Direction, Framer, Protocol};
use bytes::Bytes;

/// The DNS header's length.
const HEADER: usize = 12;
/// Where the id sits in a frame: right after the 2-byte length.
const ID: Span = Span { offset: 2, len: 2 };
/// A name's longest wire form (RFC 1035 §2.3.4).
const MAX_NAME: usize = 255;
/// The SERVFAIL response code.
const SERVFAIL: u8 = 2;

/// The codec table of `kind = "dns"`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `"qname"`: the session key is the question's name.
    key: Option<String>,
}

impl Config {
    /// Validates the table; errors name the key within it.
    pub fn protocol(&self) -> Result<DnsProtocol, Invalid> {
        let key_qname = match self.key.as_deref() {
            None => false,
            Some("qname") => true,
            Some(o) => {
                return Err((
                    "key".into(),
                    format!("must be \"qname\" (the question's name), got {o:?}"),
                ))
            }
        };
        Ok(DnsProtocol { key_qname })
    }
}

/// DNS over TCP.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DnsProtocol {
    key_qname: bool,
}

impl Protocol for DnsProtocol {
    fn kind(&self) -> &'static str {
        "dns"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            keys: self.key_qname,
            ids: true,
            id_format: IdFormat::Binary,
            id_width: 2,
            interprets: false,
            correlation: Some(Correlation::ById),
        }
    }

    /// Servers answer pipelined queries in any order: only ids can match them.
    fn fixed_correlation(&self) -> Option<Correlation> {
        Some(Correlation::ById)
    }

    fn framer(&self, d: Direction, max_frame: usize) -> Result<Box<dyn Framer>, CodecError> {
        Ok(Box::new(Dns {
            queries: d == Direction::Requests,
            key_qname: self.key_qname && d == Direction::Requests,
            max_frame,
        }))
    }

    /// SERVFAIL, with the client's id, the query's opcode and RD and CD bits, and its
    /// question (when the proxy still has the query; otherwise no question).
    fn error_answer(&self, f: &Failure<'_>) -> Result<Option<Bytes>, String> {
        Ok(Some(servfail(f.id, f.request)))
    }

    fn error_answer_needs_request(&self) -> bool {
        true
    }

    /// Queries are safe to repeat: the header check lets only opcode QUERY through.
    fn retries_by_default(&self) -> bool {
        true
    }
}

/// One connection's framer.
struct Dns {
    /// Client → server: every message is checked as a query.
    queries: bool,
    key_qname: bool,
    max_frame: usize,
}

impl Framer for Dns {
    fn scan(&mut self, buf: &[u8], out: &mut FrameSet) -> Result<(), CodecError> {
        let mut pos = 0;
        while buf.len() - pos >= 2 {
            let rest = &buf[pos..];
            let len = 2 + usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            if len > self.max_frame {
                return Err(CodecError::TooLarge {
                    len: len as u64,
                    max: self.max_frame as u64,
                });
            }
            if len < 2 + HEADER {
                return Err(CodecError::Malformed(format!(
                    "a DNS message of {} bytes is shorter than its 12-byte header",
                    len - 2
                )));
            }
            if rest.len() < len {
                break;
            }
            let msg = &rest[2..len];
            let key = if self.queries {
                let question = check_query(msg)?;
                self.key_qname
                    .then(|| Key::Int(name_hash(&msg[HEADER..question])))
            } else {
                None
            };
            out.push(Frame {
                len: len as u32,
                id: Some(ID),
                key,
                flags: Flags::NONE,
            });
            pos += len;
        }
        Ok(())
    }
}

/// Checks that `msg` (without its length) is a standard query with one question; returns
/// where the question's name ends.
fn check_query(msg: &[u8]) -> Result<usize, CodecError> {
    let bad = |why: String| Err(CodecError::Malformed(why));
    let flags = msg[2];
    if flags & 0x80 != 0 {
        return bad("a DNS message from a client has its QR (response) bit set".into());
    }
    let opcode = (flags >> 3) & 0x0f;
    if opcode != 0 {
        return bad(format!(
            "DNS opcode {opcode} is not QUERY (0): only queries are balanced"
        ));
    }
    let qdcount = u16::from_be_bytes([msg[4], msg[5]]);
    if qdcount != 1 {
        return bad(format!(
            "a DNS query must have exactly one question, this one has {qdcount}"
        ));
    }
    let name_end = name_end(msg, HEADER)?;
    if msg.len() < name_end + 4 {
        return bad("the DNS question ends before its type and class".into());
    }
    Ok(name_end)
}

/// Where the uncompressed name starting at `at` ends (after its root label).
fn name_end(msg: &[u8], at: usize) -> Result<usize, CodecError> {
    let bad = |why: &str| {
        Err(CodecError::Malformed(format!(
            "the DNS question's name {why}"
        )))
    };
    let mut i = at;
    loop {
        let Some(&len) = msg.get(i) else {
            return bad("runs past the end of the message");
        };
        if len & 0xc0 != 0 {
            // A compression pointer has nothing to point at in a query's first name.
            return bad("is compressed or has a label type other than a plain label");
        }
        i += 1 + usize::from(len);
        if i - at > MAX_NAME {
            return bad("is longer than 255 bytes");
        }
        if len == 0 {
            return Ok(i);
        }
    }
}

/// The session key of a name in wire form: FNV-1a 64 of its bytes with ASCII letters made
/// lower-case (DNS names compare case-insensitively), so `WWW.Example.` and `www.example.`
/// are one key on every instance and version.
fn name_hash(name: &[u8]) -> u64 {
    name.iter().fold(0xcbf2_9ce4_8422_2325, |h: u64, b| {
        (h ^ u64::from(b.to_ascii_lowercase())).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A SERVFAIL answer (with its 2-byte length) to the query `request` (as the proxy kept it,
/// with its length), carrying the client's `id`.
fn servfail(id: Option<&[u8]>, request: Option<&[u8]>) -> Bytes {
    let msg = request
        .and_then(|r| r.get(2..))
        .filter(|m| m.len() >= HEADER);
    let question = msg.and_then(|m| {
        let end = check_query(m).ok()?;
        Some(&m[HEADER..end + 4])
    });
    let id = match (id, msg) {
        (Some(id), _) if id.len() == 2 => [id[0], id[1]],
        (_, Some(m)) => [m[0], m[1]],
        _ => [0, 0],
    };
    // QR, the query's opcode and RD; CD kept; RCODE SERVFAIL.
    let (f1, f2) = msg.map_or((0, 0), |m| (m[2], m[3]));
    let flags = [0x80 | (f1 & 0x79), (f2 & 0x10) | SERVFAIL];
    let qdcount = u16::from(question.is_some()).to_be_bytes();
    let body = HEADER + question.map_or(0, <[u8]>::len);
    let mut out = Vec::with_capacity(2 + body);
    out.extend_from_slice(&(body as u16).to_be_bytes());
    out.extend_from_slice(&id);
    out.extend_from_slice(&flags);
    out.extend_from_slice(&qdcount);
    out.extend_from_slice(&[0; 6]);
    if let Some(q) = question {
        out.extend_from_slice(q);
    }
    out.into()
}

/// A query for `name` (dotted, e.g. `www.example.test`) of type `qtype`, with its 2-byte
/// length: for tests, benchmarks and health probes.
pub fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut m = Vec::with_capacity(32 + name.len());
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.split('.').filter(|l| !l.is_empty()) {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes()); // IN
    let mut framed = (m.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&m);
    framed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::props::frames_by_reads;

    fn framer(d: Direction, key: bool) -> Box<dyn Framer> {
        DnsProtocol { key_qname: key }.framer(d, 1 << 20).unwrap()
    }

    fn scan(d: Direction, buf: &[u8]) -> Result<Vec<Frame>, CodecError> {
        let mut out = Vec::new();
        framer(d, true).scan(buf, &mut out).map(|()| out)
    }

    #[test]
    fn pipelined_queries_with_ids_and_case_folded_name_keys() {
        let mut s = query(7, "www.example.test", 1);
        s.extend_from_slice(&query(8, "WWW.Example.TEST", 28));
        s.extend_from_slice(&query(9, "other.test", 1)[..10]);
        let f = scan(Direction::Requests, &s).unwrap();
        assert_eq!(f.len(), 2, "the third is incomplete");
        assert_eq!(f[0].id, Some(ID));
        assert_eq!(f[0].len as usize, query(7, "www.example.test", 1).len());
        assert_eq!(f[0].key, f[1].key, "names compare case-insensitively");
        assert_ne!(
            f[0].key,
            scan(Direction::Requests, &query(1, "other.test", 1)).unwrap()[0].key
        );
        let plain = DnsProtocol::default();
        let mut out = Vec::new();
        plain
            .framer(Direction::Requests, 1024)
            .unwrap()
            .scan(&s, &mut out)
            .unwrap();
        assert_eq!(out[0].key, None, "no key unless key = \"qname\"");
    }

    #[test]
    fn queries_that_a_server_would_close_on_are_refused() {
        let q = query(7, "www.example.test", 1);
        let refused = |m: Vec<u8>| scan(Direction::Requests, &m).unwrap_err().to_string();
        // Short: known from the length alone.
        assert!(refused(vec![0, 4, 1, 2]).contains("shorter than its 12-byte header"));
        let mut qr = q.clone();
        qr[4] |= 0x80;
        assert!(refused(qr.clone()).contains("QR (response) bit"));
        let mut update = q.clone();
        update[4] = 0x28;
        assert!(refused(update).contains("opcode 5"));
        let mut two = q.clone();
        two[7] = 2;
        assert!(refused(two).contains("exactly one question"));
        let mut pointer = q.clone();
        pointer[14] = 0xc0;
        assert!(refused(pointer).contains("compressed"));
        let mut cut = q[..q.len() - 3].to_vec();
        cut[1] -= 3;
        assert!(refused(cut).contains("type and class"));
        // The good query before a bad one is still reported.
        let mut s = q.clone();
        s.extend_from_slice(&qr);
        let mut out = Vec::new();
        assert!(framer(Direction::Requests, false)
            .scan(&s, &mut out)
            .is_err());
        assert_eq!(out.len(), 1);
        // Answers are only framed: QR set is what they are.
        assert_eq!(scan(Direction::Answers, &qr).unwrap().len(), 1);
        assert!(scan(Direction::Answers, &[0, 3, 1, 2, 3]).is_err());
    }

    #[test]
    fn oversized_messages_are_refused_from_their_length() {
        let mut out = Vec::new();
        let e = DnsProtocol::default()
            .framer(Direction::Requests, 100)
            .unwrap()
            .scan(&[0xff, 0xff], &mut out)
            .unwrap_err();
        assert!(matches!(
            e,
            CodecError::TooLarge {
                len: 65537,
                max: 100
            }
        ));
    }

    #[test]
    fn servfail_carries_the_clients_id_and_the_question() {
        let q = query(0x1234, "www.example.test", 28);
        // The proxy's id is in the kept request; the client's comes separately.
        let a = servfail(Some(&[0xab, 0xcd]), Some(&q));
        let f = scan(Direction::Answers, &a).unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].len as usize, a.len());
        assert_eq!(&a[2..4], &[0xab, 0xcd]);
        assert_eq!(a[4], 0x81, "QR and RD");
        assert_eq!(a[5] & 0x0f, SERVFAIL);
        assert_eq!(&a[6..8], &[0, 1]);
        assert_eq!(&a[14..], &q[14..], "the question, type and class");
        // Without the request: the header alone.
        let bare = servfail(Some(&[0, 9]), None);
        assert_eq!(
            &bare[..],
            &[0, 12, 0, 9, 0x80, SERVFAIL, 0, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn bad_key_setting_is_named() {
        let c: Config = toml::from_str("key = \"qtype\"").unwrap();
        assert_eq!(c.protocol().unwrap_err().0, "key");
    }

    proptest::proptest! {
        #[test]
        fn frames_do_not_depend_on_read_boundaries(
            names in proptest::collection::vec("[a-z]{1,12}(\\.[a-z]{1,12}){0,3}", 1..12),
            cuts in proptest::collection::vec(0usize..4096, 0..8),
        ) {
            let mut s = Vec::new();
            for (i, n) in names.iter().enumerate() {
                s.extend_from_slice(&query(i as u16, n, 1));
            }
            let whole = frames_by_reads(&mut *framer(Direction::Requests, true), &s, &[]);
            let cut = frames_by_reads(&mut *framer(Direction::Requests, true), &s, &cuts);
            proptest::prop_assert_eq!(whole.len(), names.len());
            proptest::prop_assert_eq!(whole, cut);
        }
    }
}
