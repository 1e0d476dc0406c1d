//! Load measurement: one backend's requests awaiting answers (across all workers), a
//! peak-sensitive latency EWMA, and the answers it gave (which poison isolation reads as a
//! sign of life). Written by the backend connections as messages go out and answers come
//! back; read by the policies. Atomics only, no locks. Counting for operators is not here:
//! it is per worker, in the proxy's metrics, off the shared cache lines.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Weight of a new latency sample in the EWMA.
const EWMA_ALPHA: f64 = 0.2;
/// Latency assumed before the first answer: optimistic, so a new backend gets traffic.
const INITIAL_EWMA_NS: f64 = 1_000_000.0;

/// A backend's live load.
#[derive(Debug)]
pub struct Load {
    outstanding: AtomicU64,
    ewma_ns: AtomicU64,
    answered: AtomicU64,
    /// Sessions pinned to the backend, counted by the cluster's session store.
    sessions: Arc<AtomicU64>,
}

impl Default for Load {
    fn default() -> Self {
        Load {
            outstanding: AtomicU64::new(0),
            ewma_ns: AtomicU64::new(INITIAL_EWMA_NS.to_bits()),
            answered: AtomicU64::new(0),
            sessions: Arc::default(),
        }
    }
}

impl Load {
    /// A message was queued to the backend; `awaits_answer` if it counts as outstanding.
    #[inline]
    pub fn on_sent(&self, awaits_answer: bool) {
        if awaits_answer {
            self.outstanding.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An answer arrived `latency` after its request was queued.
    #[inline]
    pub fn on_answer(&self, latency: Duration) {
        self.on_final_answer();
        self.on_first_answer(latency);
    }

    /// A request to the backend failed without an answer.
    #[inline]
    pub fn on_failed(&self) {
        self.dec_outstanding();
    }

    #[inline]
    fn dec_outstanding(&self) {
        let _ = self
            .outstanding
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// A first, provisional answer arrived `latency` after its request was queued: the
    /// latency EWMA learns from it (the final answer then only ends the request).
    #[inline]
    pub fn on_first_answer(&self, latency: Duration) {
        // Not `as_nanos() as f64`: a u128 to f64 conversion is a library call.
        let sample = latency.as_secs_f64() * 1e9;
        let old = f64::from_bits(self.ewma_ns.load(Ordering::Relaxed));
        // Peak-sensitive: a slow answer is believed at once, recovery is gradual.
        let new = if sample > old {
            sample
        } else {
            old + EWMA_ALPHA * (sample - old)
        };
        self.ewma_ns.store(new.to_bits(), Ordering::Relaxed);
    }

    /// The final answer of a request that had a provisional one (its latency counted then).
    #[inline]
    pub fn on_final_answer(&self) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        self.dec_outstanding();
    }

    /// Sessions pinned to the backend (every worker's; the session store counts them).
    #[inline]
    pub fn sessions(&self) -> u64 {
        self.sessions.load(Ordering::Relaxed)
    }

    /// The counter the session store counts the backend's pins into.
    pub fn sessions_counter(&self) -> Arc<AtomicU64> {
        self.sessions.clone()
    }

    /// Requests awaiting answers, across all workers.
    #[inline]
    pub fn outstanding(&self) -> u64 {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Latency EWMA in nanoseconds.
    #[inline]
    pub fn ewma_ns(&self) -> f64 {
        f64::from_bits(self.ewma_ns.load(Ordering::Relaxed))
    }

    /// Answers received so far.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outstanding_follows_sends_and_answers() {
        let l = Load::default();
        l.on_sent(true);
        l.on_sent(true);
        l.on_sent(false);
        assert_eq!(l.outstanding(), 2);
        l.on_answer(Duration::from_millis(1));
        l.on_failed();
        l.on_failed(); // never below zero
        assert_eq!(l.outstanding(), 0);
        assert_eq!(l.answered(), 1);
    }

    #[test]
    fn ewma_jumps_to_peaks_and_decays() {
        let l = Load::default();
        l.on_answer(Duration::from_millis(50));
        assert_eq!(l.ewma_ns(), 50e6);
        for _ in 0..50 {
            l.on_answer(Duration::from_millis(1));
        }
        assert!(l.ewma_ns() < 2e6, "{}", l.ewma_ns());
    }
}
