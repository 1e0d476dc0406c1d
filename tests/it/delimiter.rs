//! A line protocol end to end through the `delimiter` codec: `ID KEY TEXT\r\n` requests,
//! `ID BACKEND TEXT\r\n` answers, colliding ids rewritten by the proxy, keys pinned.

use crate::support::*;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::time::Duration;

/// A line backend on its own thread: answers each line with its id token, its name and
/// the rest of the line. Ends when the test process ends.
fn line_backend(name: &'static str) -> SocketAddr {
    serve_each(move |conn| {
        let mut w = conn.try_clone().unwrap();
        for line in BufReader::new(conn).lines() {
            let Ok(line) = line else { return };
            let line = line.trim_end_matches('\r');
            let mut parts = line.splitn(3, ' ');
            let (id, _key, text) = (
                parts.next().unwrap_or(""),
                parts.next(),
                parts.next().unwrap_or(""),
            );
            if w.write_all(format!("{id} {name} {text}\r\n").as_bytes())
                .is_err()
            {
                return;
            }
        }
    })
}

#[test]
fn line_protocol_by_id_with_pinned_keys() {
    let addrs = [line_backend("L1"), line_backend("L2"), line_backend("L3")];
    let cfg = format!(
        r#"workers = 2
[[listener]]
name = "lines"
listen = "127.0.0.1:0"
cluster = "lines"
correlation = "by_id"
[listener.codec]
kind = "delimiter"
delimiter = "\r\n"
id_token = 0
key_token = 1
[listener.response_codec]
kind = "delimiter"
delimiter = "\r\n"
id_token = 0

[[cluster]]
name = "lines"
policy = "round_robin"
backends = [{{ address = "{}" }}, {{ address = "{}" }}, {{ address = "{}" }}]
[cluster.persistence]
ttl = "1m"
"#,
        addrs[0], addrs[1], addrs[2]
    );
    let proxy = Proxy::start(&cfg);
    let addr = proxy.addr("lines");
    let handles: Vec<_> = (0..16)
        .map(|c| {
            std::thread::spawn(move || {
                let (mut w, mut r) = connect_split(addr);
                let mut homes: HashMap<String, HashSet<String>> = HashMap::new();
                for round in 0..20 {
                    // A pipelined batch; every client uses the same ids 0..10.
                    let mut batch = String::new();
                    for i in 0..10 {
                        batch.push_str(&format!("{i} user{c}-{} hello-{c}-{round}-{i}\r\n", i % 3));
                    }
                    w.write_all(batch.as_bytes()).unwrap();
                    let mut got = Vec::new();
                    for _ in 0..10 {
                        let mut line = String::new();
                        r.read_line(&mut line).unwrap();
                        got.push(line);
                    }
                    got.sort_by_key(|l| l.split(' ').next().unwrap().parse::<u32>().unwrap());
                    for (i, line) in got.iter().enumerate() {
                        let parts: Vec<&str> = line.trim_end().split(' ').collect();
                        assert_eq!(parts[0], i.to_string(), "client id restored: {line:?}");
                        assert_eq!(
                            parts[2],
                            format!("hello-{c}-{round}-{i}"),
                            "own answer: {line:?}"
                        );
                        homes
                            .entry(format!("user{c}-{}", i % 3))
                            .or_default()
                            .insert(parts[1].to_string());
                    }
                }
                homes
            })
        })
        .collect();
    let mut all_backends = HashSet::new();
    for h in handles {
        for (key, names) in h.join().unwrap() {
            assert_eq!(names.len(), 1, "key {key} answered by {names:?}");
            all_backends.extend(names);
        }
    }
    assert_eq!(all_backends.len(), 3, "48 keys spread over all backends");
}

/// Under `by_id`, a request without an id cannot be answered: it is forwarded one-way
/// (docs/config.md), and the client's requests with ids go on being answered.
#[test]
fn a_by_id_request_without_an_id_goes_one_way() {
    let seen: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let log = seen.clone();
    let backend = serve_each(move |conn| {
        let mut w = conn.try_clone().unwrap();
        for line in BufReader::new(conn).lines() {
            let Ok(line) = line else { return };
            log.lock().unwrap().push(line.clone());
            // Answer only lines with an id (a line of blanks has none).
            if let Some(id) = line.split_whitespace().next() {
                if w.write_all(format!("{id} ok\r\n").as_bytes()).is_err() {
                    return;
                }
            }
        }
    });
    let cfg = format!(
        r#"[[listener]]
name = "lines"
listen = "127.0.0.1:0"
cluster = "lines"
correlation = "by_id"
[listener.codec]
kind = "delimiter"
delimiter = "\r\n"
id_token = 0
[[cluster]]
name = "lines"
backends = [{{ address = "{backend}" }}]
"#
    );
    let proxy = Proxy::start(&cfg);
    let (mut w, mut r) = connect_split(proxy.addr("lines"));
    w.write_all(b"a1 first\r\n   \r\nb2 second\r\n").unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        got.push(line);
    }
    got.sort(); // by_id: answers come as they come
    assert_eq!(
        got,
        ["a1 ok\r\n", "b2 ok\r\n"],
        "both requests with ids answered"
    );
    eventually(
        "the id-less line reaches the backend too",
        Duration::from_secs(5),
        || seen.lock().unwrap().len() == 3,
    );
    let seen = seen.lock().unwrap();
    assert!(seen.iter().any(|l| l.trim().is_empty()), "{seen:?}");
    assert!(!proxy.stderr().contains("ERROR"), "{}", proxy.stderr());
}
