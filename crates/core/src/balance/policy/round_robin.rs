//! `round_robin`: each eligible backend in turn (per worker).

use super::Policy;
use crate::balance::Backend;
use std::sync::Arc;

/// The next backend after the last one chosen.
#[derive(Debug)]
pub(super) struct RoundRobin {
    next: usize,
}

impl RoundRobin {
    pub(super) fn new(n: usize, seed: u64) -> Self {
        RoundRobin {
            next: (seed as usize) % n.max(1),
        }
    }
}

impl Policy for RoundRobin {
    fn pick(
        &mut self,
        backends: &[Arc<Backend>],
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = backends.len();
        for step in 0..n {
            let i = (self.next + step) % n;
            if eligible(i) {
                self.next = (i + 1) % n;
                return Some(i);
            }
        }
        None
    }
}
