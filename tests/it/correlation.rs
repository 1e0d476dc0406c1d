//! Answers find their clients: by id on shared connections with colliding ids, and in
//! request order even when requests went to backends of different speeds.

use crate::support::*;
use std::time::Duration;
use switchyard::demo::backend::TestBackend;

fn mixed_speed_backends() -> Vec<TestBackend> {
    vec![
        TestBackend::start("b1", false).unwrap(),
        TestBackend::start_slow("b2", false, Duration::from_millis(3)).unwrap(),
        TestBackend::start("b3", false).unwrap(),
    ]
}

#[test]
fn by_id_32_clients_with_colliding_ids_get_their_own_answers() {
    let app = Scenario::new()
        .workers(2)
        .keyless()
        .start_with(mixed_speed_backends());
    // Every client numbers its requests from 0: the ids collide on every shared backend
    // connection, and the proxy must keep them apart.
    let plans = (0..32).map(|c| plan(300, 16, vec![c], c, true)).collect();
    let reports = run_clients(app.addr(), plans);
    reports.iter().for_each(assert_clean);
    for r in &reports {
        // Keyless: each client's requests went to every backend.
        assert_eq!(r.per_backend.len(), 3, "{:?}", r.per_backend);
    }
}

#[test]
fn in_order_32_clients_get_answers_in_request_order() {
    let app = Scenario::new()
        .workers(2)
        .correlation("in_order")
        .keyless()
        .start_with(mixed_speed_backends());
    // The clients check that the n-th answer answers the n-th request; the slow backend
    // makes later requests finish first on the fast ones.
    let plans = (0..32).map(|c| plan(300, 16, vec![c], c, false)).collect();
    let reports = run_clients(app.addr(), plans);
    reports.iter().for_each(assert_clean);
    for r in &reports {
        assert_eq!(r.per_backend.len(), 3, "{:?}", r.per_backend);
    }
}

#[test]
fn one_byte_id_field_limits_outstanding_ids_without_mixing_answers() {
    // A 1-byte id field: only 256 proxy ids per backend connection; 8 clients × depth 64
    // need more, so the proxy must wait for ids to free up rather than reuse one.
    let app = Scenario::new()
        .keyless()
        .connections_per_backend(1)
        .id_field(15, 1)
        .start(1);
    let plans = (0..8).map(|c| plan(400, 64, vec![c], c, false)).collect();
    let reports = run_clients(app.addr(), plans);
    reports.iter().for_each(assert_clean);
}
