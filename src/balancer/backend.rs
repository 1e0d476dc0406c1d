//! One backend's identity, live load and availability, shared by every worker: requests
//! awaiting answers, a peak-sensitive latency EWMA, counters, the active health verdict, the
//! passive ejection deadline and the drain flag. Written by the upstream side as messages
//! go out and answers come back, and by the health checker; read by the policies. Atomics
//! only, no locks. A backend keeps its state (and its id, which session pins refer to)
//! across config reloads as long as its name and address stay the same.

use crate::config::BackendConfig;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Weight of a new latency sample in the EWMA.
const EWMA_ALPHA: f64 = 0.2;
/// Latency assumed before the first answer: optimistic, so a new backend gets traffic.
const INITIAL_EWMA_NS: f64 = 1_000_000.0;

/// A backend and its shared live state.
#[derive(Debug)]
pub struct Backend {
    /// Process-unique id; session pins refer to it.
    pub id: u32,
    /// Name for logs.
    pub name: String,
    /// Where it listens.
    pub address: SocketAddr,
    weight: AtomicU32,
    draining: AtomicBool,
    healthy: AtomicBool,
    /// Milliseconds on [`crate::balancer::now_ms`]'s clock until which it is ejected.
    ejected_until: AtomicU64,
    consecutive_failures: AtomicU32,
    ejections: AtomicU32,
    outstanding: AtomicU64,
    ewma_ns: AtomicU64,
    sent: AtomicU64,
    answered: AtomicU64,
    failed: AtomicU64,
    up: AtomicBool,
}

impl Backend {
    /// A backend with no load, assumed up until a connection to it fails.
    pub fn new(cfg: &BackendConfig) -> Self {
        static NEXT_ID: AtomicU32 = AtomicU32::new(1);
        Backend {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            name: cfg.name.clone(),
            address: cfg.address,
            weight: AtomicU32::new(cfg.weight),
            draining: AtomicBool::new(cfg.drain),
            healthy: AtomicBool::new(true),
            ejected_until: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            outstanding: AtomicU64::new(0),
            ewma_ns: AtomicU64::new(INITIAL_EWMA_NS.to_bits()),
            sent: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            up: AtomicBool::new(true),
        }
    }

    /// Relative share of traffic.
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Applies a reloaded config's weight and drain flag.
    pub fn update(&self, cfg: &BackendConfig) {
        self.weight.store(cfg.weight, Ordering::Relaxed);
        self.set_draining(cfg.drain);
    }

    /// Whether the backend takes no new messages or pins (existing pins still apply).
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Starts or stops draining; returns the previous state.
    pub fn set_draining(&self, drain: bool) -> bool {
        self.draining.swap(drain, Ordering::Relaxed)
    }

    /// The active health checks' verdict (`true` when there are none).
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Records the health verdict; returns the previous one.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        self.healthy.swap(healthy, Ordering::Relaxed)
    }

    /// Whether passive outlier detection has ejected it at time `now_ms`.
    pub fn ejected(&self, now_ms: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now_ms
    }

    /// Healthy and not ejected: may carry messages.
    pub fn available(&self, now_ms: u64) -> bool {
        self.healthy() && !self.ejected(now_ms)
    }

    /// Counts one failure for outlier detection; returns the new consecutive count.
    pub fn count_failure(&self) -> u32 {
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Ejects until `until_ms` and counts the ejection; returns how many times it had been
    /// ejected before.
    pub fn eject(&self, until_ms: u64) -> u32 {
        self.ejected_until.store(until_ms, Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.ejections.fetch_add(1, Ordering::Relaxed)
    }

    /// Until when (on [`crate::balancer::now_ms`]'s clock) it is ejected; 0 if never.
    pub fn ejected_until(&self) -> u64 {
        self.ejected_until.load(Ordering::Relaxed)
    }

    /// How many times it has been ejected.
    pub fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Ends an ejection early (tests, operators); the count of past ejections stays.
    pub fn end_ejection(&self) {
        self.ejected_until.store(0, Ordering::Relaxed);
    }

    /// A message was queued to this backend; `awaits_answer` if it counts as outstanding.
    pub fn on_sent(&self, awaits_answer: bool) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        if awaits_answer {
            self.outstanding.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An answer arrived `latency` after its request was queued.
    pub fn on_answer(&self, latency: Duration) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
        self.dec_outstanding();
        let sample = latency.as_nanos() as f64;
        let old = f64::from_bits(self.ewma_ns.load(Ordering::Relaxed));
        // Peak-sensitive: a slow answer is believed at once, recovery is gradual.
        let new = if sample > old {
            sample
        } else {
            old + EWMA_ALPHA * (sample - old)
        };
        self.ewma_ns.store(new.to_bits(), Ordering::Relaxed);
    }

    /// A request to this backend failed without an answer.
    pub fn on_failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.dec_outstanding();
    }

    fn dec_outstanding(&self) {
        let _ = self
            .outstanding
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Requests awaiting answers, across all workers.
    pub fn outstanding(&self) -> u64 {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Latency EWMA in nanoseconds.
    pub fn ewma_ns(&self) -> f64 {
        f64::from_bits(self.ewma_ns.load(Ordering::Relaxed))
    }

    /// Messages sent to this backend so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Answers received so far.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Requests failed so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Whether the last connection attempt by any worker succeeded.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Records whether the backend accepts connections; returns the previous state.
    pub fn set_up(&self, up: bool) -> bool {
        self.up.swap(up, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend() -> Backend {
        Backend::new(&BackendConfig {
            name: "b".into(),
            address: "127.0.0.1:1".parse().unwrap(),
            weight: 1,
            drain: false,
        })
    }

    #[test]
    fn outstanding_follows_sends_and_answers() {
        let b = backend();
        b.on_sent(true);
        b.on_sent(true);
        b.on_sent(false);
        assert_eq!(b.outstanding(), 2);
        b.on_answer(Duration::from_millis(1));
        b.on_failed();
        b.on_failed(); // never below zero
        assert_eq!(b.outstanding(), 0);
        assert_eq!((b.sent(), b.answered(), b.failed()), (3, 1, 2));
    }

    #[test]
    fn ewma_jumps_to_peaks_and_decays() {
        let b = backend();
        b.on_answer(Duration::from_millis(50));
        assert_eq!(b.ewma_ns(), 50e6);
        for _ in 0..50 {
            b.on_answer(Duration::from_millis(1));
        }
        assert!(b.ewma_ns() < 2e6, "{}", b.ewma_ns());
    }
}
