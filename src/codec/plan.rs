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
    /// Where the arguments after the command name start (RESP: the key's bulk-string
    /// header; memcache: the key).
    pub args_at: usize,
    /// How many arguments follow the command name.
    pub argc: usize,
}

impl Part {
    /// Where the part's key sits, as a frame key.
    pub fn key_span(&self) -> super::Key {
        super::Key::Bytes(super::Span {
            offset: self.key.0 as u32,
            len: self.key.1 as u32,
        })
    }
}

/// Joins parts bound for the same backend into one request of the same command, as
/// twemproxy sends one fragment per server: `MGET a b` + `MGET c` → `MGET a b c`,
/// `get a` + `get b` → `get a b`. The key of the result is the first part's.
pub fn join(kind: Merge, parts: &[&Part]) -> Part {
    let first = parts[0];
    let argc: usize = parts.iter().map(|p| p.argc).sum();
    let mut v = Vec::new();
    let args_at;
    if kind == Merge::MemcacheValues {
        // `cmd ` then the keys separated by spaces.
        v.extend_from_slice(&first.frame[..first.args_at]);
        args_at = v.len();
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                v.push(b' ');
            }
            v.extend_from_slice(&p.frame[p.key.0..p.key.0 + p.key.1]);
        }
        v.extend_from_slice(b"\r\n");
    } else {
        // `*N` anew, the command name's bulk string, then every part's arguments.
        let head = &first.frame[..first.args_at];
        let name_at = head.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
        v.extend_from_slice(format!("*{}\r\n", argc + 1).as_bytes());
        v.extend_from_slice(&head[name_at..]);
        args_at = v.len();
        for p in parts {
            v.extend_from_slice(&p.frame[p.args_at..]);
        }
    }
    Part {
        key: (args_at + first.key.0 - first.args_at, first.key.1),
        frame: v.into(),
        args_at,
        argc,
    }
}

/// Cuts the answer to a joined request (see [`join`]) into the answers each part would
/// have had on its own, so [`merge`] sees one answer per part. An answer that does not
/// have the expected shape (an error) is given to every part.
pub fn unjoin(kind: Merge, answer: &[u8], parts: &[&Part]) -> Vec<Bytes> {
    let all = || vec![Bytes::copy_from_slice(answer); parts.len()];
    match kind {
        Merge::Array => {
            // `*N` then N elements, `argc` of them per part.
            let Some(nl) = answer.iter().position(|&b| b == b'\n') else {
                return all();
            };
            let want: usize = parts.iter().map(|p| p.argc).sum();
            if answer.first() != Some(&b'*')
                || answer.get(1..nl.saturating_sub(1)) != Some(want.to_string().as_bytes())
            {
                return all();
            }
            let mut at = nl + 1;
            let mut out = Vec::with_capacity(parts.len());
            for p in parts {
                let start = at;
                for _ in 0..p.argc {
                    match super::resp::value_len(&answer[at..], usize::MAX) {
                        Ok(Some(n)) => at += n,
                        _ => return all(),
                    }
                }
                let mut one = format!("*{}\r\n", p.argc).into_bytes();
                one.extend_from_slice(&answer[start..at]);
                out.push(one.into());
            }
            out
        }
        Merge::SumIntegers if answer.first() == Some(&b':') => {
            // The total goes to the first part; the sum is the same.
            let mut out = vec![Bytes::from_static(b":0\r\n"); parts.len()];
            out[0] = Bytes::copy_from_slice(answer);
            out
        }
        Merge::SumIntegers | Merge::AllOk => all(),
        Merge::MemcacheValues => {
            // `VALUE key flags bytes [cas]` blocks in request order (misses left out), then
            // `END`: each block goes to the next part with its key.
            let mut out = vec![Bytes::from_static(b"END\r\n"); parts.len()];
            let mut next = 0;
            let mut at = 0;
            loop {
                let rest = &answer[at..];
                if rest == b"END\r\n" {
                    return out;
                }
                if !rest.starts_with(b"VALUE ") {
                    return all();
                }
                let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                    return all();
                };
                let line = rest[..nl].strip_suffix(b"\r").unwrap_or(&rest[..nl]);
                let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
                let (Some(key), Some(len)) = (words.nth(1), words.nth(1)) else {
                    return all();
                };
                let Some(len) = std::str::from_utf8(len)
                    .ok()
                    .and_then(|l| l.parse::<usize>().ok())
                else {
                    return all();
                };
                let end = (nl + 3).saturating_add(len);
                if rest.len() < end {
                    return all();
                }
                let Some(i) = (next..parts.len()).find(|&i| {
                    &parts[i].frame[parts[i].key.0..parts[i].key.0 + parts[i].key.1] == key
                }) else {
                    return all();
                };
                let mut one = rest[..end].to_vec();
                one.extend_from_slice(b"END\r\n");
                out[i] = one.into();
                next = i + 1;
                at += end;
            }
        }
    }
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
    /// Nothing to do and nothing to answer (Redis ignores an empty command line).
    Ignore,
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
            // A part that failed (its server down, an error answer): the whole command is
            // answered with that error, as twemproxy does; an array with error elements in
            // it would read as values to most clients (redis-py does not raise on them).
            if let Some(err) = parts.iter().find(|p| p.first() == Some(&b'-')) {
                return err.clone();
            }
            out.extend_from_slice(format!("*{}\r\n", parts.len()).as_bytes());
            for p in parts {
                // Each part is "*1\r\n<element>".
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

    fn resp_part(name: &str, args: &[&str]) -> Part {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        crate::codec::resp::build(name.as_bytes(), &args)
    }

    fn mc_part(cmd: &str, key: &str) -> Part {
        let at = cmd.len() + 1;
        Part {
            frame: Bytes::from(format!("{cmd} {key}\r\n")),
            key: (at, key.len()),
            args_at: at,
            argc: 1,
        }
    }

    #[test]
    fn joins_parts_into_one_request_of_the_same_command() {
        let (a, bb) = (resp_part("MGET", &["a"]), resp_part("MGET", &["bb"]));
        let j = join(Merge::Array, &[&a, &bb]);
        assert_eq!(j.frame, b("*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$2\r\nbb\r\n"));
        assert_eq!(&j.frame[j.key.0..j.key.0 + j.key.1], b"a");
        assert_eq!(j.argc, 2);
        // Joined twice (a group of groups) is still one command.
        let c = resp_part("MGET", &["c"]);
        let jj = join(Merge::Array, &[&j, &c]);
        assert_eq!(
            jj.frame,
            b("*4\r\n$4\r\nMGET\r\n$1\r\na\r\n$2\r\nbb\r\n$1\r\nc\r\n")
        );
        let (k1, k2) = (
            resp_part("MSET", &["k1", "v1"]),
            resp_part("MSET", &["k2", "v2"]),
        );
        let m = join(Merge::AllOk, &[&k1, &k2]);
        assert_eq!(
            m.frame,
            b("*5\r\n$4\r\nMSET\r\n$2\r\nk1\r\n$2\r\nv1\r\n$2\r\nk2\r\n$2\r\nv2\r\n")
        );
        assert_eq!(&m.frame[m.key.0..m.key.0 + m.key.1], b"k1");
        let (g1, g2) = (mc_part("gets", "x"), mc_part("gets", "yy"));
        let g = join(Merge::MemcacheValues, &[&g1, &g2]);
        assert_eq!(g.frame, b("gets x yy\r\n"));
        assert_eq!(&g.frame[g.key.0..g.key.0 + g.key.1], b"x");
    }

    #[test]
    fn unjoins_answers_per_part() {
        let (a, b2, c) = (
            resp_part("MGET", &["a"]),
            resp_part("MGET", &["b"]),
            resp_part("MGET", &["c"]),
        );
        let parts = [&a, &b2, &c];
        assert_eq!(
            unjoin(
                Merge::Array,
                b"*3\r\n$1\r\nx\r\n$-1\r\n$2\r\nzz\r\n",
                &parts
            ),
            vec![
                b("*1\r\n$1\r\nx\r\n"),
                b("*1\r\n$-1\r\n"),
                b("*1\r\n$2\r\nzz\r\n")
            ]
        );
        // Not the expected array: every part gets it (an error is passed through).
        assert_eq!(
            unjoin(Merge::Array, b"-ERR x\r\n", &parts),
            vec![b("-ERR x\r\n"); 3]
        );
        assert_eq!(unjoin(Merge::Array, b"*\n", &parts), vec![b("*\n"); 3]);
        assert_eq!(
            unjoin(Merge::Array, b"*2\r\n:1\r\n:2\r\n", &parts),
            vec![b("*2\r\n:1\r\n:2\r\n"); 3]
        );
        assert_eq!(
            unjoin(Merge::SumIntegers, b":2\r\n", &parts),
            vec![b(":2\r\n"), b(":0\r\n"), b(":0\r\n")]
        );
        assert_eq!(
            unjoin(Merge::AllOk, b"+OK\r\n", &parts[..2]),
            vec![b("+OK\r\n"); 2]
        );
        let (x, y, z) = (
            mc_part("get", "x"),
            mc_part("get", "y"),
            mc_part("get", "z"),
        );
        let mc = [&x, &y, &z];
        assert_eq!(
            unjoin(
                Merge::MemcacheValues,
                b"VALUE x 0 1\r\n1\r\nVALUE z 5 2 77\r\nab\r\nEND\r\n",
                &mc
            ),
            vec![
                b("VALUE x 0 1\r\n1\r\nEND\r\n"),
                b("END\r\n"),
                b("VALUE z 5 2 77\r\nab\r\nEND\r\n")
            ]
        );
        // A byte count past the answer's end (even usize::MAX) leaves it whole.
        let huge = b"VALUE x 0 18446744073709551615\r\n1\r\nEND\r\n";
        assert_eq!(
            unjoin(Merge::MemcacheValues, huge, &mc),
            vec![Bytes::from_static(huge); 3]
        );
        assert_eq!(
            unjoin(Merge::MemcacheValues, b"END\r\n", &mc),
            vec![b("END\r\n"); 3]
        );
        assert_eq!(
            unjoin(
                Merge::MemcacheValues,
                b"SERVER_ERROR out of memory\r\n",
                &mc
            ),
            vec![b("SERVER_ERROR out of memory\r\n"); 3]
        );
        // Joined then unjoined then merged = the answer per key, merged.
        let merged = merge(
            Merge::MemcacheValues,
            &unjoin(Merge::MemcacheValues, b"VALUE y 0 1\r\nq\r\nEND\r\n", &mc),
        );
        assert_eq!(merged, b("VALUE y 0 1\r\nq\r\nEND\r\n"));
    }

    #[test]
    fn merges() {
        assert_eq!(
            merge(Merge::Array, &[b("*1\r\n$1\r\na\r\n"), b("*1\r\n$-1\r\n")]),
            b("*2\r\n$1\r\na\r\n$-1\r\n")
        );
        // One part failed: one error for the command, not an array holding it.
        assert_eq!(
            merge(
                Merge::Array,
                &[
                    b("*1\r\n$1\r\na\r\n"),
                    b("-ERR backend b2 failed: x\r\n"),
                    b("-ERR y\r\n")
                ]
            ),
            b("-ERR backend b2 failed: x\r\n")
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
