//! A backend that dies fails its in-flight requests fast, gets no new messages while down,
//! is retried with back-off, and its pins move to live backends.

use crate::support::*;
use std::time::Duration;
use switchyard::demo::backend::TestBackend;

#[test]
fn dead_backend_is_avoided_pins_move_and_it_comes_back() {
    let Running {
        proxy,
        backends: mut bs,
    } = Scenario::new()
        .persistence("10m")
        .reconnect_backoff("50ms", "200ms")
        .start(3);
    let addr = proxy.addr("app");
    let keys: Vec<u64> = (0..30).collect();
    for r in run_clients(addr, vec![plan(300, 8, keys.clone(), 1, true)]) {
        assert_clean(&r);
    }
    let victim_keys: Vec<u64> = keys
        .iter()
        .copied()
        .filter(|k| bs[1].log.per_key.lock().unwrap().contains_key(k))
        .collect();
    assert!(!victim_keys.is_empty());

    bs[1].stop();
    eventually(
        "the proxy to notice b2 is down",
        Duration::from_secs(10),
        || proxy.stderr().contains("backend is down"),
    );
    let before = bs[1].messages();
    // The same keys again: all answered, none by the dead backend.
    for r in run_clients(addr, vec![plan(300, 8, keys.clone(), 2, true)]) {
        assert_clean(&r);
        assert!(!r.per_backend.contains_key("b2"), "{:?}", r.per_backend);
        // Moved keys stick to their new home.
        assert!(r.key_backends.values().all(|s| s.len() == 1));
    }
    assert_eq!(bs[1].messages(), before);
    assert!(proxy
        .stderr()
        .contains("session moved off an unavailable backend"));

    bs[1].restart().unwrap();
    eventually(
        "the proxy to reconnect to b2",
        Duration::from_secs(10),
        || proxy.stderr().matches("backend is up").count() >= 1,
    );
    // New keys are balanced onto the recovered backend again.
    let fresh: Vec<u64> = (1000..1030).collect();
    for r in run_clients(addr, vec![plan(300, 8, fresh, 3, true)]) {
        assert_clean(&r);
        assert!(
            r.per_backend.get("b2").copied().unwrap_or(0) > 0,
            "{:?}",
            r.per_backend
        );
    }
}

#[test]
fn requests_in_flight_on_a_dying_backend_fail_fast() {
    // Answers take 30 s; the backend dies after 300 ms; the client must hear at once.
    let slow = TestBackend::start_slow("slow", false, Duration::from_secs(30)).unwrap();
    let Running {
        proxy,
        mut backends,
    } = Scenario::new()
        .correlation("in_order")
        .keyless()
        .start_with(vec![slow]);
    let slow = &mut backends[0];
    let addr = proxy.addr("app");
    let client = std::thread::spawn(move || {
        let mut p = plan(20, 20, vec![1], 1, false);
        p.answer_timeout = Duration::from_secs(20);
        let started = std::time::Instant::now();
        let r = run_clients(addr, vec![p]).remove(0);
        (r, started.elapsed())
    });
    eventually(
        "requests to reach the backend",
        Duration::from_secs(10),
        || slow.messages() >= 20,
    );
    slow.stop();
    let (report, took) = client.join().unwrap();
    let err = report.error.expect("the client must be told");
    assert!(err.contains("connection closed"), "{err}");
    assert!(
        took < Duration::from_secs(20),
        "the client waited for its answer timeout"
    );
    assert!(proxy
        .stderr()
        .contains("backend connection lost with requests in flight"));
}
