//! What the proxy does with one request of a protocol it understands (RESP, memcache): send
//! it on as it is, answer it itself, or split it per key and merge the answers. Pure: the
//! downstream side carries the plan out.

use bytes::Bytes;

/// How the answers of a split request become one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// RESP arrays of one element each (MGET per key) → one array, in key order.
    Array,
    /// RESP integers (DEL, EXISTS, UNLINK, TOUCH per key) → their sum.
    SumIntegers,
    /// RESP `+OK`s (MSET per pair) → `+OK`, or the first error.
    AllOk,
    /// memcache `VALUE … END` blocks (get/gets per key) → the values in key order, one `END`.
    MemcacheValues,
}

/// One part of a split request: its bytes and where its key sits in them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The request to send.
    pub frame: Bytes,
    /// Offset and length of the key in `frame`.
    pub key: (usize, usize),
}

/// What to do with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Forward the frame as it is (balanced by its key, if it has one).
    Forward,
    /// Forward it, but no answer will come (memcache `noreply`).
    ForwardOneWay,
    /// Answer it from the proxy with these bytes.
    Reply(Bytes),
    /// Answer with these bytes, then close the connection (QUIT).
    ReplyAndClose(Bytes),
    /// Send each part to the backend of its key; merge the answers.
    Split(Vec<Part>, Merge),
}

/// Per-connection protocol state a plan may depend on.
#[derive(Debug, Clone, Default)]
pub struct ConnState {
    /// Whether the client has presented the listener's password (or none is required).
    pub authenticated: bool,
}

/// Merges the answers of a split request (one per part, in part order).
pub fn merge(kind: Merge, parts: &[Bytes]) -> Bytes {
    let mut out = Vec::new();
    match kind {
        Merge::Array => {
            out.extend_from_slice(format!("*{}\r\n", parts.len()).as_bytes());
            for p in parts {
                // Each part is "*1\r\n<element>"; an error answer is passed through as the element.
                match p.strip_prefix(b"*1\r\n") {
                    Some(elem) => out.extend_from_slice(elem),
                    None => out.extend_from_slice(p),
                }
            }
        }
        Merge::SumIntegers => {
            let mut sum = 0i64;
            for p in parts {
                if p.first() != Some(&b':') {
                    return p.clone(); // the first error wins
                }
                let n = std::str::from_utf8(&p[1..])
                    .ok()
                    .and_then(|s| s.trim_end().parse::<i64>().ok());
                sum += n.unwrap_or(0);
            }
            out.extend_from_slice(format!(":{sum}\r\n").as_bytes());
        }
        Merge::AllOk => {
            if let Some(err) = parts.iter().find(|p| p.first() != Some(&b'+')) {
                return err.clone();
            }
            out.extend_from_slice(b"+OK\r\n");
        }
        Merge::MemcacheValues => {
            for p in parts {
                match p.strip_suffix(b"END\r\n") {
                    Some(values) => out.extend_from_slice(values),
                    // An error line from one server: the client sees it alone.
                    None => return p.clone(),
                }
            }
            out.extend_from_slice(b"END\r\n");
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn merges() {
        assert_eq!(
            merge(Merge::Array, &[b("*1\r\n$1\r\na\r\n"), b("*1\r\n$-1\r\n")]),
            b("*2\r\n$1\r\na\r\n$-1\r\n")
        );
        assert_eq!(
            merge(Merge::SumIntegers, &[b(":1\r\n"), b(":0\r\n"), b(":1\r\n")]),
            b(":2\r\n")
        );
        assert_eq!(
            merge(Merge::SumIntegers, &[b(":1\r\n"), b("-ERR x\r\n")]),
            b("-ERR x\r\n")
        );
        assert_eq!(
            merge(Merge::AllOk, &[b("+OK\r\n"), b("+OK\r\n")]),
            b("+OK\r\n")
        );
        assert_eq!(
            merge(
                Merge::MemcacheValues,
                &[
                    b("VALUE a 0 1\r\nx\r\nEND\r\n"),
                    b("END\r\n"),
                    b("VALUE c 0 1\r\nz\r\nEND\r\n")
                ]
            ),
            b("VALUE a 0 1\r\nx\r\nVALUE c 0 1\r\nz\r\nEND\r\n")
        );
    }
}
