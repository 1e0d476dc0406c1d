//! A backend message that answers nothing goes to the client that owns its key's session,
//! across workers if need be, and to no one else.

use crate::support::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use switchyard::demo::proto;

/// Sends one request with `payload` and reads frames until `want_pushes` pushes and the
/// answer arrived, or `wait` passed. Returns (answers, pushes).
fn exchange(
    addr: std::net::SocketAddr,
    key: u64,
    payload: &[u8],
    want_pushes: usize,
    wait: Duration,
) -> (usize, usize) {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = Vec::new();
    proto::write_request(&mut req, key, 5, payload);
    s.write_all(&req).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let (mut answers, mut pushes) = (0, 0);
    let mut buf = Vec::new();
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline && !(answers == 1 && pushes >= want_pushes && want_pushes > 0) {
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => continue,
        }
        while buf.len() >= 4 {
            let len = 4 + u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
            if buf.len() < len {
                break;
            }
            let m = proto::parse(&buf[..len]).unwrap();
            assert_eq!(
                m.key, key,
                "a message for another session reached this client"
            );
            if m.id == u32::MAX {
                pushes += 1;
            } else {
                assert_eq!(m.id, 5);
                answers += 1;
            }
            buf.drain(..len);
        }
    }
    (answers, pushes)
}

#[test]
fn pushes_reach_the_key_owner_across_workers() {
    let bs = backends(1);
    let cfg = demo_config(
        &bs,
        2,
        "by_id",
        "round_robin",
        true,
        "",
        "pool = { connections_per_backend = 2 }\n[cluster.persistence]\nttl = \"1m\"",
    );
    let proxy = Proxy::start(&cfg);
    let addr = proxy.addr("app");
    // 2 workers × 2 pooled connections.
    eventually("the pools to connect", Duration::from_secs(10), || {
        bs[0]
            .log
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
            == 4
    });
    // A bystander with its own session.
    let bystander =
        std::thread::spawn(move || exchange(addr, 77, b"hello", 0, Duration::from_secs(2)));
    // The backend answers, then pushes a message for key 42 on each of its 4 connections:
    // on both workers' connections, so at least two pushes must cross workers.
    let (answers, pushes) = exchange(addr, 42, b"PUSHALL", 4, Duration::from_secs(10));
    assert_eq!((answers, pushes), (1, 4));
    assert_eq!(bystander.join().unwrap(), (1, 0));
}
