//! `p2c_ewma`: the power of two random choices — two random eligible backends, the one
//! with the lower latency-EWMA × (outstanding + 1) ÷ weight.

use super::random::pick_random;
use super::Policy;
use crate::balance::Backend;
use std::sync::Arc;

/// A seeded generator, so tests repeat.
#[derive(Debug)]
pub(super) struct P2c {
    rng: fastrand::Rng,
}

impl P2c {
    pub(super) fn new(seed: u64) -> Self {
        P2c {
            rng: fastrand::Rng::with_seed(seed),
        }
    }
}

impl Policy for P2c {
    fn pick(
        &mut self,
        backends: &[Arc<Backend>],
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = backends.len();
        let a = pick_random(&mut self.rng, backends, eligible, false)?;
        let cost = |i: usize| {
            let b = &backends[i];
            b.load.ewma_ns() * (b.load.outstanding() as f64 + 1.0) / f64::from(b.weight())
        };
        // Second choice distinct from the first, when another eligible one exists.
        let mut b = a;
        for _ in 0..4 {
            let c = self.rng.usize(0..n);
            if c != a && eligible(c) {
                b = c;
                break;
            }
        }
        if b == a {
            b = (1..n)
                .map(|d| (a + d) % n)
                .find(|&c| eligible(c))
                .unwrap_or(a);
        }
        let (ca, cb) = (cost(a), cost(b));
        tracing::trace!(a, b, ca, cb, "p2c pick");
        Some(if cb < ca { b } else { a })
    }
}
