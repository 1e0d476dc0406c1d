//! Request timeouts, and retries of requests that never reached a backend.

use crate::support::*;
use std::net::TcpStream;
use std::time::Duration;

/// Sends one request and collects frames until the connection closes or `wait` passes:
/// (answer ids, pushes, closed).
fn one(
    addr: std::net::SocketAddr,
    key: u64,
    id: u32,
    payload: &[u8],
    wait: Duration,
) -> (Vec<u32>, usize, bool) {
    let c = exchange(addr, key, id, payload, wait, |_| false);
    (c.answers, c.pushes.len(), c.closed)
}

#[test]
fn by_id_timeout_fails_only_that_request_and_drops_its_late_answer() {
    let Running {
        proxy,
        backends: bs,
    } = Scenario::new()
        .request_timeout("300ms")
        .connections_per_backend(1)
        .persistence("1m")
        .start(1);
    let addr = proxy.addr("app");
    // The backend answers this one after 1 s: its client is closed at 300 ms.
    let late = std::thread::spawn(move || one(addr, 42, 7, b"LATE", Duration::from_secs(5)));
    eventually(
        "the late request at the backend",
        Duration::from_secs(5),
        || bs[0].log.per_key.lock().unwrap().contains_key(&42),
    );
    // Meanwhile others on the same shared connection are served.
    for r in run_clients(addr, vec![plan(500, 8, vec![1, 2], 1, true)]) {
        assert_clean(&r);
    }
    let (answers, _, closed) = late.join().unwrap();
    assert!(
        answers.is_empty() && !closed,
        "the timed-out request is dropped (no error answer), its client kept"
    );
    // A new owner of key 42 must not receive the late answer as a push.
    let (answers, pushes, _) = one(addr, 42, 9, b"hello", Duration::from_millis(1500));
    assert_eq!((answers, pushes), (vec![9], 0));
    let log = proxy.stderr();
    assert!(log.contains("request timed out; failing it"), "{log}");
    assert!(log.contains("timed out after 300ms"), "{log}");
    assert!(
        log.contains("dropping a failed request that has no error answer"),
        "{log}"
    );
}

#[test]
fn in_order_timeout_replaces_the_connection() {
    let Running {
        proxy,
        backends: bs,
    } = Scenario::new()
        .correlation("in_order")
        .keyless()
        .request_timeout("300ms")
        .connections_per_backend(1)
        .start(1);
    let addr = proxy.addr("app");
    let (answers, _, closed) = one(addr, 1, 1, b"STALL", Duration::from_secs(5));
    assert!(answers.is_empty() && closed);
    // The replacement connection serves in order again.
    for r in run_clients(addr, vec![plan(500, 8, vec![1], 1, false)]) {
        assert_clean(&r);
    }
    let log = proxy.stderr();
    assert!(
        log.contains("an in_order connection cannot skip an answer"),
        "{log}"
    );
    assert!(
        bs[0]
            .log
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2,
        "the connection was replaced"
    );
}

/// A listener whose accept queue is full: connects to it hang until they time out.
fn black_hole() -> (socket2::Socket, TcpStream, std::net::SocketAddr) {
    let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    l.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    l.listen(0).unwrap();
    let addr = l.local_addr().unwrap().as_socket().unwrap();
    // Fill the queue (backlog 0 still admits one) and one more to be sure.
    let a = TcpStream::connect(addr).unwrap();
    let _ = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200));
    (l, a, addr)
}

fn retry_config(
    hole: std::net::SocketAddr,
    live: &switchyard::demo::backend::TestBackend,
    retry: bool,
) -> String {
    format!(
        r#"workers = 1
[[listener]]
name = "app"
listen = "127.0.0.1:0"
cluster = "app"
correlation = "by_id"
[listener.codec]
kind = "length_field"
length_width = 4
id = {{ offset = 12, width = 4 }}

[[cluster]]
name = "app"
policy = "round_robin"
retry_on_connect_failure = {retry}
backends = [{{ address = "{hole}", name = "hole" }}, {{ address = "{}", name = "live" }}]
pool = {{ connections_per_backend = 1, connect_timeout = "700ms" }}
"#,
        live.addr
    )
}

#[test]
fn requests_never_written_are_retried_on_another_backend() {
    let (_l, _a, hole) = black_hole();
    let bs = backends(1);
    let proxy = Proxy::start(&retry_config(hole, &bs[0], true));
    // Sent while the connect to `hole` hangs: half of them queue there, unwritten.
    let reports = run_clients(proxy.addr("app"), vec![plan(200, 200, vec![0], 1, true)]);
    for r in &reports {
        assert_clean(r);
        assert_eq!(r.per_backend.get("b1"), Some(&200), "{:?}", r.per_backend);
    }
    let log = proxy.stderr();
    assert!(log.contains("routing again what was not"), "{log}");
}

#[test]
fn without_retry_unwritten_requests_fail() {
    let (_l, _a, hole) = black_hole();
    let bs = backends(1);
    let proxy = Proxy::start(&retry_config(hole, &bs[0], false));
    let mut p = plan(200, 200, vec![0], 1, true);
    p.answer_timeout = Duration::from_secs(5);
    let r = run_clients(proxy.addr("app"), vec![p]).remove(0);
    assert!(
        r.error.is_some(),
        "the requests that went to the hole fail: {r:?}"
    );
    let log = proxy.stderr();
    assert!(log.contains("connect timed out"), "{log}");
    // No error answer: dropped, said and counted, the client kept (on_unanswerable).
    assert!(
        log.contains("dropping a failed request that has no error answer"),
        "{log}"
    );
}
