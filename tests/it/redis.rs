//! Switchyard in front of three real redis-server instances, driven by redis-cli and
//! redis-benchmark: answers are right, every key lives on one backend, load spreads,
//! multi-key commands are split and merged, stateful commands get a clear error.

use crate::servers::{redis, redis_cli, run, Relay, Server};
use crate::support::*;
use std::net::SocketAddr;

fn proxy_for(servers: &[Server], extra_cluster: &str, extra_listener: &str) -> Proxy {
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    proxy_for_addrs(&addrs, extra_cluster, extra_listener)
}

fn proxy_for_addrs(addrs: &[SocketAddr], extra_cluster: &str, extra_listener: &str) -> Proxy {
    let list: Vec<String> = addrs
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect();
    Proxy::start(&format!(
        r#"workers = 2
[[listener]]
name = "redis"
listen = "127.0.0.1:0"
cluster = "redis"
{extra_listener}
[listener.codec]
kind = "resp"

[[cluster]]
name = "redis"
policy = "round_robin"
backends = [{}]
{extra_cluster}
[cluster.persistence]
ttl = "1h"
"#,
        list.join(", ")
    ))
}

/// One worker, a `resp` listener over the cluster of `backends` (TOML inline tables), with
/// `cluster` lines added to the cluster's table.
fn one_worker_proxy(backends: &[String], cluster: &str) -> Proxy {
    Proxy::start(&format!(
        r#"workers = 1
[[listener]]
name = "redis"
listen = "127.0.0.1:0"
cluster = "redis"
[listener.codec]
kind = "resp"

[[cluster]]
name = "redis"
backends = [{}]
{cluster}
"#,
        backends.join(", ")
    ))
}

/// The number after `prefix` on its line of `INFO section` (up to a comma), or 0.
fn info_number(server: &Server, section: &str, prefix: &str) -> u64 {
    let info = redis_cli(server.addr, &["INFO", section]);
    info.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn keys_on(server: &Server) -> u64 {
    info_number(server, "keyspace", "db0:keys=")
}

#[test]
fn redis_cli_commands_through_the_proxy() {
    let servers: Vec<Server> = (0..3).map(|_| redis(None)).collect();
    let proxy = proxy_for(&servers, "", "");
    let p = proxy.addr("redis");
    assert_eq!(redis_cli(p, &["PING"]), "PONG");
    assert_eq!(redis_cli(p, &["ECHO", "hi there"]), "hi there");
    assert_eq!(redis_cli(p, &["SET", "greeting", "hello"]), "OK");
    assert_eq!(redis_cli(p, &["GET", "greeting"]), "hello");
    assert_eq!(redis_cli(p, &["INCR", "counter"]), "1");
    assert_eq!(redis_cli(p, &["INCRBY", "counter", "41"]), "42");
    assert_eq!(redis_cli(p, &["LPUSH", "list", "a", "b", "c"]), "3");
    assert_eq!(redis_cli(p, &["LRANGE", "list", "0", "-1"]), "c\nb\na");
    // Multi-key commands: split per key, merged in order.
    assert_eq!(
        redis_cli(p, &["MSET", "k1", "v1", "k2", "v2", "k3", "v3", "k4", "v4"]),
        "OK"
    );
    assert_eq!(
        redis_cli(p, &["MGET", "k1", "nope", "k3", "k2", "k4"]),
        "v1\n\nv3\nv2\nv4"
    );
    assert_eq!(redis_cli(p, &["EXISTS", "k1", "k2", "nope"]), "2");
    assert_eq!(redis_cli(p, &["DEL", "k1", "k2", "k3", "nope"]), "3");
    assert_eq!(redis_cli(p, &["MGET", "k1", "k4"]), "\nv4");
    // Commands needing connection state get an error naming them, never a hang.
    assert!(redis_cli(p, &["MULTI"]).contains("'multi' is not supported"));
    assert!(redis_cli(p, &["BLPOP", "list", "0"]).contains("'blpop' is not supported"));
    assert!(redis_cli(p, &["SELECT", "1"]).contains("'select' is not supported"));
    assert!(redis_cli(p, &["NOSUCHCMD"]).contains("unknown or unsupported command 'nosuchcmd'"));
    // Every key lives on exactly one backend.
    for key in ["greeting", "counter", "list", "k4"] {
        let homes = servers
            .iter()
            .filter(|s| redis_cli(s.addr, &["EXISTS", key]) == "1")
            .count();
        assert_eq!(homes, 1, "{key} on {homes} backends");
    }
}

#[test]
fn keys_spread_and_stay_put_under_redis_benchmark() {
    let servers: Vec<Server> = (0..3).map(|_| redis(None)).collect();
    let proxy = proxy_for(&servers, "", "");
    let port = proxy.addr("redis").port().to_string();
    for pipeline in ["1", "16"] {
        let (ok, out) = run(
            "redis-benchmark",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-c",
                "20",
                "-n",
                "20000",
                "-r",
                "3000",
                "-P",
                pipeline,
                "-t",
                "set,get,incr,lpush,mset",
                "-q",
            ],
        );
        assert!(
            ok && out.contains("requests per second") && !out.to_lowercase().contains("error"),
            "{out}"
        );
    }
    let (ok, out) = run(
        "redis-benchmark",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-c",
            "10",
            "-n",
            "5000",
            "-q",
            "MGET",
            "key:1",
            "key:2",
            "key:3",
        ],
    );
    assert!(ok && !out.to_lowercase().contains("error"), "{out}");
    let counts: Vec<u64> = servers.iter().map(keys_on).collect();
    let total: u64 = counts.iter().sum();
    assert!(total > 2000, "{counts:?}");
    for c in &counts {
        assert!(*c as f64 > total as f64 / 3.0 * 0.6, "uneven: {counts:?}");
    }
    // No key on two backends.
    for i in (0..3000).step_by(97) {
        let key = format!("key:{i:012}");
        let homes = servers
            .iter()
            .filter(|s| redis_cli(s.addr, &["EXISTS", &key]) == "1")
            .count();
        assert!(homes <= 1, "{key} on {homes} backends");
    }
}

#[test]
fn backend_and_client_passwords() {
    let servers: Vec<Server> = (0..2).map(|_| redis(Some("backend-secret"))).collect();
    let proxy = proxy_for(
        &servers,
        "backend_password = \"backend-secret\"",
        "password = \"client-secret\"",
    );
    let p = proxy.addr("redis");
    assert!(redis_cli(p, &["GET", "x"]).contains("NOAUTH"));
    let as_user = |password: &str, args: &[&str]| {
        let mut all = vec!["-a", password, "--no-auth-warning"];
        all.extend_from_slice(args);
        redis_cli(p, &all)
    };
    let out = as_user("wrong", &["GET", "x"]);
    assert!(out.contains("WRONGPASS"), "{out}");
    assert_eq!(as_user("client-secret", &["SET", "x", "1"]), "OK");
    assert_eq!(as_user("client-secret", &["GET", "x"]), "1");
}

fn calls(server: &Server, command: &str) -> u64 {
    info_number(server, "commandstats", &format!("cmdstat_{command}:calls="))
}

/// Multi-key commands are split per backend, not per key: one MSET, MGET, DEL and EXISTS
/// reaches each backend holding some of the keys once, with all of that backend's keys,
/// and the merged answer is in the client's key order.
#[test]
fn multi_key_commands_go_once_to_each_backend() {
    let servers: Vec<Server> = (0..3).map(|_| redis(None)).collect();
    let list: Vec<String> = servers
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{{ address = \"{}\", name = \"r{i}\" }}", s.addr))
        .collect();
    let proxy = one_worker_proxy(&list, "policy = \"ketama\"");
    let p = proxy.addr("redis");
    let keys: Vec<String> = (0..30).map(|i| format!("user:{i}")).collect();
    let mut mset = vec!["MSET".to_string()];
    for k in &keys {
        mset.push(k.clone());
        mset.push(format!("v-{k}"));
    }
    let args: Vec<&str> = mset.iter().map(String::as_str).collect();
    assert_eq!(redis_cli(p, &args), "OK");
    // The keys spread over the backends (not vacuous: at least two hold some), and each
    // backend holding keys got all of them in one MSET.
    let held: Vec<u64> = servers.iter().map(keys_on).collect();
    assert_eq!(held.iter().sum::<u64>(), 30, "{held:?}");
    assert!(held.iter().filter(|n| **n > 0).count() >= 2, "{held:?}");
    for (s, n) in servers.iter().zip(&held) {
        assert_eq!(calls(s, "mset"), u64::from(*n > 0), "{held:?}");
    }
    // MGET in a mixed order with misses: one MGET per backend, answers in key order.
    let mut asked: Vec<String> = keys.iter().rev().cloned().collect();
    asked.insert(3, "missing:a".into());
    asked.push("missing:b".into());
    let mut mget = vec!["MGET"];
    mget.extend(asked.iter().map(String::as_str));
    let want: Vec<String> = asked
        .iter()
        .map(|k| {
            if k.starts_with("missing") {
                String::new()
            } else {
                format!("v-{k}")
            }
        })
        .collect();
    // (redis_cli trims the output: the last, missing key's empty line goes.)
    assert_eq!(redis_cli(p, &mget), want.join("\n").trim_end());
    for (s, n) in servers.iter().zip(&held) {
        assert_eq!(calls(s, "mget"), u64::from(*n > 0), "{held:?}");
    }
    let mut exists = vec!["EXISTS"];
    exists.extend(asked.iter().map(String::as_str));
    assert_eq!(redis_cli(p, &exists), "30");
    let mut del = vec!["DEL"];
    del.extend(asked.iter().map(String::as_str));
    assert_eq!(redis_cli(p, &del), "30");
    for s in &servers {
        assert!(calls(s, "exists") <= 1 && calls(s, "del") <= 1);
        assert_eq!(keys_on(s), 0);
    }
}

/// `backend_db`: every backend connection selects that database before carrying requests
/// (twemproxy's `redis_db`); a database the server does not have fails the connection with
/// the server's own message in the log.
#[test]
fn backend_db_selects_the_database_on_every_backend_connection() {
    let servers: Vec<Server> = (0..2).map(|_| redis(None)).collect();
    let proxy = proxy_for(&servers, "backend_db = 3", "");
    let p = proxy.addr("redis");
    for i in 0..20 {
        assert_eq!(redis_cli(p, &["SET", &format!("k{i}"), "v"]), "OK");
    }
    assert_eq!(redis_cli(p, &["GET", "k7"]), "v");
    let in_db3: u64 = servers
        .iter()
        .map(|s| info_number(s, "keyspace", "db3:keys="))
        .sum();
    assert_eq!(in_db3, 20);
    assert_eq!(servers.iter().map(keys_on).sum::<u64>(), 0, "keys in db0");
    // Out of range (redis-server has 16 databases by default).
    let bad = proxy_for(&servers, "backend_db = 99", "");
    let _ = redis_cli(bad.addr("redis"), &["GET", "k7"]);
    eventually(
        "the refusal to be logged",
        std::time::Duration::from_secs(5),
        || {
            bad.stderr()
                .contains("SELECT refused: -ERR DB index is out of range")
        },
    );
}

/// One RESP command on an open connection; its first answer line (enough for status,
/// error and integer replies).
fn ask_line(conn: &mut std::io::BufReader<std::net::TcpStream>, args: &[&str]) -> String {
    use std::io::{BufRead, Write};
    let mut cmd = format!("*{}\r\n", args.len());
    for a in args {
        cmd.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    conn.get_mut().write_all(cmd.as_bytes()).unwrap();
    let mut line = String::new();
    conn.read_line(&mut line).unwrap();
    line
}

/// A backend that dies with a request in flight, and then no backend at all: each request
/// gets a RESP error in its place, as from twemproxy, and the client's connection stays
/// open (PING still answered, order kept).
#[test]
fn failed_requests_get_resp_errors_and_the_connection_stays() {
    use std::io::BufRead;
    let server = redis(None);
    // The proxy reaches the server through a relay, which shows the GET reach the server.
    let relay = Relay::start(server.addr);
    let proxy = proxy_for_addrs(&[relay.addr], "", "");
    let conn = std::net::TcpStream::connect(proxy.addr("redis")).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut conn = std::io::BufReader::new(conn);
    assert_eq!(ask_line(&mut conn, &["SET", "a", "1"]), "+OK\r\n");
    // Pause the server's clients, put a GET in flight behind the pause, kill the server.
    assert_eq!(
        redis_cli(server.addr, &["CLIENT", "PAUSE", "5000", "ALL"]),
        "OK"
    );
    let forwarded = relay.forwarded();
    {
        use std::io::Write;
        conn.get_mut()
            .write_all(b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n*1\r\n$4\r\nPING\r\n")
            .unwrap();
    }
    eventually(
        "the GET to reach the server",
        std::time::Duration::from_secs(5),
        || relay.forwarded() > forwarded,
    );
    drop(server);
    let mut line = String::new();
    conn.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("-ERR backend ") && line.contains("failed"),
        "{line:?}"
    );
    line.clear();
    conn.read_line(&mut line).unwrap();
    assert_eq!(line, "+PONG\r\n", "the answer after the error, in order");
    // No backend left: refused with an error, the connection still open.
    let refused = ask_line(&mut conn, &["GET", "a"]);
    assert!(refused.starts_with("-ERR "), "{refused:?}");
    assert_eq!(ask_line(&mut conn, &["PING"]), "+PONG\r\n");
}

#[test]
fn a_clients_pipelined_writes_and_reads_keep_their_order_over_a_pool() {
    // Four connections to the one server: a client's SET and the GET after it must not race
    // over two of them (found by the soak run: the GET overtook the SET and read nil).
    use std::io::{Read, Write};
    let server = redis(None);
    let proxy = proxy_for(
        std::slice::from_ref(&server),
        "pool = { connections_per_backend = 4 }",
        "",
    );
    let p = proxy.addr("redis");
    let mut clients: Vec<std::net::TcpStream> = (0..4)
        .map(|_| std::net::TcpStream::connect(p).unwrap())
        .collect();
    let mut expected: Vec<Vec<u8>> = vec![Vec::new(); clients.len()];
    for (c, s) in clients.iter_mut().enumerate() {
        let mut pipeline = Vec::new();
        for i in 0..500 {
            let key = format!("order:{c}:{}", i % 7);
            let value = format!("v{i}");
            for cmd in [
                vec!["SET", key.as_str(), value.as_str()],
                vec!["GET", key.as_str()],
            ] {
                pipeline.extend_from_slice(format!("*{}\r\n", cmd.len()).as_bytes());
                for a in cmd {
                    pipeline.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
                }
            }
            expected[c].extend_from_slice(b"+OK\r\n");
            expected[c].extend_from_slice(format!("${}\r\n{value}\r\n", value.len()).as_bytes());
        }
        s.write_all(&pipeline).unwrap();
    }
    for (c, s) in clients.iter_mut().enumerate() {
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut got = vec![0u8; expected[c].len()];
        s.read_exact(&mut got).unwrap();
        assert!(
            got == expected[c],
            "client {c}: answers differ from the first at byte {:?}",
            got.iter().zip(&expected[c]).position(|(a, b)| a != b)
        );
    }
}

#[test]
fn redis_fidelity_empty_lines_large_values_and_oversized_requests() {
    use std::io::{BufRead, Read, Write};
    let server = redis(None);
    // The proxy reaches the server through a relay, which shows the GET reach the server.
    let relay = Relay::start(server.addr);
    let proxy = proxy_for_addrs(&[relay.addr], "", "");
    let conn = std::net::TcpStream::connect(proxy.addr("redis")).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut conn = std::io::BufReader::new(conn);
    // A bare CR LF is ignored, as Redis 7 does: the PING after it is the first answer.
    conn.get_mut().write_all(b"\r\n").unwrap();
    assert_eq!(ask_line(&mut conn, &["PING"]), "+PONG\r\n");
    // A 16 MB value, with the default config (Redis takes bulk strings up to 512 MB).
    let value = vec![b'x'; 16 << 20];
    let mut set = format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${}\r\n", value.len()).into_bytes();
    set.extend_from_slice(&value);
    set.extend_from_slice(b"\r\n");
    conn.get_mut().write_all(&set).unwrap();
    let mut line = String::new();
    conn.read_line(&mut line).unwrap();
    assert_eq!(line, "+OK\r\n");
    conn.get_mut()
        .write_all(b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n")
        .unwrap();
    line.clear();
    conn.read_line(&mut line).unwrap();
    assert_eq!(line, format!("${}\r\n", value.len()));
    let mut got = vec![0u8; value.len() + 2];
    conn.read_exact(&mut got).unwrap();
    assert!(got[..value.len()] == value[..]);
    // Over a configured max_frame_size: Redis's own kind of error, then the connection
    // closes (as Redis does for a request past its limits).
    let small = proxy_for(std::slice::from_ref(&server), "", "max_frame_size = 65536");
    let conn = std::net::TcpStream::connect(small.addr("redis")).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut conn = std::io::BufReader::new(conn);
    assert_eq!(ask_line(&mut conn, &["SET", "a", "1"]), "+OK\r\n");
    let mut set = b"*3\r\n$3\r\nSET\r\n$1\r\nb\r\n$100000\r\n".to_vec();
    set.extend_from_slice(&vec![b'y'; 100_000]);
    set.extend_from_slice(b"\r\n");
    let _ = conn.get_mut().write_all(&set);
    line.clear();
    conn.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("-ERR Protocol error: a request of"),
        "{line:?}"
    );
    assert!(closed_within(
        conn.get_ref(),
        std::time::Duration::from_secs(5)
    ));
}

/// A request Redis answers with a protocol error and then closes its connection on (an
/// inline command with unbalanced quotes, which the proxy's framing takes as a `GET`):
/// on the one connection every client shares, the bystanders' reads in flight behind it
/// are re-sent and answered; only the poisoning client sees an error (Redis's own).
#[test]
fn a_request_redis_closes_on_costs_the_clients_sharing_its_connection_nothing() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::time::{Duration, Instant};
    let server = redis(None);
    let backend = format!("{{ address = \"{}\" }}", server.addr);
    let proxy = one_worker_proxy(&[backend], "pool = { connections_per_backend = 1 }");
    let p = proxy.addr("redis");
    for i in 0..50 {
        assert_eq!(
            redis_cli(
                server.addr,
                &["SET", &format!("k{i}"), &format!("value-{i}")]
            ),
            "OK"
        );
    }
    let until = Instant::now() + Duration::from_secs(4);
    let bystanders: Vec<_> = (0..6)
        .map(|c| {
            std::thread::spawn(move || -> Result<usize, String> {
                let s = std::net::TcpStream::connect(p).map_err(|e| e.to_string())?;
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                let mut right = 0;
                let mut n: usize = c * 7;
                while Instant::now() < until {
                    let mut batch = Vec::new();
                    let mut want = Vec::new();
                    for _ in 0..16 {
                        let i = n % 50;
                        n += 1;
                        let key = format!("k{i}");
                        batch.extend_from_slice(
                            format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).as_bytes(),
                        );
                        want.push(format!("value-{i}"));
                    }
                    w.write_all(&batch).map_err(|e| e.to_string())?;
                    for v in want {
                        let mut head = String::new();
                        r.read_line(&mut head).map_err(|e| e.to_string())?;
                        if head != format!("${}\r\n", v.len()) {
                            return Err(format!("GET of {v:?} got {head:?}"));
                        }
                        let mut body = vec![0u8; v.len() + 2];
                        r.read_exact(&mut body).map_err(|e| e.to_string())?;
                        if body != format!("{v}\r\n").as_bytes() {
                            return Err(format!("GET of {v:?} got {body:?}"));
                        }
                        right += 1;
                    }
                }
                Ok(right)
            })
        })
        .collect();
    let mut poisoned = Vec::new();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(1100));
        let s = std::net::TcpStream::connect(p).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        (&s).write_all(b"GET \"abc\r\n").unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        poisoned.push(line);
    }
    for (c, b) in bystanders.into_iter().enumerate() {
        let right = b
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("bystander {c}: {e}"));
        assert!(right > 0, "bystander {c} got answers");
    }
    for line in &poisoned {
        assert_eq!(
            line,
            "-ERR Protocol error: unbalanced quotes in request\r\n"
        );
    }
    let log = proxy.stderr();
    assert_eq!(
        occurrences(&log, "backend connection lost backend"),
        3,
        "each poison reached Redis and closed the shared connection: {log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("with requests in flight") && !l.contains("probation=0")),
        "bystanders' reads were in flight behind the poison, and were re-sent: {log}"
    );
}
