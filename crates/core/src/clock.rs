//! The clock of ejection deadlines and availability checks: milliseconds since the
//! process's first call, monotonic.

use std::sync::OnceLock;
use std::time::Instant;

/// Milliseconds since the process's first call.
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}
