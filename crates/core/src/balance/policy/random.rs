//! `random`: a random eligible backend, in proportion to weight (also the keyless messages
//! of the key-hashing policies).

use super::Policy;
use crate::balance::Backend;
use std::sync::Arc;

/// A seeded generator, so tests repeat.
#[derive(Debug)]
pub(super) struct Random {
    rng: fastrand::Rng,
    weighted: bool,
}

impl Random {
    pub(super) fn new(seed: u64, weighted: bool) -> Self {
        Random {
            rng: fastrand::Rng::with_seed(seed),
            weighted,
        }
    }
}

impl Policy for Random {
    fn pick(
        &mut self,
        backends: &[Arc<Backend>],
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        pick_random(&mut self.rng, backends, eligible, self.weighted)
    }
}

/// A random eligible backend, by weight if `weighted`.
pub(super) fn pick_random(
    rng: &mut fastrand::Rng,
    backends: &[Arc<Backend>],
    eligible: &dyn Fn(usize) -> bool,
    weighted: bool,
) -> Option<usize> {
    let w = |i: usize| {
        if weighted {
            u64::from(backends[i].weight())
        } else {
            1
        }
    };
    let total: u64 = (0..backends.len()).filter(|&i| eligible(i)).map(w).sum();
    if total == 0 {
        return None;
    }
    let mut r = rng.u64(0..total);
    for i in 0..backends.len() {
        if !eligible(i) {
            continue;
        }
        if r < w(i) {
            return Some(i);
        }
        r -= w(i);
    }
    None
}
