//! `least_outstanding`: the fewest requests awaiting answers across all workers, divided by
//! weight; ties rotate.

use super::Policy;
use crate::balance::Backend;
use std::sync::Arc;

/// Where the next scan starts, so ties spread instead of piling on backend 0.
#[derive(Debug)]
pub(super) struct LeastOutstanding {
    next: usize,
}

impl LeastOutstanding {
    pub(super) fn new(n: usize, seed: u64) -> Self {
        LeastOutstanding {
            next: (seed as usize) % n.max(1),
        }
    }
}

impl Policy for LeastOutstanding {
    fn pick(
        &mut self,
        backends: &[Arc<Backend>],
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = backends.len();
        if n == 0 {
            return None;
        }
        let start = self.next % n;
        self.next = (start + 1) % n;
        let mut best: Option<(usize, f64)> = None;
        for step in 0..n {
            let i = (start + step) % n;
            if !eligible(i) {
                continue;
            }
            let b = &backends[i];
            let load = (b.load.outstanding() as f64 + 1.0) / f64::from(b.weight());
            if best.is_none_or(|(_, l)| load < l) {
                best = Some((i, load));
            }
        }
        best.map(|(i, _)| i)
    }
}
