//! Every message arrives whole, once, at one backend; keys stick; load spreads.

use crate::support::*;
use std::collections::HashMap;

#[test]
fn every_message_arrives_whole_once_at_one_backend_and_keys_stick() {
    let Running {
        proxy,
        backends: bs,
    } = Scenario::new()
        .workers(2)
        .policy("least_outstanding")
        .persistence("10m")
        .persistence_max_entries(10000)
        .start(3);
    let clients = 8u64;
    let per_client = 500u64;
    let plans = (0..clients)
        .map(|c| {
            plan(
                per_client,
                16,
                (0..5).map(|k| c * 100 + k).collect(),
                c,
                true,
            )
        })
        .collect();
    let reports = run_clients(proxy.addr("app"), plans);
    reports.iter().for_each(assert_clean);

    // Each (client, sequence) arrived exactly once, at one backend, byte for byte.
    let mut seen: HashMap<(u64, u64), usize> = HashMap::new();
    let mut key_home: HashMap<u64, String> = HashMap::new();
    for b in &bs {
        for r in b.received() {
            assert_eq!(r.payload.len(), 32, "payload arrived whole");
            let seq = u64::from_be_bytes(r.payload[..8].try_into().unwrap());
            let tag = u64::from_be_bytes(r.payload[8..16].try_into().unwrap());
            assert!(r.payload[16..].iter().all(|x| *x == 0));
            assert_eq!(r.key, tag * 100 + seq % 5, "key travelled with its message");
            *seen.entry((tag, seq)).or_default() += 1;
            let home = key_home.entry(r.key).or_insert_with(|| b.name.clone());
            assert_eq!(home, &b.name, "key {} reached two backends", r.key);
        }
    }
    assert_eq!(seen.len() as u64, clients * per_client);
    assert!(
        seen.values().all(|n| *n == 1),
        "a message was delivered twice"
    );
    assert_eq!(key_home.len() as u64, clients * 5);
    // What the clients saw agrees: one backend per key.
    for r in &reports {
        assert!(r.key_backends.values().all(|s| s.len() == 1));
    }
}

fn spread(policy: &str, backends_weights: &[u32]) -> Vec<(u64, u32)> {
    let Running {
        proxy,
        backends: bs,
    } = Scenario::new()
        .workers(2)
        .correlation("in_order")
        .policy(policy)
        .keyless()
        .weights(backends_weights)
        .start(backends_weights.len());
    // Four long-lived clients: a connection balancer would put them on at most 4 backends
    // unevenly; per message they must spread.
    let plans = (0..4).map(|c| plan(3000, 8, vec![c], c, false)).collect();
    let reports = run_clients(proxy.addr("app"), plans);
    reports.iter().for_each(assert_clean);
    bs.iter()
        .map(|b| b.messages())
        .zip(backends_weights.iter().copied())
        .collect()
}

fn assert_share(counts: &[(u64, u32)], tolerance: f64) {
    let total: u64 = counts.iter().map(|c| c.0).sum();
    let weights: u32 = counts.iter().map(|c| c.1).sum();
    assert_eq!(total, 12_000);
    for (n, w) in counts {
        let fair = total as f64 * f64::from(*w) / f64::from(weights);
        let ratio = *n as f64 / fair;
        assert!(
            ratio <= tolerance,
            "max/mean {ratio:.3} > {tolerance}: {counts:?}"
        );
    }
}

#[test]
fn four_clients_spread_over_three_backends_round_robin() {
    assert_share(&spread("round_robin", &[1, 1, 1]), 1.05);
}

#[test]
fn four_clients_spread_over_three_backends_least_outstanding() {
    // least_outstanding follows the backends' speed by design: on a CI box whose two cores
    // are shared with other tests, a backend thread that is scheduled less answers slower
    // and rightly gets less (seen: max/mean 1.077). The 1.05 spread of equal backends is
    // asserted above with round_robin and weighted_round_robin; here, that no backend gets
    // a share far from even.
    assert_share(&spread("least_outstanding", &[1, 1, 1]), 1.25);
}

#[test]
fn weighted_round_robin_follows_weights() {
    assert_share(&spread("weighted_round_robin", &[1, 2, 3]), 1.05);
}
