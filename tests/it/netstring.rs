//! The `netstring` codec end to end: `LEN:PAYLOAD,` requests whose first 8 payload bytes are
//! the session key, answered by netstring echo backends that prefix their name; every
//! answer comes back in order and each key stays on one backend; a malformed frame closes
//! only its client; `check` names a bad `key_bytes`.

use crate::support::*;
use std::collections::{HashMap, HashSet};
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

fn netstring(payload: &[u8]) -> Vec<u8> {
    let mut v = format!("{}:", payload.len()).into_bytes();
    v.extend_from_slice(payload);
    v.push(b',');
    v
}

/// Reads one netstring's payload; `None` at end of stream.
fn read_netstring(r: &mut impl Read) -> Option<Vec<u8>> {
    let mut len = 0usize;
    let mut byte = [0u8; 1];
    loop {
        r.read_exact(&mut byte).ok()?;
        match byte[0] {
            b':' => break,
            d @ b'0'..=b'9' => len = len * 10 + usize::from(d - b'0'),
            other => panic!("not a netstring length byte: {other}"),
        }
    }
    let mut payload = vec![0u8; len + 1];
    r.read_exact(&mut payload).ok()?;
    assert_eq!(payload.pop(), Some(b','), "a netstring ends with ','");
    Some(payload)
}

/// A netstring backend on its own thread: answers each payload `P` with `NAME|P`. Ends
/// with the test process.
fn echo_backend(name: &'static str) -> SocketAddr {
    serve_each(move |conn| {
        let mut w = conn.try_clone().unwrap();
        let mut r = BufReader::new(conn);
        while let Some(p) = read_netstring(&mut r) {
            let mut answer = format!("{name}|").into_bytes();
            answer.extend_from_slice(&p);
            if w.write_all(&netstring(&answer)).is_err() {
                return;
            }
        }
    })
}

fn config(addrs: &[SocketAddr], key_bytes: u32) -> String {
    let list: Vec<String> = addrs
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect();
    format!(
        r#"workers = 2
[[listener]]
name = "ns"
listen = "127.0.0.1:0"
cluster = "ns"
[listener.codec]
kind = "netstring"
key_bytes = {key_bytes}

[[cluster]]
name = "ns"
policy = "round_robin"
backends = [{}]
[cluster.persistence]
"#,
        list.join(", ")
    )
}

#[test]
fn keyed_netstrings_are_answered_in_order_and_each_key_keeps_its_backend() {
    let addrs = [echo_backend("n1"), echo_backend("n2"), echo_backend("n3")];
    let proxy = Proxy::start(&config(&addrs, 8));
    let addr = proxy.addr("ns");
    let clients: Vec<_> = (0..8)
        .map(|c| {
            std::thread::spawn(move || {
                let (mut w, mut r) = connect_split(addr);
                let mut homes: HashMap<String, HashSet<String>> = HashMap::new();
                for round in 0..25 {
                    // Pipelined: one write of 16 requests over 16 keys.
                    let mut batch = Vec::new();
                    let mut sent = Vec::new();
                    for k in 0..16 {
                        let payload = format!("key{k:05}c{c}r{round}");
                        batch.extend_from_slice(&netstring(payload.as_bytes()));
                        sent.push(payload);
                    }
                    w.write_all(&batch).unwrap();
                    for payload in sent {
                        let answer = read_netstring(&mut r).expect("an answer");
                        let answer = String::from_utf8(answer).unwrap();
                        let (backend, echoed) = answer.split_once('|').expect("NAME|payload");
                        assert_eq!(echoed, payload, "answers come back in request order");
                        homes
                            .entry(payload[..8].to_string())
                            .or_default()
                            .insert(backend.to_string());
                    }
                }
                homes
            })
        })
        .collect();
    let mut used = HashSet::new();
    for c in clients {
        for (key, backends) in c.join().unwrap() {
            assert_eq!(backends.len(), 1, "key {key} reached {backends:?}");
            used.extend(backends);
        }
    }
    assert!(used.len() > 1, "keys spread over the backends: {used:?}");
}

#[test]
fn a_malformed_netstring_closes_only_its_client() {
    let addrs = [echo_backend("n1"), echo_backend("n2")];
    let proxy = Proxy::start(&config(&addrs, 4));
    let addr = proxy.addr("ns");
    let good = TcpStream::connect(addr).unwrap();
    good.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut bad = TcpStream::connect(addr).unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    bad.write_all(b"5:hello;").unwrap();
    assert!(
        closed_within(&bad, Duration::from_secs(5)),
        "the bad client is closed"
    );
    let mut w = good.try_clone().unwrap();
    w.write_all(&netstring(b"abcdefgh")).unwrap();
    let answer = read_netstring(&mut BufReader::new(good)).expect("the good client is served");
    assert!(answer.ends_with(b"|abcdefgh"), "{answer:?}");
    eventually("the reason is logged", Duration::from_secs(5), || {
        proxy.stderr().contains("a netstring must end with ','")
    });
}

#[test]
fn check_names_a_bad_key_bytes() {
    let ok = TempFile::new("ns-ok.toml", &config(&[echo_backend("n1")], 8));
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&ok.0)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = TempFile::new("ns-bad.toml", &config(&[echo_backend("n1")], 0));
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&bad.0)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("listener.ns.codec.key_bytes: must be at least 1"),
        "{err}"
    );
}
