//! Poison isolation on shared backend connections: a client's request that makes the
//! backend close the connection costs only that client its answer. The backend here is the
//! demo backend, which closes a connection, answering nothing it read with it, on a request
//! whose payload starts with `POISON`, and holds each batch of answers for a while so that
//! many clients' requests are always in flight on the one shared connection.

use crate::support::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use switchyard::demo::backend::TestBackend;
use switchyard::demo::client::ClientReport;
use switchyard::demo::proto;

/// The template of the error answer: the demo answer named `ERR` with the reason.
const ERR: &str = "00000000 {key} {id} 03 455252 {reason}";

/// One worker, one shared connection to one slow demo backend.
fn scenario(correlation: &str, retry: bool) -> Scenario {
    Scenario::new()
        .correlation(correlation)
        .connections_per_backend(1)
        .error_reply_hex(ERR)
        .listener_toml(&format!("retry_on_backend_close = {retry}"))
}

fn slow_backend() -> Vec<TestBackend> {
    vec![TestBackend::start_slow("b1", true, Duration::from_millis(15)).unwrap()]
}

/// Sends one poison request (client id `id`) on a connection of its own and reads what
/// comes back: the error answer's name and id, and whether the proxy then closed the
/// connection; `None` if it closed it without an answer.
fn poison(addr: SocketAddr, id: u32) -> PoisonAnswer {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = Vec::new();
    proto::write_request(&mut req, 99, id, b"POISON and then some");
    s.write_all(&req).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = [0u8; 4];
    s.read_exact(&mut head).ok()?;
    let len = u32::from_be_bytes(head) as usize;
    let mut rest = vec![0u8; len];
    s.read_exact(&mut rest).ok()?;
    let mut frame = head.to_vec();
    frame.extend_from_slice(&rest);
    let m = proto::parse(&frame)?;
    let (name, _) = proto::answer_parts(m.rest)?;
    let closed = closed_within(&s, Duration::from_secs(5));
    Some((String::from_utf8_lossy(name).into_owned(), m.id, closed))
}

/// Requests each bystander sends.
const BYSTANDER_REQUESTS: u64 = 1800;

/// What a poison request got back: the error answer's name and id, and whether the proxy
/// closed the connection after it; `None` if it closed it without an answer.
type PoisonAnswer = Option<(String, u32, bool)>;

/// Runs 8 bystander clients, 16 deep at 300 requests/s each for about 6 s, while a
/// poisoner sends `rounds` poison requests, 1.1 s apart (so that each is logged: the log
/// writes one line of a kind a second), each while bystander requests are in flight;
/// returns the bystanders' reports and what each poison request got back.
fn bystanders_and_poison(app: &Running, rounds: usize) -> (Vec<ClientReport>, Vec<PoisonAnswer>) {
    let (addr, backend) = (app.addr(), &app.backends[0]);
    let plans: Vec<_> = (0..8)
        .map(|c| {
            let mut p = plan(
                BYSTANDER_REQUESTS,
                16,
                vec![c * 10 + 1, c * 10 + 2],
                c + 1,
                true,
            );
            p.rate = Some(300);
            p
        })
        .collect();
    let load = std::thread::spawn(move || run_clients(addr, plans));
    let mut got = Vec::new();
    for round in 0..rounds {
        let seen = backend.messages();
        let busy = wait_for(Duration::from_secs(10), || {
            (backend.messages() >= seen + 100).then_some(())
        });
        assert!(
            busy.is_some(),
            "bystanders to keep the shared connection busy (round {round}): {}",
            app.proxy.stderr()
        );
        got.push(poison(addr, 7000 + round as u32));
        std::thread::sleep(Duration::from_millis(1100));
    }
    (load.join().unwrap(), got)
}

/// How many times the backend received each bystander request (by client tag and number).
fn sends(backend: &TestBackend) -> HashMap<(u64, u64), u32> {
    let mut n = HashMap::new();
    for r in backend.received() {
        if r.payload.starts_with(b"POISON") || r.payload.len() < 16 {
            continue;
        }
        let seq = u64::from_be_bytes(r.payload[..8].try_into().unwrap());
        let tag = u64::from_be_bytes(r.payload[8..16].try_into().unwrap());
        *n.entry((tag, seq)).or_default() += 1;
    }
    n
}

fn only_the_poisoner_pays(correlation: &str) {
    let app = scenario(correlation, true).start_with(slow_backend());
    let (reports, poisons) = bystanders_and_poison(&app, 3);
    for r in &reports {
        if r.error.is_some() || !r.mismatches.is_empty() {
            eprintln!("{}", app.proxy.stderr());
        }
        assert_clean(r);
    }
    for (i, p) in poisons.iter().enumerate() {
        assert_eq!(
            p.as_ref(),
            Some(&("ERR".to_string(), 7000 + i as u32, true)),
            "the poisoner gets the error answer, with its own id, and is closed"
        );
    }
    let sends = sends(&app.backends[0]);
    let twice = sends.values().filter(|&&n| n == 2).count();
    assert!(
        sends.values().all(|&n| n <= 2),
        "a bystander reached the backend at most twice"
    );
    assert!(
        twice > 0,
        "some bystanders were in flight when the connection died, and re-sent"
    );
    assert_eq!(
        sends.len() as u64,
        8 * BYSTANDER_REQUESTS,
        "every bystander request reached the backend"
    );
    let log = app.proxy.stderr();
    assert_eq!(
        occurrences(&log, "closed its backend connection again when sent alone"),
        3,
        "each poison is named once: {log}"
    );
    let poison_line = log
        .lines()
        .find(|l| l.contains("closed its backend connection again when sent alone"))
        .unwrap();
    assert!(poison_line.contains("client=127.0.0.1:"), "{poison_line}");
    let on_probation = app.backends[0]
        .received()
        .iter()
        .filter(|r| r.payload.starts_with(b"POISON"))
        .count();
    assert!(
        (6..=9).contains(&on_probation),
        "each poison went at most twice more, alone: {on_probation}"
    );
}

#[test]
fn by_id_a_poison_request_costs_only_its_own_client_an_answer() {
    only_the_poisoner_pays("by_id");
}

#[test]
fn in_order_a_poison_request_costs_only_its_own_client_an_answer() {
    only_the_poisoner_pays("in_order");
}

/// The control: without retries, the same poison costs bystanders their answers (each
/// gets the error answer in place of its own), as the issue found with nsd.
#[test]
fn without_retries_bystanders_lose_their_answers() {
    let app = scenario("by_id", false).start_with(slow_backend());
    let (reports, _) = bystanders_and_poison(&app, 1);
    let lost: usize = reports.iter().map(|r| r.mismatches.len()).sum();
    assert!(lost > 0, "bystanders in flight failed with the connection");
    assert!(
        sends(&app.backends[0]).values().all(|&n| n == 1),
        "nothing is re-sent"
    );
}

/// A backend that closes on every request: probation stops after three fresh connections
/// die in a row, so the backend sees a bounded number of connections, every request is
/// answered with the error answer, and the loss counts against the backend again.
#[test]
fn a_backend_that_closes_on_everything_cannot_make_probation_a_storm() {
    let app = scenario("by_id", true).start_with(slow_backend());
    app.backends[0].set_hostile(true);
    let plans: Vec<_> = (0..4)
        .map(|c| {
            let mut p = plan(50, 8, vec![c + 1], c + 1, true);
            p.answer_timeout = Duration::from_secs(20);
            p
        })
        .collect();
    let reports = run_clients(app.addr(), plans);
    for r in &reports {
        assert!(r.error.is_none(), "{:?}", r.error);
        assert_eq!(
            r.answered + r.mismatches.len() as u64,
            r.sent,
            "every request gets an answer"
        );
    }
    let connections = app.backends[0]
        .log
        .connections
        .load(std::sync::atomic::Ordering::Relaxed);
    let log = app.proxy.stderr();
    assert_eq!(
        occurrences(
            &log,
            "probation stopped: the backend closes on every request"
        ),
        1,
        "{log}"
    );
    // 200 requests: without the guard each would take a probation connection of its own.
    assert!(
        connections < 60,
        "{connections} connections for 200 requests"
    );
}
