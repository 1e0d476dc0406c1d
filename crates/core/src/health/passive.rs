//! Passive health (Envoy's outlier detection): failures seen on real traffic (connect
//! refused or timed out, a connection lost with requests in flight, a request timeout)
//! count per backend; `consecutive_failures` in a row eject it for `base_ejection`, doubled
//! per earlier ejection up to `max_ejection`, while at most `max_ejected_percent` of the
//! cluster's backends are out at once. An answer ends a streak. This module keeps one
//! backend's count and period; the cluster-wide budget is applied by
//! [`crate::balance::Cluster::report_failure`].

use crate::settings::OutlierSettings;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// One backend's ejection state.
#[derive(Debug, Default)]
pub struct Ejection {
    /// Milliseconds on [`crate::clock::now_ms`]'s clock until which it is ejected.
    until: AtomicU64,
    consecutive_failures: AtomicU32,
    ejections: AtomicU32,
}

impl Ejection {
    /// Whether it is ejected at time `now_ms`.
    #[inline]
    pub fn ejected(&self, now_ms: u64) -> bool {
        self.until.load(Ordering::Relaxed) > now_ms
    }

    /// Until when it is ejected; 0 if never.
    pub fn until(&self) -> u64 {
        self.until.load(Ordering::Relaxed)
    }

    /// Counts one failure; returns the new consecutive count.
    pub fn count_failure(&self) -> u32 {
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// An answer came back: the streak ends.
    #[inline]
    pub fn on_success(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// Ejects until `until_ms` and counts the ejection; returns how many times it had been
    /// ejected before.
    pub fn eject(&self, until_ms: u64) -> u32 {
        self.until.store(until_ms, Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.ejections.fetch_add(1, Ordering::Relaxed)
    }

    /// How many times it has been ejected.
    pub fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Ends an ejection early (tests, operators); the count of past ejections stays.
    pub fn end(&self) {
        self.until.store(0, Ordering::Relaxed);
    }
}

/// How long a backend ejected `before` times already is ejected now, in milliseconds:
/// `base_ejection` doubled per earlier ejection, up to `max_ejection`.
pub fn ejection_period(o: &OutlierSettings, before: u32) -> u64 {
    (o.base_ejection.as_millis() as u64)
        .saturating_mul(1u64 << before.min(40))
        .min(o.max_ejection.as_millis() as u64)
}
