//! A key's backend never changes because a queue is full: pinned keys (demo protocol) and
//! hashed keys (`ketama`, `maglev` in front of real redis-servers) wait for their backend
//! under back-pressure, while clients whose keys live elsewhere keep flowing.

use crate::servers::{redis, redis_cli, Server};
use crate::support::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use switchyard::demo::backend::TestBackend;
use switchyard::demo::proto;

/// Which backend answered a demo answer frame.
fn answered_by(frame: &[u8]) -> String {
    let m = proto::parse(frame).unwrap();
    String::from_utf8_lossy(proto::answer_parts(m.rest).unwrap().0).into_owned()
}

/// Reads `n` demo frames from `s`.
fn read_demo(s: &mut TcpStream, n: usize) -> Vec<Vec<u8>> {
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut out = Vec::new();
    let mut buf = Vec::new();
    while out.len() < n {
        let mut chunk = vec![0u8; 1 << 16];
        let k = s.read(&mut chunk).unwrap();
        assert!(k > 0, "closed after {} answers", out.len());
        buf.extend_from_slice(&chunk[..k]);
        while buf.len() >= 4 {
            let len = 4 + u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
            if buf.len() < len {
                break;
            }
            out.push(buf.drain(..len).collect());
        }
    }
    out
}

#[test]
fn a_pinned_key_waits_for_its_full_backend_and_other_keys_keep_flowing() {
    // Slow backends (10 ms per read) and a 1 MiB queue per backend connection: 40 messages
    // of 400 KB for one key fill its backend's queue many times over.
    let slow: Vec<TestBackend> = (1..=3)
        .map(|i| TestBackend::start_slow(&format!("s{i}"), false, Duration::from_millis(10)))
        .collect::<Result<_, _>>()
        .unwrap();
    let Running {
        proxy,
        backends: bs,
    } = Scenario::new()
        .policy("least_outstanding")
        .persistence("10m")
        .max_queued_bytes(1048576)
        .start_with(slow);
    let addr = proxy.addr("app");
    // Pin key 7, and keys 100.. for the small client, with one small message each.
    let mut big = TcpStream::connect(addr).unwrap();
    let mut pinned = std::collections::HashMap::new();
    for (i, key) in std::iter::once(7).chain(100..130).enumerate() {
        let mut req = Vec::new();
        proto::write_request(&mut req, key, i as u32, b"pin me");
        big.write_all(&req).unwrap();
        pinned.insert(key, answered_by(&read_demo(&mut big, 1)[0]));
    }
    let home = pinned[&7].clone();
    // The small client's keys: those pinned elsewhere.
    let elsewhere: Vec<u64> = (100..130).filter(|k| pinned[k] != home).take(10).collect();
    assert!(elsewhere.len() >= 5, "{pinned:?}");
    let sender = std::thread::spawn(move || {
        let payload = vec![b'x'; 400_000];
        let mut req = Vec::new();
        for i in 1..=40u32 {
            proto::write_request(&mut req, 7, i, &payload);
        }
        big.write_all(&req).unwrap();
        let answers = read_demo(&mut big, 40);
        (answers, Instant::now())
    });
    // Once key 7's backend is busy with the big messages, the small client runs.
    eventually(
        "the big messages to reach their backend",
        Duration::from_secs(30),
        || bs.iter().map(TestBackend::messages).sum::<u64>() >= 33,
    );
    let small = run_clients(addr, vec![plan(100, 10, elsewhere, 2, true)]);
    let small_done = Instant::now();
    for r in &small {
        assert_clean(r);
    }
    let (answers, big_done) = sender.join().unwrap();
    // Every one of key 7's messages went to its pinned backend, none elsewhere.
    for a in &answers {
        assert_eq!(answered_by(a), home, "a message of key 7 left its backend");
    }
    for b in &bs {
        let n = b.log.per_key.lock().unwrap().get(&7).copied().unwrap_or(0);
        if b.name == home {
            assert_eq!(n, 41);
        } else {
            assert_eq!(n, 0, "{} got {n} messages of key 7", b.name);
        }
    }
    for r in &small {
        assert!(!r.per_backend.contains_key(&home), "{:?}", r.per_backend);
    }
    assert!(
        !proxy.stderr().contains("session moved"),
        "{}",
        proxy.stderr()
    );
    // The small client was not held up behind the full queue.
    assert!(
        small_done < big_done,
        "the small client finished after the saturated one"
    );
}

/// A RESP command.
fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        v.extend_from_slice(a);
        v.extend_from_slice(b"\r\n");
    }
    v
}

fn keys_in(server: &Server) -> u64 {
    redis_cli(server.addr, &["DBSIZE"]).parse().unwrap()
}

/// Forty 900 KB SETs pipelined for keys that all hash to one server (a 1 MiB queue to it):
/// every one lands on that server, every GET through the proxy reads it back, and a client
/// writing keys of the other servers meanwhile is answered.
fn hashed_keys_wait_for_their_full_server(policy: &str) {
    let servers: Vec<Server> = (0..3).map(|_| redis(None)).collect();
    let list: Vec<String> = servers
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{{ address = \"{}\", name = \"r{i}\" }}", s.addr))
        .collect();
    let proxy = Proxy::start(&format!(
        "workers = 1\n[[listener]]\nname = \"redis\"\nlisten = \"127.0.0.1:0\"\ncluster = \"redis\"\n\
         [listener.codec]\nkind = \"resp\"\n[[cluster]]\nname = \"redis\"\npolicy = \"{policy}\"\n\
         backends = [{}]\npool = {{ max_queued_bytes = 1048576 }}\n",
        list.join(", ")
    ));
    let named = [("r0", 1), ("r1", 1), ("r2", 1)];
    let home = |k: &str| match policy {
        "ketama" => switchyard_core::balance::Continuum::new(&named).server_for(k.as_bytes()),
        _ => switchyard_core::balance::Maglev::new(&named).backend_for(k.as_bytes()),
    };
    let keys: Vec<String> = (0..)
        .map(|i| format!("big:{i}"))
        .filter(|k| home(k) == Some(0))
        .take(40)
        .collect();
    let others: Vec<String> = (0..)
        .map(|i| format!("small:{i}"))
        .filter(|k| home(k) != Some(0))
        .take(50)
        .collect();
    let addr = proxy.addr("redis");
    let value = vec![b'v'; 900_000];
    let writer = {
        let keys = keys.clone();
        std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            let mut pipeline = Vec::new();
            for k in &keys {
                pipeline.extend_from_slice(&command(&[b"SET", k.as_bytes(), &value]));
            }
            s.write_all(&pipeline).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            let mut got = vec![0u8; 5 * keys.len()];
            s.read_exact(&mut got).unwrap();
            assert_eq!(String::from_utf8_lossy(&got), "+OK\r\n".repeat(keys.len()));
        })
    };
    // Meanwhile, keys of the other servers.
    let mut s = TcpStream::connect(addr).unwrap();
    let mut pipeline = Vec::new();
    for k in &others {
        pipeline.extend_from_slice(&command(&[b"SET", k.as_bytes(), b"small"]));
    }
    s.write_all(&pipeline).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut got = vec![0u8; 5 * others.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        "+OK\r\n".repeat(others.len())
    );
    writer.join().unwrap();
    // 0 of the 40 landed elsewhere.
    let on_first = redis_cli(servers[0].addr, &["KEYS", "big:*"]);
    assert_eq!(on_first.lines().count(), 40, "{policy}: {on_first}");
    for s in &servers[1..] {
        assert_eq!(redis_cli(s.addr, &["KEYS", "big:*"]), "", "{policy}");
    }
    assert_eq!(
        keys_in(&servers[0]) + keys_in(&servers[1]) + keys_in(&servers[2]),
        90
    );
    // Read back through the proxy: every value is there.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    for k in &keys {
        s.write_all(&command(&[b"STRLEN", k.as_bytes()])).unwrap();
        let mut line = [0u8; 9];
        s.read_exact(&mut line).unwrap();
        assert_eq!(&line, b":900000\r\n", "{policy}: {k}");
    }
}

#[test]
fn ketama_keys_wait_for_their_full_server() {
    hashed_keys_wait_for_their_full_server("ketama");
}

#[test]
fn maglev_keys_wait_for_their_full_server() {
    hashed_keys_wait_for_their_full_server("maglev");
}

#[test]
fn a_down_servers_keys_fail_by_default_under_ketama_and_mget_gets_one_error() {
    let mut servers: Vec<Server> = (0..3).map(|_| redis(None)).collect();
    let list: Vec<String> = servers
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{{ address = \"{}\", name = \"r{i}\" }}", s.addr))
        .collect();
    let proxy = Proxy::start(&format!(
        "workers = 1\n[[listener]]\nname = \"redis\"\nlisten = \"127.0.0.1:0\"\ncluster = \"redis\"\n\
         [listener.codec]\nkind = \"resp\"\n[[cluster]]\nname = \"redis\"\npolicy = \"ketama\"\n\
         backends = [{}]\npool = {{ reconnect_backoff_min = \"5s\", reconnect_backoff_max = \"5s\" }}\n",
        list.join(", ")
    ));
    let named = [("r0", 1), ("r1", 1), ("r2", 1)];
    let ring = switchyard_core::balance::Continuum::new(&named);
    let on = |n: usize| {
        (0..)
            .map(|i| format!("k{i}"))
            .find(|k| ring.server_for(k.as_bytes()) == Some(n))
            .unwrap()
    };
    let (k0, k1) = (on(0), on(1));
    let p = proxy.addr("redis");
    assert_eq!(redis_cli(p, &["SET", &k0, "zero"]), "OK");
    assert_eq!(redis_cli(p, &["SET", &k1, "one"]), "OK");
    drop(servers.remove(0));
    // (A GET racing the connection's loss fails as "backend r0 failed"; then as down.)
    eventually("r0 to be seen down", Duration::from_secs(10), || {
        redis_cli(p, &["GET", &k0]).starts_with("ERR the key's backend r0 is unavailable")
    });
    // Nothing was written elsewhere meanwhile.
    assert!(redis_cli(p, &["SET", &k0, "elsewhere"]).starts_with("ERR "));
    for s in &servers {
        assert_eq!(redis_cli(s.addr, &["EXISTS", &k0]), "0");
    }
    assert_eq!(redis_cli(p, &["GET", &k1]), "one");
    // A multi-key command with one part failed: one error, not an array holding it.
    let mget = redis_cli(p, &["MGET", &k1, &k0]);
    assert!(mget.starts_with("ERR "), "{mget}");
    assert_eq!(mget.lines().count(), 1, "{mget}");
}
