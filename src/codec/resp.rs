//! `resp`: Redis's protocol. Requests are arrays of bulk strings (or inline lines); the
//! session key is the command's key argument, found through a per-command table (as
//! twemproxy does). Answers are any RESP2/RESP3 value, framed by walking nested aggregates
//! without allocating. Correlation is `in_order`. [`plan`] decides per command: forward,
//! answer from the proxy (PING, ECHO, QUIT, AUTH, errors for commands that need connection
//! state a shared backend connection cannot keep), or split multi-key commands per key.

use super::plan::{ConnState, Merge, Part, Plan};
use super::{CodecError, Key, Measured, Scanned, Span};
use bytes::Bytes;

/// Arguments per request, at most (redis's own limit is 1M).
const MAX_ARGS: u64 = 1 << 20;

/// What a command is, for routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    /// Its first argument is the key.
    Key,
    /// No key: any backend may answer it.
    Keyless,
    /// Several keys: split per key, merge with this.
    MultiKey(Merge),
    /// Key/value pairs (MSET): split per pair.
    Pairs,
    /// Answered by the proxy.
    Local,
    /// Needs connection state (transactions, pub/sub, blocking, database selection…).
    Unsupported,
}

fn classify(name: &[u8]) -> Option<Cmd> {
    let mut up = [0u8; 24];
    if name.len() > up.len() {
        return None;
    }
    for (d, s) in up.iter_mut().zip(name) {
        *d = s.to_ascii_uppercase();
    }
    Some(match &up[..name.len()] {
        b"PING" | b"ECHO" | b"QUIT" | b"AUTH" | b"HELLO" => Cmd::Local,
        b"MGET" => Cmd::MultiKey(Merge::Array),
        b"DEL" | b"UNLINK" | b"EXISTS" | b"TOUCH" => Cmd::MultiKey(Merge::SumIntegers),
        b"MSET" => Cmd::Pairs,
        b"INFO" | b"TIME" | b"COMMAND" | b"LASTSAVE" => Cmd::Keyless,
        b"MULTI" | b"EXEC" | b"DISCARD" | b"WATCH" | b"UNWATCH" | b"SUBSCRIBE" | b"PSUBSCRIBE"
        | b"SSUBSCRIBE" | b"UNSUBSCRIBE" | b"PUNSUBSCRIBE" | b"SUNSUBSCRIBE" | b"MONITOR"
        | b"SYNC" | b"PSYNC" | b"REPLCONF" | b"BLPOP" | b"BRPOP" | b"BRPOPLPUSH" | b"BLMOVE"
        | b"BLMPOP" | b"BZPOPMIN" | b"BZPOPMAX" | b"BZMPOP" | b"WAIT" | b"SELECT" | b"CLIENT"
        | b"RESET" | b"KEYS" | b"SCAN" | b"RANDOMKEY" | b"DBSIZE" | b"FLUSHALL" | b"FLUSHDB"
        | b"CONFIG" | b"SHUTDOWN" | b"SAVE" | b"BGSAVE" | b"BGREWRITEAOF" | b"SLAVEOF"
        | b"REPLICAOF" | b"DEBUG" | b"SWAPDB" | b"MOVE" | b"MIGRATE" | b"EVAL" | b"EVALSHA"
        | b"SCRIPT" | b"FUNCTION" | b"FCALL" | b"PUBLISH" | b"XREAD" | b"XREADGROUP"
        | b"OBJECT" | b"SORT" | b"RENAME" | b"RENAMENX" | b"SMOVE" | b"SINTER" | b"SUNION"
        | b"SDIFF" | b"SINTERSTORE" | b"SUNIONSTORE" | b"SDIFFSTORE" | b"ZUNIONSTORE"
        | b"ZINTERSTORE" | b"RPOPLPUSH" | b"LMOVE" | b"PFMERGE" | b"BITOP" | b"MSETNX"
        | b"COPY" => Cmd::Unsupported,
        b"GET" | b"SET" | b"SETNX" | b"SETEX" | b"PSETEX" | b"APPEND" | b"STRLEN" | b"INCR"
        | b"DECR" | b"INCRBY" | b"DECRBY" | b"INCRBYFLOAT" | b"GETSET" | b"GETDEL" | b"GETEX"
        | b"GETRANGE" | b"SETRANGE" | b"GETBIT" | b"SETBIT" | b"BITCOUNT" | b"BITPOS"
        | b"BITFIELD" | b"EXPIRE" | b"PEXPIRE" | b"EXPIREAT" | b"PEXPIREAT" | b"EXPIRETIME"
        | b"PEXPIRETIME" | b"TTL" | b"PTTL" | b"PERSIST" | b"TYPE" | b"DUMP" | b"RESTORE"
        | b"LPUSH" | b"RPUSH" | b"LPUSHX" | b"RPUSHX" | b"LPOP" | b"RPOP" | b"LLEN" | b"LRANGE"
        | b"LINDEX" | b"LSET" | b"LREM" | b"LTRIM" | b"LINSERT" | b"LPOS" | b"SADD" | b"SREM"
        | b"SCARD" | b"SMEMBERS" | b"SISMEMBER" | b"SMISMEMBER" | b"SRANDMEMBER" | b"SPOP"
        | b"SSCAN" | b"HSET" | b"HSETNX" | b"HGET" | b"HMSET" | b"HMGET" | b"HDEL" | b"HLEN"
        | b"HKEYS" | b"HVALS" | b"HGETALL" | b"HEXISTS" | b"HINCRBY" | b"HINCRBYFLOAT"
        | b"HSTRLEN" | b"HSCAN" | b"HRANDFIELD" | b"ZADD" | b"ZREM" | b"ZCARD" | b"ZSCORE"
        | b"ZMSCORE" | b"ZINCRBY" | b"ZRANGE" | b"ZREVRANGE" | b"ZRANGEBYSCORE"
        | b"ZREVRANGEBYSCORE" | b"ZRANK" | b"ZREVRANK" | b"ZCOUNT" | b"ZLEXCOUNT"
        | b"ZRANGEBYLEX" | b"ZREVRANGEBYLEX" | b"ZREMRANGEBYRANK" | b"ZREMRANGEBYSCORE"
        | b"ZREMRANGEBYLEX" | b"ZSCAN" | b"ZPOPMIN" | b"ZPOPMAX" | b"ZRANDMEMBER" | b"PFADD"
        | b"PFCOUNT" | b"GEOADD" | b"GEODIST" | b"GEOHASH" | b"GEOPOS" | b"GEOSEARCH" | b"XADD"
        | b"XLEN" | b"XRANGE" | b"XREVRANGE" | b"XDEL" | b"XTRIM" => Cmd::Key,
        _ => return None,
    })
}

/// Finds "\r\n" at or after `from`; the index of '\r'.
fn crlf(buf: &[u8], from: usize) -> Option<usize> {
    // Lines are short: a memchr for CR beats a substring search's set-up.
    let mut at = from;
    loop {
        let i = at + memchr::memchr(b'\r', buf.get(at..)?)?;
        if buf.get(i + 1) == Some(&b'\n') {
            return Some(i);
        }
        at = i + 1;
    }
}

/// A decimal integer, as `str::parse::<i64>` reads it (optional sign, digits only, no
/// overflow), without the UTF-8 check.
fn number(line: &[u8]) -> Result<i64, CodecError> {
    let bad = || {
        CodecError::Malformed(format!(
            "`{}` is not a number",
            String::from_utf8_lossy(line)
        ))
    };
    let (negative, digits) = match line.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, line),
    };
    if digits.is_empty() {
        return Err(bad());
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(bad());
        }
        let d = i64::from(d - b'0');
        n = n.checked_mul(10).ok_or_else(bad)?;
        n = if negative {
            n.checked_sub(d)
        } else {
            n.checked_add(d)
        }
        .ok_or_else(bad)?;
    }
    Ok(n)
}

/// The arguments of one request frame, as spans.
struct Args<'a> {
    frame: &'a [u8],
    pos: usize,
    left: usize,
    inline: bool,
}

impl<'a> Args<'a> {
    fn new(frame: &'a [u8]) -> Self {
        if frame.first() == Some(&b'*') {
            let end = crlf(frame, 0).unwrap_or(frame.len());
            let n = number(&frame[1..end]).unwrap_or(0).max(0) as usize;
            Args {
                frame,
                pos: end + 2,
                left: n,
                inline: false,
            }
        } else {
            Args {
                frame,
                pos: 0,
                left: usize::MAX,
                inline: true,
            }
        }
    }

    fn count(frame: &[u8]) -> usize {
        Args::new(frame).count()
    }
}

impl Iterator for Args<'_> {
    type Item = (usize, usize);
    fn next(&mut self) -> Option<(usize, usize)> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        if self.inline {
            let line_end = self
                .frame
                .iter()
                .position(|b| *b == b'\n')
                .unwrap_or(self.frame.len());
            while self.pos < line_end && matches!(self.frame[self.pos], b' ' | b'\t' | b'\r') {
                self.pos += 1;
            }
            if self.pos >= line_end {
                return None;
            }
            let start = self.pos;
            while self.pos < line_end && !matches!(self.frame[self.pos], b' ' | b'\t' | b'\r') {
                self.pos += 1;
            }
            return Some((start, self.pos - start));
        }
        let end = crlf(self.frame, self.pos)?;
        let len = number(self.frame.get(self.pos + 1..end)?).ok()?.max(0) as usize;
        let start = end + 2;
        self.pos = start + len + 2;
        Some((start, len))
    }
}

/// Scans one request at the head of `buf`: `Ok(None)` if incomplete.
fn request_len(buf: &[u8], max: usize) -> Result<Option<usize>, CodecError> {
    let too_large = |len: usize| CodecError::TooLarge {
        len: len as u64,
        max: max as u64,
    };
    if buf.first() != Some(&b'*') {
        // Inline command: one line.
        return match memchr::memchr(b'\n', buf) {
            Some(i) if i + 1 > max => Err(too_large(i + 1)),
            Some(i) => Ok(Some(i + 1)),
            None if buf.len() > max => Err(too_large(buf.len())),
            None => Ok(None),
        };
    }
    // Headers longer than 32 bytes are malformed whether or not their CR LF has arrived
    // (so the verdict does not depend on how the stream was split into reads).
    let end = match crlf(buf, 0) {
        Some(end) if end <= 32 => end,
        None if buf.len() <= 32 => return Ok(None),
        _ => return Err(CodecError::Malformed("array header too long".into())),
    };
    let n = number(&buf[1..end])?;
    if !(0..=MAX_ARGS as i64).contains(&n) {
        return Err(CodecError::Malformed(format!("{n} arguments")));
    }
    let mut pos = end + 2;
    for _ in 0..n {
        if pos >= buf.len() {
            return Ok(None);
        }
        if buf[pos] != b'$' {
            return Err(CodecError::Malformed(format!(
                "expected a bulk string, got {:?}",
                buf[pos] as char
            )));
        }
        let end = match crlf(buf, pos) {
            Some(end) if end - pos <= 32 => end,
            None if buf.len() - pos <= 32 => return Ok(None),
            _ => return Err(CodecError::Malformed("bulk header too long".into())),
        };
        let len = number(&buf[pos + 1..end])?;
        if len < 0 {
            return Err(CodecError::Malformed(
                "null bulk string in a request".into(),
            ));
        }
        pos = end + 2 + len as usize + 2;
        if pos > max {
            return Err(too_large(pos));
        }
    }
    if pos > buf.len() {
        return Ok(None);
    }
    if &buf[pos - 2..pos] != b"\r\n" {
        return Err(CodecError::Malformed(
            "bulk string not terminated by CRLF".into(),
        ));
    }
    Ok(Some(pos))
}

/// The length of one RESP2/RESP3 value at the head of `buf`: `Ok(None)` if incomplete.
pub(crate) fn value_len(buf: &[u8], max: usize) -> Result<Option<usize>, CodecError> {
    let mut pos = 0usize;
    let mut pending: u64 = 1;
    while pending > 0 {
        pending -= 1;
        let Some(&kind) = buf.get(pos) else {
            return Ok(None);
        };
        let Some(end) = crlf(buf, pos) else {
            return if buf.len() > max {
                Err(CodecError::TooLarge {
                    len: buf.len() as u64,
                    max: max as u64,
                })
            } else {
                Ok(None)
            };
        };
        // `end` can be `pos` itself when the value starts with CR LF: no type byte.
        let line = buf.get(pos + 1..end).unwrap_or_default();
        pos = end + 2;
        match kind {
            b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => {}
            b'$' | b'!' | b'=' => {
                let len = number(line)?;
                if len >= 0 {
                    pos += len as usize + 2;
                }
            }
            b'*' | b'~' | b'>' => {
                let n = number(line)?;
                if n > 0 {
                    pending += n as u64;
                }
            }
            b'%' => pending += 2 * number(line)?.max(0) as u64,
            // Attributes come before the value they describe.
            b'|' => pending += 2 * number(line)?.max(0) as u64 + 1,
            other => {
                return Err(CodecError::Malformed(format!(
                    "unknown RESP type byte {:?}",
                    other as char
                )))
            }
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

/// The `resp` protocol, measured by scanning.
#[derive(Debug, Clone)]
pub struct RespProtocol;

/// The `resp` codec (requests, or answers with `answers`).
pub type Resp = Scanned<RespProtocol>;

impl Measured for RespProtocol {
    fn request_len(buf: &[u8], max: usize) -> Result<Option<usize>, CodecError> {
        request_len(buf, max)
    }
    fn answer_len(buf: &[u8], max: usize) -> Result<Option<usize>, CodecError> {
        value_len(buf, max)
    }
    fn request_key(frame: &[u8]) -> Option<Key> {
        request_key(frame)
    }
}

/// The key of a request: its first argument, for commands that have one.
fn request_key(frame: &[u8]) -> Option<Key> {
    let mut args = Args::new(frame);
    let (s, l) = args.next()?;
    match classify(&frame[s..s + l])? {
        Cmd::Key | Cmd::MultiKey(_) | Cmd::Pairs => {
            let (ks, kl) = args.next()?;
            Some(Key::Bytes(Span {
                offset: ks as u32,
                len: kl as u32,
            }))
        }
        _ => None,
    }
}

fn bulk(b: &[u8]) -> Bytes {
    let mut v = format!("${}\r\n", b.len()).into_bytes();
    v.extend_from_slice(b);
    v.extend_from_slice(b"\r\n");
    v.into()
}

fn error(msg: &str) -> Plan {
    Plan::Reply(Bytes::from(format!("-{msg}\r\n")))
}

/// A request of `name` with `args`, as a RESP array; returns it and the key's position.
pub(crate) fn build(name: &[u8], args: &[&[u8]]) -> Part {
    let mut v = format!("*{}\r\n${}\r\n", args.len() + 1, name.len()).into_bytes();
    v.extend_from_slice(name);
    v.extend_from_slice(b"\r\n");
    let args_at = v.len();
    let mut key = (0, 0);
    for (i, a) in args.iter().enumerate() {
        v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        if i == 0 {
            key = (v.len(), a.len());
        }
        v.extend_from_slice(a);
        v.extend_from_slice(b"\r\n");
    }
    Part {
        frame: v.into(),
        key,
        args_at,
        argc: args.len(),
    }
}

/// What to do with one request frame. `password`: the listener's client password, if any.
pub fn plan(frame: &[u8], state: &mut ConnState, password: Option<&[u8]>) -> Plan {
    let mut args = Args::new(frame);
    let Some((s, l)) = args.next() else {
        // A bare CR LF, a line of blanks, `*0`: Redis reads no command and answers nothing.
        return Plan::Ignore;
    };
    let name = &frame[s..s + l];
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    let lower = || String::from_utf8_lossy(name).to_ascii_lowercase();
    let arg = |args: &mut Args<'_>| args.next().map(|(s, l)| &frame[s..s + l]);
    if password.is_some() && !state.authenticated && !is("AUTH") && !is("QUIT") {
        return error("NOAUTH Authentication required.");
    }
    let Some(cmd) = classify(name) else {
        return error(&format!("ERR unknown or unsupported command '{}'", lower()));
    };
    match cmd {
        Cmd::Local => match String::from_utf8_lossy(name).to_ascii_uppercase().as_str() {
            "PING" => match arg(&mut args) {
                None => Plan::Reply(Bytes::from_static(b"+PONG\r\n")),
                Some(m) => Plan::Reply(bulk(m)),
            },
            "ECHO" => match arg(&mut args) {
                Some(m) => Plan::Reply(bulk(m)),
                None => error("ERR wrong number of arguments for 'echo' command"),
            },
            "QUIT" => Plan::ReplyAndClose(Bytes::from_static(b"+OK\r\n")),
            "AUTH" => {
                // AUTH [username] password: the last argument is the password.
                let given = args.last().map(|(s, l)| &frame[s..s + l]);
                match (password, given) {
                    (None, _) => error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"),
                    (Some(p), Some(g)) if p == g => {
                        state.authenticated = true;
                        Plan::Reply(Bytes::from_static(b"+OK\r\n"))
                    }
                    _ => error("WRONGPASS invalid username-password pair or user is disabled."),
                }
            }
            _ => error("NOPROTO this proxy speaks RESP2 only"),
        },
        Cmd::Unsupported => error(&format!(
            "ERR command '{}' is not supported by this proxy: it needs connection state that shared backend connections cannot keep",
            lower()
        )),
        Cmd::Key | Cmd::Keyless => Plan::Forward,
        Cmd::MultiKey(merge) => {
            let keys: Vec<&[u8]> = args.map(|(s, l)| &frame[s..s + l]).collect();
            if keys.len() <= 1 {
                return Plan::Forward;
            }
            Plan::Split(keys.iter().map(|k| build(name, &[k])).collect(), merge)
        }
        Cmd::Pairs => {
            let rest: Vec<&[u8]> = args.map(|(s, l)| &frame[s..s + l]).collect();
            if rest.len() <= 2 || rest.len() % 2 != 0 {
                return Plan::Forward; // one pair, or wrong arity: the backend answers
            }
            Plan::Split(rest.chunks(2).map(|kv| build(name, kv)).collect(), Merge::AllOk)
        }
    }
}

/// Number of arguments of a request frame (for tests and tools).
pub fn arg_count(frame: &[u8]) -> usize {
    Args::count(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;

    fn cmd(parts: &[&str]) -> Vec<u8> {
        let mut v = format!("*{}\r\n", parts.len()).into_bytes();
        for p in parts {
            v.extend_from_slice(format!("${}\r\n{p}\r\n", p.len()).as_bytes());
        }
        v
    }

    #[test]
    fn requests_are_framed_with_their_key() {
        let mut buf = cmd(&["SET", "user:1", "v"]);
        buf.extend_from_slice(b"PING\r\n");
        buf.extend_from_slice(&cmd(&["get", "user:2"]));
        let partial = cmd(&["GET", "x"]);
        buf.extend_from_slice(&partial[..7]);
        let mut c = Resp::new(false, 1 << 20);
        let mut out = Vec::new();
        c.scan(&buf, &mut out).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].key.unwrap().display(&buf), "user:1");
        assert_eq!(out[1].key, None);
        let third = &buf[(out[0].len + out[1].len) as usize..];
        assert_eq!(out[2].key.unwrap().display(third), "user:2");
    }

    #[test]
    fn answers_of_every_type_are_framed() {
        let answers: &[&[u8]] = &[
            b"+OK\r\n",
            b"-ERR no\r\n",
            b":42\r\n",
            b"$5\r\nhello\r\n",
            b"$-1\r\n",
            b"*-1\r\n",
            b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n",
            b"%1\r\n+k\r\n$1\r\nv\r\n",
            b"|1\r\n+ttl\r\n:3\r\n$1\r\nx\r\n",
            b"_\r\n",
        ];
        let stream: Vec<u8> = answers.concat();
        let mut c = Resp::new(true, 1 << 20);
        for cut in 0..stream.len() {
            let mut out = Vec::new();
            c.scan(&stream[..cut], &mut out).unwrap();
            let whole: usize = out.iter().map(|f| f.len as usize).sum();
            assert!(whole <= cut);
        }
        let mut out = Vec::new();
        c.scan(&stream, &mut out).unwrap();
        let lens: Vec<usize> = out.iter().map(|f| f.len as usize).collect();
        assert_eq!(lens, answers.iter().map(|a| a.len()).collect::<Vec<_>>());
    }

    #[test]
    fn garbage_and_oversize_are_refused() {
        let mut c = Resp::new(false, 64);
        let mut out = Vec::new();
        assert!(c.scan(b"*2\r\n+x\r\n", &mut out).is_err());
        assert!(c.scan(b"*1\r\n$1000\r\n", &mut out).is_err());
        assert!(Resp::new(true, 64).scan(b"?x\r\n", &mut out).is_err());
        // Found by fuzzing: a value starting with CR LF, and one-line frames over the bound.
        assert!(Resp::new(true, 64).scan(b"\r\n", &mut out).is_err());
        assert!(Resp::new(true, 16)
            .scan(b"+0123456789abcdefgh\r\n", &mut out)
            .is_err());
    }

    #[test]
    fn plans() {
        let mut st = ConnState::default();
        assert_eq!(
            plan(&cmd(&["PING"]), &mut st, None),
            Plan::Reply(Bytes::from_static(b"+PONG\r\n"))
        );
        assert_eq!(
            plan(b"ping\r\n", &mut st, None),
            Plan::Reply(Bytes::from_static(b"+PONG\r\n"))
        );
        assert_eq!(plan(&cmd(&["GET", "k"]), &mut st, None), Plan::Forward);
        let Plan::Reply(e) = plan(&cmd(&["MULTI"]), &mut st, None) else {
            panic!()
        };
        assert!(e.starts_with(b"-ERR command 'multi' is not supported"));
        let Plan::Reply(e) = plan(&cmd(&["FOO"]), &mut st, None) else {
            panic!()
        };
        assert!(e.starts_with(b"-ERR unknown or unsupported command 'foo'"));
        let Plan::Split(parts, Merge::Array) = plan(&cmd(&["MGET", "a", "bb"]), &mut st, None)
        else {
            panic!()
        };
        assert_eq!(parts[1].frame, Bytes::from(cmd(&["MGET", "bb"])));
        assert_eq!(
            &parts[1].frame[parts[1].key.0..parts[1].key.0 + parts[1].key.1],
            b"bb"
        );
        let Plan::Split(parts, Merge::AllOk) =
            plan(&cmd(&["MSET", "a", "1", "b", "2"]), &mut st, None)
        else {
            panic!()
        };
        assert_eq!(parts[0].frame, Bytes::from(cmd(&["MSET", "a", "1"])));
        assert_eq!(plan(&cmd(&["DEL", "a"]), &mut st, None), Plan::Forward);
        // Empty commands are ignored, as Redis does.
        for empty in [&b"\r\n"[..], b"   \r\n", b"*0\r\n"] {
            assert_eq!(plan(empty, &mut st, None), Plan::Ignore);
        }
    }

    #[test]
    fn client_password() {
        let mut st = ConnState::default();
        let Plan::Reply(e) = plan(&cmd(&["GET", "k"]), &mut st, Some(b"s3cret")) else {
            panic!()
        };
        assert!(e.starts_with(b"-NOAUTH"));
        let Plan::Reply(e) = plan(&cmd(&["AUTH", "nope"]), &mut st, Some(b"s3cret")) else {
            panic!()
        };
        assert!(e.starts_with(b"-WRONGPASS"));
        assert_eq!(
            plan(&cmd(&["AUTH", "s3cret"]), &mut st, Some(b"s3cret")),
            Plan::Reply(Bytes::from_static(b"+OK\r\n"))
        );
        assert_eq!(
            plan(&cmd(&["GET", "k"]), &mut st, Some(b"s3cret")),
            Plan::Forward
        );
    }
}

#[cfg(test)]
mod number_props {
    use super::{crlf, number};
    use proptest::prelude::*;

    proptest! {
        /// The hand-written integer reader agrees with `str::parse::<i64>`.
        #[test]
        fn number_reads_as_parse_does(s in "[-+]?[0-9]{0,21}|[-+0-9a ]{0,6}") {
            prop_assert_eq!(number(s.as_bytes()).ok(), s.parse::<i64>().ok());
        }

        /// `crlf` finds the first CR LF, as a substring search does.
        #[test]
        fn crlf_finds_the_first(bytes in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'a')], 0..40), from in 0usize..45) {
            let want = bytes.get(from..).and_then(|t| memchr::memmem::find(t, b"\r\n")).map(|i| from + i);
            prop_assert_eq!(crlf(&bytes, from), want);
        }
    }
}
