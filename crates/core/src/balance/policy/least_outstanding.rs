//! `least_outstanding`: the fewest requests awaiting answers across all workers, divided by
//! weight; ties rotate. `least_sessions` is the same walk over another measure: the
//! sessions pinned to each backend (calls open on it), which a one-request-many-answers
//! protocol's load shows better than its requests in flight.

use super::Policy;
use crate::balance::Backend;
use std::sync::Arc;

/// The least loaded backend by `measure`; the next scan's start rotates, so ties spread
/// instead of piling on backend 0.
#[derive(Debug)]
pub(super) struct LeastOutstanding {
    next: usize,
    measure: fn(&Backend) -> u64,
}

impl LeastOutstanding {
    /// `least_outstanding`.
    pub(super) fn new(n: usize, seed: u64) -> Self {
        LeastOutstanding {
            next: (seed as usize) % n.max(1),
            measure: |b| b.load.outstanding(),
        }
    }

    /// `least_sessions`.
    pub(super) fn sessions(n: usize, seed: u64) -> Self {
        LeastOutstanding {
            measure: |b| b.load.sessions(),
            ..Self::new(n, seed)
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
            let load = ((self.measure)(b) as f64 + 1.0) / f64::from(b.weight());
            if best.is_none_or(|(_, l)| load < l) {
                best = Some((i, load));
            }
        }
        best.map(|(i, _)| i)
    }
}
