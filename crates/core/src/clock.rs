//! The clock of ejection deadlines and availability checks: milliseconds since the
//! process's first call, monotonic.

use std::sync::OnceLock;
use std::time::Instant;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since the process's first call.
pub fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

/// `at` on the same clock: for a caller that read the time once for many messages (a
/// client's pass over what it read), so routing each of them reads no clock.
pub fn ms_at(at: Instant) -> u64 {
    at.saturating_duration_since(epoch()).as_millis() as u64
}
