//! A backend message that answers nothing goes to the client that owns its key's session,
//! across workers if need be, and to no one else.

use crate::support::*;
use std::time::Duration;

#[test]
fn pushes_reach_the_key_owner_across_workers() {
    let Running {
        proxy,
        backends: bs,
    } = Scenario::new()
        .workers(2)
        .connections_per_backend(2)
        .persistence("1m")
        .start(1);
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
    let bystander = std::thread::spawn(move || {
        exchange(addr, 77, 5, b"hello", Duration::from_secs(2), |_| false)
    });
    // The backend answers, then pushes a message for key 42 on each of its 4 connections:
    // on both workers' connections, so at least two pushes must cross workers.
    let owner = exchange(addr, 42, 5, b"PUSHALL", Duration::from_secs(10), |c| {
        c.answers.len() == 1 && c.pushes.len() >= 4
    });
    assert_eq!((owner.answers, owner.pushes.len()), (vec![5], 4));
    assert!(
        owner.keys.iter().all(|k| *k == 42),
        "a message for another session reached this client"
    );
    let bystander = bystander.join().unwrap();
    assert_eq!((bystander.answers, bystander.pushes.len()), (vec![5], 0));
    assert!(
        bystander.keys.iter().all(|k| *k == 77),
        "a message for another session reached this client"
    );
}
