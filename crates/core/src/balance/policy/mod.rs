//! Balancing policies: given the cluster's backends and which of them may take this
//! message, choose one. One file per policy, each a [`Policy`]; each worker owns its own
//! (round-robin positions, a seeded RNG), so picking takes no shared lock; the load it reads
//! is the backends' shared atomics ([`super::load`]). Every walk is bounded by the number
//! of backends. The key-hashing policies place keyed messages on a map instead
//! ([`super::keymap`]); their keyless messages go to [`random`], by weight.

mod least_outstanding;
mod p2c_ewma;
mod random;
mod round_robin;
mod source;
mod weighted_round_robin;

pub use source::source_hash;

use super::backend::Backend;
use crate::settings::PolicyKind;
use std::sync::Arc;

/// A way of choosing one backend among those a message may go to.
pub trait Policy: Send + std::fmt::Debug {
    /// Chooses a backend index among those `eligible` accepts, or `None` if it accepts
    /// none.
    fn pick(
        &mut self,
        backends: &[Arc<Backend>],
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize>;

    /// The client whose messages are picked for next ([`source_hash`] of its address);
    /// only `source` reads it.
    fn source(&mut self, _source: u64) {}
}

/// A worker's picker for `kind` over `n` backends; `seed` makes the random policies
/// repeatable.
pub fn picker(kind: PolicyKind, n: usize, seed: u64) -> Box<dyn Policy> {
    match kind {
        PolicyKind::RoundRobin => Box::new(round_robin::RoundRobin::new(n, seed)),
        PolicyKind::WeightedRoundRobin => Box::new(weighted_round_robin::Smooth::new(n)),
        PolicyKind::LeastOutstanding => Box::new(least_outstanding::LeastOutstanding::new(n, seed)),
        PolicyKind::LeastSessions => {
            Box::new(least_outstanding::LeastOutstanding::sessions(n, seed))
        }
        PolicyKind::P2cEwma => Box::new(p2c_ewma::P2c::new(seed)),
        PolicyKind::Source => Box::new(source::Source::default()),
        // The hashing policies place keyed messages themselves (see the router); what
        // reaches the picker has no key, and goes anywhere, by weight.
        PolicyKind::Random | PolicyKind::Ketama | PolicyKind::Maglev => {
            Box::new(random::Random::new(seed, true))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{BackendSettings, PolicyKind};

    fn backends(weights: &[u32]) -> Vec<Arc<Backend>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                Arc::new(Backend::new(&BackendSettings {
                    name: format!("b{i}"),
                    address: "127.0.0.1:1".parse().unwrap(),
                    weight: *w,
                    drain: false,
                }))
            })
            .collect()
    }

    fn counts(
        kind: PolicyKind,
        bs: &[Arc<Backend>],
        usable: &dyn Fn(usize) -> bool,
        n: usize,
    ) -> Vec<usize> {
        let mut p = picker(kind, bs.len(), 42);
        let mut c = vec![0; bs.len()];
        for _ in 0..n {
            c[p.pick(bs, usable).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn source_keeps_a_client_on_one_backend_and_moves_only_the_lost_ones() {
        let bs = backends(&[1, 1, 1, 1]);
        let mut p = picker(PolicyKind::Source, bs.len(), 42);
        let clients: Vec<u64> = (0..4000u32)
            .map(|i| source_hash(std::net::Ipv4Addr::from(0x0a00_0000 + i).into()))
            .collect();
        let mut home = Vec::new();
        let mut per = vec![0; 4];
        for &c in &clients {
            p.source(c);
            let a = p.pick(&bs, &|_| true).unwrap();
            assert_eq!(
                p.pick(&bs, &|_| true),
                Some(a),
                "the same client, the same backend"
            );
            per[a] += 1;
            home.push(a);
        }
        // Spread within 10% of even.
        assert!(per.iter().all(|&n| (900..=1100).contains(&n)), "{per:?}");
        // Backend 2 goes: only its clients move.
        for (&c, &h) in clients.iter().zip(&home) {
            p.source(c);
            let now = p.pick(&bs, &|i| i != 2).unwrap();
            if h != 2 {
                assert_eq!(now, h);
            }
        }
        // A fresh picker (another worker, another instance) agrees.
        let mut q = picker(PolicyKind::Source, bs.len(), 7);
        q.source(clients[0]);
        assert_eq!(q.pick(&bs, &|_| true), Some(home[0]));
    }

    #[test]
    fn round_robin_is_even_and_skips_unusable() {
        let bs = backends(&[1, 1, 1]);
        assert_eq!(
            counts(PolicyKind::RoundRobin, &bs, &|_| true, 300),
            vec![100; 3]
        );
        assert_eq!(
            counts(PolicyKind::RoundRobin, &bs, &|i| i != 1, 300),
            vec![150, 0, 150]
        );
        let mut p = picker(PolicyKind::RoundRobin, 3, 0);
        assert_eq!(p.pick(&bs, &|_| false), None);
    }

    #[test]
    fn weighted_policies_follow_weights() {
        let bs = backends(&[1, 2, 3]);
        assert_eq!(
            counts(PolicyKind::WeightedRoundRobin, &bs, &|_| true, 600),
            vec![100, 200, 300]
        );
        let c = counts(PolicyKind::Random, &bs, &|_| true, 60_000);
        for (got, want) in c.iter().zip([10_000, 20_000, 30_000]) {
            assert!((*got as f64 / want as f64 - 1.0).abs() < 0.05, "{c:?}");
        }
        assert_eq!(
            counts(PolicyKind::WeightedRoundRobin, &bs, &|i| i == 0, 10),
            vec![10, 0, 0]
        );
    }

    #[test]
    fn least_sessions_prefers_the_backend_with_the_fewest_open_sessions() {
        let bs = backends(&[1, 1, 2]);
        for (b, n) in bs.iter().zip([10u64, 3, 8]) {
            b.load
                .sessions_counter()
                .store(n, std::sync::atomic::Ordering::Relaxed);
        }
        // 11, 4 and 4.5 per unit of weight: the second; without it, the third.
        assert_eq!(
            counts(PolicyKind::LeastSessions, &bs, &|_| true, 10),
            vec![0, 10, 0]
        );
        assert_eq!(
            counts(PolicyKind::LeastSessions, &bs, &|i| i != 1, 10),
            vec![0, 0, 10]
        );
    }

    #[test]
    fn least_outstanding_prefers_idle_backends() {
        let bs = backends(&[1, 1, 1]);
        for _ in 0..5 {
            bs[0].load.on_sent(true);
            bs[2].load.on_sent(true);
        }
        let mut p = picker(PolicyKind::LeastOutstanding, 3, 0);
        for _ in 0..3 {
            assert_eq!(p.pick(&bs, &|_| true), Some(1));
        }
        // Equal load: ties rotate.
        let even = backends(&[1, 1, 1]);
        assert_eq!(
            counts(PolicyKind::LeastOutstanding, &even, &|_| true, 300),
            vec![100; 3]
        );
    }

    #[test]
    fn p2c_avoids_the_slow_backend() {
        let bs = backends(&[1, 1, 1]);
        bs[0].load.on_sent(true);
        bs[0].load.on_answer(std::time::Duration::from_millis(500));
        let c = counts(PolicyKind::P2cEwma, &bs, &|_| true, 3000);
        assert!(c[0] < 100, "{c:?}");
        assert!(c[1] > 1000 && c[2] > 1000, "{c:?}");
        // Same seed, same choices.
        assert_eq!(c, counts(PolicyKind::P2cEwma, &bs, &|_| true, 3000));
    }
}
