//! Client hygiene: connection limit, idle and partial-frame timeouts, bounded memory under
//! many half-sent frames, and accept errors (EMFILE) met with a pause, not a busy loop.

use crate::support::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

#[test]
fn connections_past_max_connections_are_closed_at_once() {
    let Running {
        proxy,
        backends: _bs,
    } = Scenario::new()
        .workers(2)
        .keyless()
        .max_connections(5)
        .start(1);
    let addr = proxy.addr("app");
    let mut held: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(addr).unwrap()).collect();
    eventually(
        "the proxy to report it runs",
        Duration::from_secs(5),
        || proxy.stderr().contains("switchyard running"),
    );
    // One exchange on each: the proxy has accepted (and counted) all five.
    for (i, s) in held.iter_mut().enumerate() {
        assert_eq!(round_trip(s, 0, i as u32, b"held"), i as u32);
    }
    let extra = TcpStream::connect(addr).unwrap();
    assert!(
        closed_within(&extra, Duration::from_secs(5)),
        "the 6th connection was kept"
    );
    eventually("the refusal to be logged", Duration::from_secs(5), || {
        proxy.stderr().contains("connection limit reached")
    });
    drop(held);
    // Slots free up when clients leave.
    eventually("a slot to free", Duration::from_secs(5), || {
        run_clients(addr, vec![plan(10, 1, vec![0], 1, true)])[0]
            .error
            .is_none()
    });
}

#[test]
fn idle_clients_and_slow_loris_frames_are_closed() {
    let Running {
        proxy,
        backends: _bs,
    } = Scenario::new()
        .keyless()
        .client_idle_timeout("400ms")
        .frame_timeout("400ms")
        .start(1);
    let addr = proxy.addr("app");
    let idle = TcpStream::connect(addr).unwrap();
    let mut loris = TcpStream::connect(addr).unwrap();
    loris.write_all(&[0, 0, 0, 40, 1, 2]).unwrap();
    // A busy client in the meantime is not disturbed.
    for r in run_clients(addr, vec![plan(2000, 4, vec![1], 1, true)]) {
        assert_clean(&r);
    }
    assert!(closed_within(&idle, Duration::from_secs(5)));
    assert!(closed_within(&loris, Duration::from_secs(5)));
    // The reason is logged just after the close.
    eventually(
        "the slow-loris close to be logged",
        Duration::from_secs(5),
        || {
            proxy
                .stderr()
                .contains("was not completed within frame_timeout")
        },
    );
}

#[test]
fn memory_stays_bounded_with_many_half_sent_frames() {
    let Running {
        proxy,
        backends: _bs,
    } = Scenario::new()
        .workers(2)
        .keyless()
        .frame_timeout("3s")
        .start(1);
    let addr = proxy.addr("app");
    let baseline = proxy.rss_kib();
    // 400 clients (the test's own open-file limit may be 1024) each announce a 512 KiB frame
    // and send 1 KiB of it.
    let conns: Vec<TcpStream> = (0..400)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(&(512u32 << 10).to_be_bytes()).unwrap();
            s.write_all(&[7u8; 1024]).unwrap();
            s
        })
        .collect();
    eventually(
        "the proxy to accept the 400 and read what they sent",
        Duration::from_secs(10),
        || accepted_and_read(addr, 400),
    );
    let loaded = proxy.rss_kib();
    let per_conn = (loaded.saturating_sub(baseline)) as f64 / 400.0;
    // Bound: 64 KiB per half-frame connection (buffers start at 2 KiB and grow as bytes
    // arrive, never ahead of them).
    assert!(
        per_conn < 64.0,
        "RSS grew {per_conn:.1} KiB per connection ({baseline} → {loaded} KiB)"
    );
    for s in &conns {
        assert!(
            closed_within(s, Duration::from_secs(10)),
            "slow-loris connection kept"
        );
    }
    // Every one was closed as a slow loris (the log line may trail the close a little).
    // (Repeated lines are throttled: the suppressed ones are counted in the log.)
    eventually(
        "400 slow-loris closes logged",
        Duration::from_secs(5),
        || occurrences(&proxy.stderr(), "was not completed within frame_timeout") == 400,
    );
    eprintln!(
        "RSS: baseline {baseline} KiB, with 400 half-frames {loaded} KiB ({per_conn:.1} KiB each)"
    );
}

#[test]
fn accept_errors_pause_instead_of_spinning() {
    // A tiny open-file limit: the proxy runs out of descriptors after a few clients.
    let Running {
        proxy,
        backends: _bs,
    } = Scenario::new().keyless().open_files_limit(40).start(1);
    let addr = proxy.addr("app");
    let mut held = Vec::new();
    for _ in 0..60 {
        if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            held.push(s);
        }
    }
    eventually("EMFILE to be logged", Duration::from_secs(10), || {
        proxy.stderr().contains("accept failed")
    });
    let before = proxy.cpu_ticks();
    // Part of the measure: two seconds out of descriptors, in which a busy loop would
    // show.
    std::thread::sleep(Duration::from_secs(2));
    let spent = proxy.cpu_ticks() - before;
    // A busy loop would burn ~200 ticks in 2 s; pausing costs a few.
    assert!(
        spent < 40,
        "{spent} ticks of CPU in 2 s while out of file descriptors"
    );
    drop(held);
    let mut last = None;
    // (An attempt may itself wait up to its answer timeout, 10 s: room for a few.)
    let resumed = wait_for(Duration::from_secs(30), || {
        let r = run_clients(addr, vec![plan(10, 1, vec![0], 1, true)]).remove(0);
        last = r.error.clone();
        r.error.is_none().then_some(())
    });
    assert!(
        resumed.is_some(),
        "service did not resume: {last:?}\n{}",
        proxy.stderr()
    );
}

#[test]
fn idle_timeout_waits_for_answers_in_flight_then_closes() {
    let Running {
        proxy,
        backends: _bs,
    } = Scenario::new()
        .keyless()
        .client_idle_timeout("400ms")
        .start(1);
    let addr = proxy.addr("app");
    // Answered at once, then silent: closed as idle.
    let quick = exchange(addr, 1, 7, b"hello", Duration::from_secs(5), |c| c.closed);
    assert_eq!(quick.answers, vec![7]);
    assert!(quick.closed, "an idle client was kept");
    // Answered after 1 s, longer than the idle timeout: the answer still arrives, and the
    // connection closes after it.
    let started = std::time::Instant::now();
    let late = exchange(addr, 2, 8, b"LATE", Duration::from_secs(5), |c| c.closed);
    assert_eq!(late.answers, vec![8], "closed before its answer came");
    assert!(late.closed, "an idle client was kept after its answer");
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[test]
fn the_buffer_budget_bounds_memory_and_well_behaved_clients_are_served() {
    // 300 clients each announce a 900 KB frame and send 300 KB of it: 88 MB asked for,
    // against a 32 MiB budget.
    let budget = 32u64 << 20;
    let Running {
        proxy,
        backends: _bs,
    } = Scenario::new()
        .buffer_budget(budget)
        .keyless()
        .frame_timeout("60s")
        .max_frame_size(1048576)
        .start(1);
    let addr = proxy.addr("app");
    let baseline = proxy.rss_kib();
    let mut conns: Vec<TcpStream> = (0..300)
        .map(|_| {
            let s = TcpStream::connect(addr).unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let mut sent = vec![0usize; conns.len()];
    let chunk = vec![7u8; 16 << 10];
    // Push each client's bytes as far as the proxy (and the kernel) take them, bounded.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline && sent.iter().any(|&n| n < 300_000) {
        for (s, n) in conns.iter_mut().zip(sent.iter_mut()) {
            if *n == 0 {
                let _ = s.write_all(&(900_000u32).to_be_bytes());
                *n = 4;
            }
            if *n < 300_000 {
                match s.write(&chunk[..chunk.len().min(300_000 - *n)]) {
                    Ok(k) => *n += k,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => *n = usize::MAX, // closed by the proxy
                }
            }
        }
        // Pacing (the loop is bounded by its deadline): the proxy reads between rounds.
        std::thread::sleep(Duration::from_millis(5));
    }
    // A well-behaved client is served meanwhile.
    for r in run_clients(addr, vec![plan(500, 8, vec![1], 1, true)]) {
        assert_clean(&r);
    }
    let loaded = proxy.rss_kib();
    // The budget, plus a fixed overhead: buffers of 300 connections at rest and one
    // buffer's growth step past the budget.
    let limit = baseline + (budget >> 10) + 24 * 1024;
    assert!(
        loaded <= limit,
        "RSS {loaded} KiB past the budget: baseline {baseline} KiB + {} KiB budget",
        budget >> 10
    );
    eventually(
        "the budget's closings to be logged",
        Duration::from_secs(5),
        || proxy.stderr().contains("reached buffer_budget"),
    );
    let closed = sent.iter().filter(|&&n| n == usize::MAX).count()
        + conns
            .iter()
            .filter(|s| closed_within(s, Duration::from_millis(10)))
            .count();
    assert!(closed > 0, "no client was closed to keep the budget");
    eprintln!("RSS: baseline {baseline} KiB, loaded {loaded} KiB, {closed} clients closed");
}
