//! `memcache`: memcached's text protocol. Requests are command lines, storage commands
//! followed by a data block; the key is the first key argument. Answers are single lines,
//! or `VALUE … END` / `STAT … END` blocks (data blocks skipped by their byte counts).
//! Correlation is `in_order`; `noreply` requests expect no answer. [`plan`] splits
//! multi-key `get`/`gets` per key (joined again per backend, their `VALUE` blocks merged)
//! and answers malformed or unknown commands itself. A failed request is answered
//! `SERVER_ERROR reason`; an oversized storage command `SERVER_ERROR object too large for
//! cache`, its data block swallowed, as memcached does.
//!
//! Size: over 500 lines with its tests; the code is about 430.

use crate::error::CodecError;
use crate::frame::{Failure, Key, Span};
use crate::measured::{Measured, Scanned};
use crate::protocol::{
    Capabilities, ConnState, Direction, Framer, Merge, Oversize, Part, Plan, Protocol,
};
use bytes::Bytes;

/// The codec table of `kind = "memcache"`: no keys of its own.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {}

/// memcached's text protocol.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemcacheProtocol;

impl Protocol for MemcacheProtocol {
    fn kind(&self) -> &'static str {
        "memcache"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::INTERPRETED
    }

    fn framer(&self, direction: Direction, max: usize) -> Result<Box<dyn Framer>, CodecError> {
        Ok(Box::new(Memcache::new(
            direction == Direction::Answers,
            max,
        )))
    }

    fn plan(&self, frame: &[u8], state: &mut ConnState) -> Plan {
        plan(frame, state)
    }

    fn join(&self, _: Merge, parts: &[&Part]) -> Part {
        join(parts)
    }

    fn unjoin(&self, _: Merge, answer: &[u8], parts: &[&Part]) -> Vec<Bytes> {
        unjoin(answer, parts)
    }

    fn merge(&self, _: Merge, answers: &[Bytes]) -> Bytes {
        merge(answers)
    }

    fn error_answer(&self, f: &Failure<'_>) -> Result<Option<Bytes>, String> {
        let reason = f.reason.replace(['\r', '\n'], " ");
        Ok(Some(Bytes::from(format!("SERVER_ERROR {reason}\r\n"))))
    }

    fn oversize_answer(&self, e: &CodecError) -> Option<Oversize> {
        Some(match *e {
            // Its length is known: swallowed, as memcached does, and the connection goes on.
            CodecError::Oversized { len, .. } => Oversize {
                answer: Bytes::from_static(b"SERVER_ERROR object too large for cache\r\n"),
                skip: Some(len),
            },
            CodecError::TooLarge { .. } => Oversize {
                answer: Bytes::from_static(b"CLIENT_ERROR line too long\r\n"),
                skip: None,
            },
            _ => return None,
        })
    }
}

/// memcached's own key length limit.
const MAX_KEY: usize = 250;

fn line_end(buf: &[u8], from: usize) -> Option<usize> {
    memchr::memchr(b'\n', buf.get(from..)?).map(|i| from + i)
}

/// Whitespace-separated tokens of a line (without its CR LF), as spans.
fn tokens(line: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut pos = 0;
    std::iter::from_fn(move || {
        while pos < line.len() && line[pos] == b' ' {
            pos += 1;
        }
        if pos >= line.len() {
            return None;
        }
        let start = pos;
        while pos < line.len() && line[pos] != b' ' {
            pos += 1;
        }
        Some((start, pos - start))
    })
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn is_storage(cmd: &[u8]) -> bool {
    matches!(
        cmd,
        b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas"
    )
}

/// Length of one request at the head of `buf`: `Ok(None)` if incomplete. A command line
/// is bounded by `max` like the whole request, whether or not its end has arrived, so the
/// verdict does not depend on how the bytes were cut into reads (a `get` of many keys can
/// be long: memcached takes those too).
fn request_len(buf: &[u8], max: usize) -> Result<Option<usize>, CodecError> {
    let too_large = |len: usize| CodecError::TooLarge {
        len: len as u64,
        max: max as u64,
    };
    let Some(nl) = line_end(buf, 0) else {
        return if buf.len() > max {
            Err(too_large(buf.len()))
        } else {
            Ok(None)
        };
    };
    if nl + 1 > max {
        return Err(too_large(nl + 1));
    }
    let line = trim_cr(&buf[..nl]);
    let mut t = tokens(line);
    let Some((s, l)) = t.next() else {
        return Ok(Some(nl + 1)); // an empty line: the plan answers ERROR
    };
    if !is_storage(&line[s..s + l]) {
        return Ok(Some(nl + 1));
    }
    // <cmd> <key> <flags> <exptime> <bytes> [cas] [noreply]. Like memcached, a line whose
    // numbers do not parse has no data block: it is answered CLIENT_ERROR on its own.
    let num = |tok: Option<(usize, usize)>| -> Option<i64> {
        let (s, l) = tok?;
        std::str::from_utf8(&line[s..s + l])
            .ok()?
            .parse::<i64>()
            .ok()
    };
    let (_key, flags, exptime, bytes) = (t.next(), num(t.next()), num(t.next()), num(t.next()));
    let (Some(_), Some(_), Some(bytes)) = (flags, exptime, bytes.filter(|b| *b >= 0)) else {
        return Ok(Some(nl + 1));
    };
    let total = (nl as u64 + 1)
        .saturating_add(bytes as u64)
        .saturating_add(2);
    if total > max as u64 {
        // Its length is known: the connection can skip it, as memcached does.
        return Err(CodecError::Oversized {
            len: total,
            max: max as u64,
        });
    }
    let total = total as usize;
    if buf.len() < total {
        return Ok(None);
    }
    if &buf[total - 2..total] != b"\r\n" {
        return Err(CodecError::Malformed(
            "data block not terminated by CRLF".into(),
        ));
    }
    Ok(Some(total))
}

/// Length of one answer at the head of `buf`: `Ok(None)` if incomplete.
fn answer_len(buf: &[u8], max: usize) -> Result<Option<usize>, CodecError> {
    let mut pos = 0;
    loop {
        let Some(nl) = line_end(buf, pos) else {
            return if buf.len() > max {
                Err(CodecError::TooLarge {
                    len: buf.len() as u64,
                    max: max as u64,
                })
            } else {
                Ok(None)
            };
        };
        let line = trim_cr(&buf[pos..nl]);
        let first = pos == 0;
        pos = nl + 1;
        if line.starts_with(b"VALUE ") {
            // VALUE <key> <flags> <bytes> [<cas>]
            let bytes = tokens(line)
                .nth(3)
                .and_then(|(s, l)| {
                    std::str::from_utf8(&line[s..s + l])
                        .ok()?
                        .parse::<usize>()
                        .ok()
                })
                .ok_or_else(|| CodecError::Malformed("VALUE line without a byte count".into()))?;
            // Saturating: a byte count near usize::MAX is refused as too large below.
            pos = pos.saturating_add(bytes).saturating_add(2);
        } else if line == b"END" {
            break;
        } else if line.starts_with(b"STAT ") {
        } else if first {
            break; // a one-line answer
        } else {
            return Err(CodecError::Malformed(format!(
                "unexpected line in a multi-line answer: {:?}",
                String::from_utf8_lossy(line)
            )));
        }
        if pos > max {
            return Err(CodecError::TooLarge {
                len: pos as u64,
                max: max as u64,
            });
        }
    }
    Ok(if pos <= buf.len() { Some(pos) } else { None })
}

/// memcached's frames, measured by scanning.
#[derive(Debug, Clone)]
pub struct MemcacheWire;

/// The `memcache` framer (requests, or answers with `answers`).
pub type Memcache = Scanned<MemcacheWire>;

impl Measured for MemcacheWire {
    fn request_len(buf: &[u8], max: usize) -> Result<Option<usize>, CodecError> {
        request_len(buf, max)
    }
    fn answer_len(buf: &[u8], max: usize) -> Result<Option<usize>, CodecError> {
        answer_len(buf, max)
    }
    fn request_key(frame: &[u8]) -> Option<Key> {
        request_key(frame)
    }
}

fn request_key(frame: &[u8]) -> Option<Key> {
    let nl = line_end(frame, 0)?;
    let line = trim_cr(&frame[..nl]);
    let mut t = tokens(line);
    let (s, l) = t.next()?;
    let key = match &line[s..s + l] {
        b"gat" | b"gats" => t.nth(1)?,
        _ => t.next()?,
    };
    Some(Key::Bytes(Span {
        offset: key.0 as u32,
        len: key.1 as u32,
    }))
}

/// `get a` + `get b` → `get a b`: the keys bound for one backend as one command; the key
/// of the result is the first part's.
fn join(parts: &[&Part]) -> Part {
    let first = parts[0];
    let mut v = Vec::new();
    // `cmd ` then the keys separated by spaces.
    v.extend_from_slice(&first.frame[..first.args_at]);
    let args_at = v.len();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            v.push(b' ');
        }
        v.extend_from_slice(p.key_bytes());
    }
    v.extend_from_slice(b"\r\n");
    Part {
        key: (args_at + first.key.0 - first.args_at, first.key.1),
        frame: v.into(),
        args_at,
        argc: parts.iter().map(|p| p.argc).sum(),
    }
}

/// Cuts the answer to a joined get: `VALUE key flags bytes [cas]` blocks in request order
/// (misses left out), then `END`; each block goes to the next part with its key. An
/// answer of another shape (an error) is given to every part.
fn unjoin(answer: &[u8], parts: &[&Part]) -> Vec<Bytes> {
    let all = || vec![Bytes::copy_from_slice(answer); parts.len()];
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
        let Some(i) = (next..parts.len()).find(|&i| parts[i].key_bytes() == key) else {
            return all();
        };
        let mut one = rest[..end].to_vec();
        one.extend_from_slice(b"END\r\n");
        out[i] = one.into();
        next = i + 1;
        at += end;
    }
}

/// The values of every part in key order with one `END`; a part that failed (an error
/// line) answers the whole command alone.
fn merge(parts: &[Bytes]) -> Bytes {
    let mut out = Vec::new();
    for p in parts {
        match p.strip_suffix(b"END\r\n") {
            Some(values) => out.extend_from_slice(values),
            None => return p.clone(),
        }
    }
    out.extend_from_slice(b"END\r\n");
    out.into()
}

fn reply(s: &'static str) -> Plan {
    Plan::Reply(Bytes::from_static(s.as_bytes()))
}

/// What to do with one request frame.
pub fn plan(frame: &[u8], _state: &mut ConnState) -> Plan {
    let Some(nl) = line_end(frame, 0) else {
        return reply("ERROR\r\n");
    };
    let line = trim_cr(&frame[..nl]);
    let toks: Vec<(usize, usize)> = tokens(line).collect();
    let word = |i: usize| toks.get(i).map(|(s, l)| &line[*s..*s + *l]);
    let Some(cmd) = word(0) else {
        return reply("ERROR\r\n");
    };
    let noreply = word(toks.len().saturating_sub(1)) == Some(b"noreply");
    let key_ok = |k: Option<&[u8]>| {
        k.is_some_and(|k| k.len() <= MAX_KEY && k.iter().all(|b| *b > b' ' && *b != 0x7f))
    };
    let forward = if noreply {
        Plan::ForwardOneWay
    } else {
        Plan::Forward
    };
    match cmd {
        b"get" | b"gets" => {
            if toks.len() < 2
                || !toks[1..]
                    .iter()
                    .all(|(s, l)| key_ok(Some(&line[*s..*s + *l])))
            {
                return reply("CLIENT_ERROR bad command line format\r\n");
            }
            if toks.len() == 2 {
                return Plan::ForwardRead;
            }
            let parts = toks[1..]
                .iter()
                .map(|(s, l)| {
                    let key = &line[*s..*s + *l];
                    let mut v = Vec::with_capacity(cmd.len() + key.len() + 3);
                    v.extend_from_slice(cmd);
                    v.push(b' ');
                    let at = v.len();
                    v.extend_from_slice(key);
                    v.extend_from_slice(b"\r\n");
                    Part {
                        frame: v.into(),
                        key: (at, key.len()),
                        args_at: at,
                        argc: 1,
                    }
                })
                .collect();
            Plan::Split(parts, Merge::MemcacheValues)
        }
        b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas" => {
            let want = if cmd == b"cas" { 6 } else { 5 };
            let numeric = |i: usize| {
                word(i).is_some_and(|w| !w.is_empty() && w.iter().all(u8::is_ascii_digit))
            };
            let bytes_ok = (2..want).all(|i| {
                numeric(i) || (i == 3 && word(3).is_some_and(|w| w.first() == Some(&b'-')))
            });
            if toks.len() < want || !key_ok(word(1)) || !bytes_ok {
                return reply("CLIENT_ERROR bad command line format\r\n");
            }
            forward
        }
        b"delete" | b"incr" | b"decr" | b"touch" => {
            if toks.len() < 2 || !key_ok(word(1)) || (cmd != b"delete" && toks.len() < 3) {
                return reply("CLIENT_ERROR bad command line format\r\n");
            }
            forward
        }
        b"gat" | b"gats" => {
            if toks.len() != 3 || !key_ok(word(2)) {
                return reply("CLIENT_ERROR bad command line format\r\n");
            }
            Plan::Forward
        }
        b"version" => Plan::Forward,
        b"quit" => Plan::ReplyAndClose(Bytes::new()),
        _ => reply("ERROR\r\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn part(cmd: &str, key: &str) -> Part {
        let at = cmd.len() + 1;
        Part {
            frame: Bytes::from(format!("{cmd} {key}\r\n")),
            key: (at, key.len()),
            args_at: at,
            argc: 1,
        }
    }

    #[test]
    fn gets_are_joined_cut_and_merged_per_key() {
        let (g1, g2) = (part("gets", "x"), part("gets", "yy"));
        let g = join(&[&g1, &g2]);
        assert_eq!(g.frame, b("gets x yy\r\n"));
        assert_eq!(g.key_bytes(), b"x");
        let (x, y, z) = (part("get", "x"), part("get", "y"), part("get", "z"));
        let mc = [&x, &y, &z];
        assert_eq!(
            unjoin(b"VALUE x 0 1\r\n1\r\nVALUE z 5 2 77\r\nab\r\nEND\r\n", &mc),
            vec![
                b("VALUE x 0 1\r\n1\r\nEND\r\n"),
                b("END\r\n"),
                b("VALUE z 5 2 77\r\nab\r\nEND\r\n")
            ]
        );
        // A byte count past the answer's end (even usize::MAX) leaves it whole.
        let huge = b"VALUE x 0 18446744073709551615\r\n1\r\nEND\r\n";
        assert_eq!(unjoin(huge, &mc), vec![Bytes::from_static(huge); 3]);
        assert_eq!(unjoin(b"END\r\n", &mc), vec![b("END\r\n"); 3]);
        assert_eq!(
            unjoin(b"SERVER_ERROR out of memory\r\n", &mc),
            vec![b("SERVER_ERROR out of memory\r\n"); 3]
        );
        // Joined then unjoined then merged = the answer per key, merged.
        assert_eq!(
            merge(&unjoin(b"VALUE y 0 1\r\nq\r\nEND\r\n", &mc)),
            b("VALUE y 0 1\r\nq\r\nEND\r\n")
        );
        assert_eq!(
            merge(&[
                b("VALUE a 0 1\r\nx\r\nEND\r\n"),
                b("END\r\n"),
                b("VALUE c 0 1\r\nz\r\nEND\r\n")
            ]),
            b("VALUE a 0 1\r\nx\r\nVALUE c 0 1\r\nz\r\nEND\r\n")
        );
        assert_eq!(
            merge(&[b("END\r\n"), b("SERVER_ERROR gone\r\n")]),
            b("SERVER_ERROR gone\r\n")
        );
    }

    #[test]
    fn errors_and_oversize_in_memcacheds_words() {
        let p = MemcacheProtocol;
        let f = Failure {
            id: None,
            key: None,
            reason: "no backend\r\nx",
            request: None,
        };
        assert_eq!(
            p.error_answer(&f).unwrap().unwrap(),
            b("SERVER_ERROR no backend  x\r\n")
        );
        let o = p
            .oversize_answer(&CodecError::Oversized { len: 9, max: 4 })
            .unwrap();
        assert_eq!(o.skip, Some(9));
        assert!(p
            .oversize_answer(&CodecError::TooLarge { len: 9, max: 4 })
            .unwrap()
            .skip
            .is_none());
    }

    #[test]
    fn requests_with_data_blocks() {
        let buf =
            b"set k1 0 0 5\r\nhello\r\nget k1 k2\r\ndelete k1 noreply\r\nset k2 0 0 10\r\npart";
        let mut out = Vec::new();
        Memcache::new(false, 1 << 20).scan(buf, &mut out).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].len, 21);
        assert_eq!(out[0].key.unwrap().display(buf), "k1");
    }

    #[test]
    fn answers_including_values_containing_end() {
        let stream = b"STORED\r\nVALUE a 0 5\r\nEND\r\n\r\nVALUE b 3 1 99\r\nx\r\nEND\r\nEND\r\n12\r\nSTAT pid 1\r\nSTAT uptime 2\r\nEND\r\n";
        let mut out = Vec::new();
        Memcache::new(true, 1 << 20).scan(stream, &mut out).unwrap();
        let lens: Vec<u32> = out.iter().map(|f| f.len).collect();
        assert_eq!(lens, vec![8, 44, 5, 4, 32]);
    }

    #[test]
    fn lines_over_the_bound_are_refused() {
        // Found by fuzzing: a one-line request longer than max_frame.
        let mut out = Vec::new();
        assert!(Memcache::new(false, 16)
            .scan(b"get 0123456789abcdef\r\n", &mut out)
            .is_err());
        assert!(Memcache::new(true, 16)
            .scan(b"SERVER_ERROR 0123456789\r\n", &mut out)
            .is_err());
    }

    #[test]
    fn a_huge_value_byte_count_is_too_large_not_an_overflow() {
        // Found by the memcache fuzz target: a count of u64::MAX overflowed the position.
        let mut out = Vec::new();
        let answer = b"VALUE a 0 18446744073709551615\r\nx\r\nEND\r\n";
        assert!(matches!(
            Memcache::new(true, 1 << 20).scan(answer, &mut out),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_long_get_line_frames_the_same_however_it_arrives() {
        // 400 keys, 3 095 bytes: once split 2 100 + 995 it was refused against a 2 KiB cap
        // that applied only while the line was incomplete.
        let mut line = b"get".to_vec();
        for i in 0..400 {
            line.extend_from_slice(format!(" k{i:04}").as_bytes());
        }
        line.extend_from_slice(b"\r\n");
        let a = &line[..2100];
        let mut c = Memcache::new(false, 1 << 20);
        let mut out = Vec::new();
        c.scan(a, &mut out).unwrap();
        assert!(out.is_empty());
        c.scan(&line, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len as usize, line.len());
        // Over max_frame either way.
        let mut small = Memcache::new(false, 1024);
        assert!(small.scan(&line, &mut out).is_err());
        assert!(small.scan(a, &mut out).is_err());
    }

    #[test]
    fn plans() {
        let mut st = ConnState::default();
        assert_eq!(plan(b"get a\r\n", &mut st), Plan::ForwardRead);
        let Plan::Split(parts, Merge::MemcacheValues) = plan(b"gets a bb\r\n", &mut st) else {
            panic!()
        };
        assert_eq!(&parts[1].frame[..], b"gets bb\r\n");
        assert_eq!(parts[1].key, (5, 2));
        assert_eq!(
            plan(b"set k 0 0 1 noreply\r\nx\r\n", &mut st),
            Plan::ForwardOneWay
        );
        assert_eq!(
            plan(b"bogus\r\n", &mut st),
            Plan::Reply(Bytes::from_static(b"ERROR\r\n"))
        );
        assert_eq!(
            plan(b"set k x 0 1\r\n", &mut st),
            Plan::Reply(Bytes::from_static(
                b"CLIENT_ERROR bad command line format\r\n"
            ))
        );
    }
}
