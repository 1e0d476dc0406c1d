//! Balancing policies: given the cluster's backends and which of them this worker can use
//! right now, choose one. Each worker owns its own [`Picker`] (round-robin positions, a
//! seeded RNG), so picking takes no shared lock; the load it reads is the backends' shared
//! atomics. Every walk is bounded by the number of backends.

use super::backend::Backend;
use crate::config::PolicyKind;
use std::sync::Arc;

/// Per-worker policy state.
#[derive(Debug)]
pub struct Picker {
    kind: PolicyKind,
    next: usize,
    /// Smooth weighted round robin current weights (nginx's algorithm).
    current: Vec<i64>,
    rng: fastrand::Rng,
}

impl Picker {
    /// A picker for `n` backends; `seed` makes the random policies repeatable.
    pub fn new(kind: PolicyKind, n: usize, seed: u64) -> Self {
        Picker {
            kind,
            next: (seed as usize) % n.max(1),
            current: vec![0; n],
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// Chooses a backend index among those `usable` accepts, or `None` if it accepts none.
    pub fn pick(
        &mut self,
        backends: &[Arc<Backend>],
        usable: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = backends.len();
        if n == 0 {
            return None;
        }
        match self.kind {
            PolicyKind::RoundRobin => {
                for step in 0..n {
                    let i = (self.next + step) % n;
                    if usable(i) {
                        self.next = (i + 1) % n;
                        return Some(i);
                    }
                }
                None
            }
            PolicyKind::WeightedRoundRobin => {
                let mut total = 0i64;
                let mut best: Option<usize> = None;
                for (i, b) in backends.iter().enumerate() {
                    if !usable(i) {
                        continue;
                    }
                    let w = i64::from(b.weight());
                    self.current[i] += w;
                    total += w;
                    if best.is_none_or(|j| self.current[i] > self.current[j]) {
                        best = Some(i);
                    }
                }
                let i = best?;
                self.current[i] -= total;
                Some(i)
            }
            PolicyKind::LeastOutstanding => {
                // Start at a rotating index so ties spread instead of piling on backend 0.
                let start = self.next;
                self.next = (self.next + 1) % n;
                let mut best: Option<(usize, f64)> = None;
                for step in 0..n {
                    let i = (start + step) % n;
                    if !usable(i) {
                        continue;
                    }
                    let b = &backends[i];
                    let load = (b.outstanding() as f64 + 1.0) / f64::from(b.weight());
                    if best.is_none_or(|(_, l)| load < l) {
                        best = Some((i, load));
                    }
                }
                best.map(|(i, _)| i)
            }
            PolicyKind::P2cEwma => {
                let a = self.random_usable(backends, usable, false)?;
                let cost = |i: usize| {
                    let b = &backends[i];
                    b.ewma_ns() * (b.outstanding() as f64 + 1.0) / f64::from(b.weight())
                };
                // Second choice distinct from the first, when another usable one exists.
                let mut b = a;
                for _ in 0..4 {
                    let c = self.rng.usize(0..n);
                    if c != a && usable(c) {
                        b = c;
                        break;
                    }
                }
                if b == a {
                    b = (1..n)
                        .map(|d| (a + d) % n)
                        .find(|&c| usable(c))
                        .unwrap_or(a);
                }
                let (ca, cb) = (cost(a), cost(b));
                tracing::trace!(a, b, ca, cb, "p2c pick");
                Some(if cb < ca { b } else { a })
            }
            // The hashing policies place keyed messages themselves (see `Cluster::route`);
            // what reaches the picker has no key, and goes anywhere, by weight.
            PolicyKind::Random | PolicyKind::Ketama | PolicyKind::Maglev => {
                self.random_usable(backends, usable, true)
            }
        }
    }

    /// A random usable backend, by weight if `weighted`.
    fn random_usable(
        &mut self,
        backends: &[Arc<Backend>],
        usable: &dyn Fn(usize) -> bool,
        weighted: bool,
    ) -> Option<usize> {
        let w = |i: usize| {
            if weighted {
                u64::from(backends[i].weight())
            } else {
                1
            }
        };
        let total: u64 = (0..backends.len()).filter(|&i| usable(i)).map(w).sum();
        if total == 0 {
            return None;
        }
        let mut r = self.rng.u64(0..total);
        for i in 0..backends.len() {
            if !usable(i) {
                continue;
            }
            if r < w(i) {
                return Some(i);
            }
            r -= w(i);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackendConfig;

    fn backends(weights: &[u32]) -> Vec<Arc<Backend>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                Arc::new(Backend::new(&BackendConfig {
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
        let mut p = Picker::new(kind, bs.len(), 42);
        let mut c = vec![0; bs.len()];
        for _ in 0..n {
            c[p.pick(bs, usable).unwrap()] += 1;
        }
        c
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
        let mut p = Picker::new(PolicyKind::RoundRobin, 3, 0);
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
    fn least_outstanding_prefers_idle_backends() {
        let bs = backends(&[1, 1, 1]);
        for _ in 0..5 {
            bs[0].on_sent(true);
            bs[2].on_sent(true);
        }
        let mut p = Picker::new(PolicyKind::LeastOutstanding, 3, 0);
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
        bs[0].on_sent(true);
        bs[0].on_answer(std::time::Duration::from_millis(500));
        let c = counts(PolicyKind::P2cEwma, &bs, &|_| true, 3000);
        assert!(c[0] < 100, "{c:?}");
        assert!(c[1] > 1000 && c[2] > 1000, "{c:?}");
        // Same seed, same choices.
        assert_eq!(c, counts(PolicyKind::P2cEwma, &bs, &|_| true, 3000));
    }
}
