//! Multi-key Redis commands split per backend: the parts bound for one backend joined into
//! one command (`MGET a c`), its answer cut back per key, and the parts' answers merged into
//! the one answer the client expects.

use super::wire::value_len;
use crate::protocol::{Merge, Part};
use bytes::Bytes;

/// `MGET a b` + `MGET c` → `MGET a b c` (likewise MSET pairs, DEL/UNLINK/EXISTS/TOUCH keys);
/// the key of the result is the first part's.
pub(super) fn join(parts: &[&Part]) -> Part {
    let first = parts[0];
    let argc: usize = parts.iter().map(|p| p.argc).sum();
    // `*N` anew, the command name's bulk string, then every part's arguments.
    let head = &first.frame[..first.args_at];
    let name_at = head.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut v = format!("*{}\r\n", argc + 1).into_bytes();
    v.extend_from_slice(&head[name_at..]);
    let args_at = v.len();
    for p in parts {
        v.extend_from_slice(&p.frame[p.args_at..]);
    }
    Part {
        key: (args_at + first.key.0 - first.args_at, first.key.1),
        frame: v.into(),
        args_at,
        argc,
    }
}

/// Cuts the answer to a joined command into the answers each part would have had on its
/// own, so [`merge`] sees one answer per part. An answer that does not have the expected
/// shape (an error) is given to every part.
pub(super) fn unjoin(kind: Merge, answer: &[u8], parts: &[&Part]) -> Vec<Bytes> {
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
                    match value_len(&answer[at..], usize::MAX) {
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
        _ => all(),
    }
}

/// Merges the answers of a split command (one per part, in part order). A part that failed
/// (its server down, an error answer) answers the whole command with that one error, as
/// twemproxy does: an array with error elements would read as values to most clients
/// (redis-py does not raise on them).
pub(super) fn merge(kind: Merge, parts: &[Bytes]) -> Bytes {
    if let Some(err) = parts.iter().find(|p| p.first() == Some(&b'-')) {
        return err.clone();
    }
    let mut out = Vec::new();
    match kind {
        Merge::SumIntegers => {
            let mut sum = 0i64;
            for p in parts {
                if p.first() != Some(&b':') {
                    return p.clone();
                }
                let n = std::str::from_utf8(&p[1..])
                    .ok()
                    .and_then(|s| s.trim_end().parse::<i64>().ok());
                sum += n.unwrap_or(0);
            }
            out.extend_from_slice(format!(":{sum}\r\n").as_bytes());
        }
        Merge::AllOk => {
            if let Some(other) = parts.iter().find(|p| p.first() != Some(&b'+')) {
                return other.clone();
            }
            out.extend_from_slice(b"+OK\r\n");
        }
        _ => {
            out.extend_from_slice(format!("*{}\r\n", parts.len()).as_bytes());
            for p in parts {
                // Each part is "*1\r\n<element>".
                match p.strip_prefix(b"*1\r\n") {
                    Some(elem) => out.extend_from_slice(elem),
                    None => out.extend_from_slice(p),
                }
            }
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::super::commands::build;
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn part(name: &str, args: &[&str]) -> Part {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        build(name.as_bytes(), &args)
    }

    #[test]
    fn joins_parts_into_one_request_of_the_same_command() {
        let (a, bb) = (part("MGET", &["a"]), part("MGET", &["bb"]));
        let j = join(&[&a, &bb]);
        assert_eq!(j.frame, b("*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$2\r\nbb\r\n"));
        assert_eq!(j.key_bytes(), b"a");
        assert_eq!(j.argc, 2);
        // Joined twice (a group of groups) is still one command.
        let c = part("MGET", &["c"]);
        let jj = join(&[&j, &c]);
        assert_eq!(
            jj.frame,
            b("*4\r\n$4\r\nMGET\r\n$1\r\na\r\n$2\r\nbb\r\n$1\r\nc\r\n")
        );
        let (k1, k2) = (part("MSET", &["k1", "v1"]), part("MSET", &["k2", "v2"]));
        let m = join(&[&k1, &k2]);
        assert_eq!(
            m.frame,
            b("*5\r\n$4\r\nMSET\r\n$2\r\nk1\r\n$2\r\nv1\r\n$2\r\nk2\r\n$2\r\nv2\r\n")
        );
        assert_eq!(m.key_bytes(), b"k1");
    }

    #[test]
    fn unjoins_answers_per_part() {
        let (a, b2, c) = (
            part("MGET", &["a"]),
            part("MGET", &["b"]),
            part("MGET", &["c"]),
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
    }
}
