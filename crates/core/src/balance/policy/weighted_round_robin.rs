//! `weighted_round_robin`: in turn, in proportion to weight — nginx's smooth weighted round
//! robin, which spreads a heavy backend's turns instead of bunching them.

use super::Policy;
use crate::balance::Backend;
use std::sync::Arc;

/// Each backend's current weight.
#[derive(Debug)]
pub(super) struct Smooth {
    current: Vec<i64>,
}

impl Smooth {
    pub(super) fn new(n: usize) -> Self {
        Smooth {
            current: vec![0; n],
        }
    }
}

impl Policy for Smooth {
    fn pick(
        &mut self,
        backends: &[Arc<Backend>],
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        if self.current.len() < backends.len() {
            self.current.resize(backends.len(), 0);
        }
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, b) in backends.iter().enumerate() {
            if !eligible(i) {
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
}
