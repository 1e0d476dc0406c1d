//! Redis's commands as the proxy sees them: which argument is the key (a per-command
//! table, as twemproxy has), and the plan for each request — forward it, answer it from the
//! proxy (PING, ECHO, QUIT, AUTH, errors for commands that need state a shared backend
//! connection cannot keep), ignore it (an empty command), or split a multi-key command per
//! key.

use super::wire::Args;
use crate::frame::{Key, Span};
use crate::protocol::{ConnState, Merge, Part, Plan};
use bytes::Bytes;

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

/// A command name in upper case (every name in the tables fits in 24 bytes).
struct Upper {
    buf: [u8; 24],
    len: usize,
}

impl Upper {
    fn of(name: &[u8]) -> Option<Upper> {
        let mut buf = [0u8; 24];
        if name.len() > buf.len() {
            return None;
        }
        for (d, s) in buf.iter_mut().zip(name) {
            *d = s.to_ascii_uppercase();
        }
        Some(Upper {
            buf,
            len: name.len(),
        })
    }

    fn name(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

fn classify(name: &[u8]) -> Option<Cmd> {
    classify_upper(&Upper::of(name)?)
}

fn classify_upper(up: &Upper) -> Option<Cmd> {
    Some(match up.name() {
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

/// Whether a command only reads (it may reach a server twice without changing what it
/// holds): Redis's read-only commands of the table above, by the `readonly` flag of Redis's
/// own command table.
fn is_read(up: &Upper) -> bool {
    matches!(
        up.name(),
        b"GET"
            | b"MGET"
            | b"EXISTS"
            | b"STRLEN"
            | b"GETRANGE"
            | b"GETBIT"
            | b"BITCOUNT"
            | b"BITPOS"
            | b"TTL"
            | b"PTTL"
            | b"EXPIRETIME"
            | b"PEXPIRETIME"
            | b"TYPE"
            | b"DUMP"
            | b"LLEN"
            | b"LRANGE"
            | b"LINDEX"
            | b"LPOS"
            | b"SCARD"
            | b"SMEMBERS"
            | b"SISMEMBER"
            | b"SMISMEMBER"
            | b"SRANDMEMBER"
            | b"SSCAN"
            | b"HGET"
            | b"HMGET"
            | b"HLEN"
            | b"HKEYS"
            | b"HVALS"
            | b"HGETALL"
            | b"HEXISTS"
            | b"HSTRLEN"
            | b"HSCAN"
            | b"HRANDFIELD"
            | b"ZCARD"
            | b"ZSCORE"
            | b"ZMSCORE"
            | b"ZRANGE"
            | b"ZREVRANGE"
            | b"ZRANGEBYSCORE"
            | b"ZREVRANGEBYSCORE"
            | b"ZRANK"
            | b"ZREVRANK"
            | b"ZCOUNT"
            | b"ZLEXCOUNT"
            | b"ZRANGEBYLEX"
            | b"ZREVRANGEBYLEX"
            | b"ZSCAN"
            | b"ZRANDMEMBER"
            | b"PFCOUNT"
            | b"GEODIST"
            | b"GEOHASH"
            | b"GEOPOS"
            | b"GEOSEARCH"
            | b"XLEN"
            | b"XRANGE"
            | b"XREVRANGE"
            | b"INFO"
            | b"TIME"
            | b"COMMAND"
            | b"LASTSAVE"
    )
}

/// The key of a request: its first argument, for commands that have one.
pub(super) fn request_key(frame: &[u8]) -> Option<Key> {
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
pub fn build(name: &[u8], args: &[&[u8]]) -> Part {
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
    let Some(upper) = Upper::of(name) else {
        return error(&format!("ERR unknown or unsupported command '{}'", lower()));
    };
    let Some(cmd) = classify_upper(&upper) else {
        return error(&format!("ERR unknown or unsupported command '{}'", lower()));
    };
    let forward = || {
        if is_read(&upper) {
            Plan::ForwardRead
        } else {
            Plan::Forward
        }
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
        Cmd::Key | Cmd::Keyless => forward(),
        Cmd::MultiKey(merge) => {
            let keys: Vec<&[u8]> = args.map(|(s, l)| &frame[s..s + l]).collect();
            if keys.len() <= 1 {
                return forward();
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
    use super::super::tests::cmd;
    use super::*;

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
        assert_eq!(plan(&cmd(&["GET", "k"]), &mut st, None), Plan::ForwardRead);
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
    fn reads_and_writes() {
        let mut st = ConnState::default();
        for r in [
            &["GET", "k"][..],
            &["mget", "a"],
            &["HGETALL", "h"],
            &["INFO"],
            &["exists", "k"],
        ] {
            assert_eq!(plan(&cmd(r), &mut st, None), Plan::ForwardRead, "{r:?}");
        }
        for w in [
            &["SET", "k", "v"][..],
            &["INCR", "k"],
            &["DEL", "k"],
            &["LPOP", "l"],
        ] {
            assert_eq!(plan(&cmd(w), &mut st, None), Plan::Forward, "{w:?}");
        }
        assert_eq!(
            plan(b"get k\r\n", &mut st, None),
            Plan::ForwardRead,
            "inline"
        );
        let Plan::Split(_, merge) = plan(&cmd(&["MGET", "a", "b"]), &mut st, None) else {
            panic!()
        };
        assert!(merge.reads());
        let Plan::Split(_, merge) = plan(&cmd(&["DEL", "a", "b"]), &mut st, None) else {
            panic!()
        };
        assert!(!merge.reads());
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
            Plan::ForwardRead
        );
    }
}
