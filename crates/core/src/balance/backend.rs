//! One backend's identity and membership state, shared by every worker: its id (which
//! session pins refer to), name and address, weight, drain flag, the active health checks'
//! verdict, whether this process can connect to it, its passive ejection state, and its
//! live [`Load`]. Atomics only, no locks. A backend keeps all of it (and its id) across
//! config reloads as long as its name and address stay the same.

use super::load::Load;
use crate::health::passive::Ejection;
use crate::settings::BackendSettings;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// A backend and its shared live state.
#[derive(Debug)]
pub struct Backend {
    /// Process-unique id; session pins refer to it.
    pub id: u32,
    /// Name for logs, and what the key-hashing policies hash.
    pub name: String,
    /// Where it listens.
    pub address: SocketAddr,
    /// Its live load.
    pub load: Load,
    /// Passive outlier ejection: consecutive failures and the ejection deadline.
    pub ejection: Ejection,
    weight: AtomicU32,
    draining: AtomicBool,
    healthy: AtomicBool,
    up: AtomicBool,
    /// Health verdict changes: to unhealthy, to healthy.
    health_changes: [AtomicU64; 2],
}

impl Backend {
    /// A backend with no load, assumed up until a connection to it fails.
    pub fn new(s: &BackendSettings) -> Self {
        static NEXT_ID: AtomicU32 = AtomicU32::new(1);
        Backend {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            name: s.name.clone(),
            address: s.address,
            load: Load::default(),
            ejection: Ejection::default(),
            weight: AtomicU32::new(s.weight),
            draining: AtomicBool::new(s.drain),
            healthy: AtomicBool::new(true),
            up: AtomicBool::new(true),
            health_changes: Default::default(),
        }
    }

    /// Relative share of traffic.
    #[inline]
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Applies a reloaded config's weight and drain flag.
    pub fn update(&self, s: &BackendSettings) {
        self.weight.store(s.weight, Ordering::Relaxed);
        self.set_draining(s.drain);
    }

    /// Whether the backend takes no new messages or pins (existing pins still apply).
    #[inline]
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Starts or stops draining; returns the previous state.
    pub fn set_draining(&self, drain: bool) -> bool {
        self.draining.swap(drain, Ordering::Relaxed)
    }

    /// The active health checks' verdict (`true` when there are none).
    #[inline]
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Records the health verdict; returns the previous one.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        let was = self.healthy.swap(healthy, Ordering::Relaxed);
        if was != healthy {
            self.health_changes[usize::from(healthy)].fetch_add(1, Ordering::Relaxed);
        }
        was
    }

    /// How many times the health verdict changed to `healthy`.
    pub fn health_changes(&self, healthy: bool) -> u64 {
        self.health_changes[usize::from(healthy)].load(Ordering::Relaxed)
    }

    /// Sets the relative share of traffic at run time (an operator's change, until the
    /// next reload applies the config's).
    pub fn set_weight(&self, weight: u32) {
        self.weight.store(weight, Ordering::Relaxed);
    }

    /// Healthy and not ejected at time `now_ms`: may carry messages.
    #[inline]
    pub fn available(&self, now_ms: u64) -> bool {
        self.healthy() && !self.ejection.ejected(now_ms)
    }

    /// Whether the last connection attempt by any worker succeeded.
    #[inline]
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Records whether the backend accepts connections; returns the previous state.
    pub fn set_up(&self, up: bool) -> bool {
        self.up.swap(up, Ordering::Relaxed)
    }

    /// An answer came back `latency` after its request: load, and the end of a failure
    /// streak.
    #[inline]
    pub fn on_answer(&self, latency: std::time::Duration) {
        self.load.on_answer(latency);
        self.ejection.on_success();
    }

    /// A request's first answer was provisional, `latency` after it was queued: the
    /// backend is alive and this is its latency; the request stays outstanding until its
    /// final answer ([`Load::on_final_answer`]).
    pub fn on_provisional(&self, latency: std::time::Duration) {
        self.load.on_first_answer(latency);
        self.ejection.on_success();
    }
}
