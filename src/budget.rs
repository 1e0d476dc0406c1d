//! The process-wide budget for bytes buffered from clients, in the spirit of Envoy's
//! overload manager: each client's input buffer may hold up to its listener's
//! `max_buffered_bytes`, and there may be thousands of clients, so together they could ask
//! for far more memory than the machine has. Every client charges its buffer's growth here;
//! once the budget is spent no client grows its buffer (reading on into room it already has
//! is still allowed, so clients sending small complete requests keep being served), and the
//! worker closes the client holding the most partial-frame bytes to make room.

use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Notify;

/// Bytes buffered from clients, process-wide, against a limit.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: AtomicUsize,
    held: AtomicUsize,
    /// Signalled when the budget goes from spent to not spent.
    freed: Notify,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        Budget {
            limit: AtomicUsize::new(limit),
            held: AtomicUsize::new(0),
            freed: Notify::new(),
        }
    }

    /// Applies a reloaded limit.
    pub(crate) fn set_limit(&self, limit: usize) {
        let before = self.spent();
        self.limit.store(limit, Ordering::Relaxed);
        if before && !self.spent() {
            self.freed.notify_waiters();
        }
    }

    /// The limit in bytes.
    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Bytes charged now.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Whether no client may grow its buffer now.
    pub(crate) fn spent(&self) -> bool {
        self.held() >= self.limit()
    }

    fn charge(&self, n: usize) {
        self.held.fetch_add(n, Ordering::Relaxed);
    }

    fn release(&self, n: usize) {
        let before = self.held.fetch_sub(n, Ordering::Relaxed);
        let limit = self.limit();
        if before >= limit && before - n < limit {
            self.freed.notify_waiters();
        }
    }

    /// Resolves when the budget stops being spent (register before checking).
    pub(crate) fn freed(&self) -> tokio::sync::futures::Notified<'_> {
        self.freed.notified()
    }
}

/// What one client's buffer has charged to the budget; released when dropped.
#[derive(Debug)]
pub(crate) struct Charge<'b> {
    budget: &'b Budget,
    bytes: usize,
}

impl<'b> Charge<'b> {
    /// Nothing charged yet.
    pub(crate) fn new(budget: &'b Budget) -> Self {
        Charge { budget, bytes: 0 }
    }

    /// The buffer's capacity is now `capacity`: charge its growth (a buffer that shrank in
    /// place keeps its charge until [`Self::release_all`]).
    pub(crate) fn grew_to(&mut self, capacity: usize) {
        if capacity > self.bytes {
            self.budget.charge(capacity - self.bytes);
            self.bytes = capacity;
        }
    }

    /// The buffer was given back.
    pub(crate) fn release_all(&mut self) {
        self.budget.release(std::mem::take(&mut self.bytes));
    }
}

impl Drop for Charge<'_> {
    fn drop(&mut self) {
        self.release_all();
    }
}

/// The default budget: a quarter of the machine's memory (at least 64 MiB), from
/// `/proc/meminfo`; 1 GiB where that cannot be read.
pub(crate) fn default_limit() -> usize {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<usize>().ok())
        })
        .map(|kib| kib.saturating_mul(1024));
    total.map_or(1 << 30, |t| (t / 4).max(64 << 20))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_follow_growth_and_come_back() {
        let b = Budget::new(100);
        {
            let mut c = Charge::new(&b);
            c.grew_to(40);
            c.grew_to(30); // shrank in place: still charged for 40
            assert_eq!(b.held(), 40);
            let mut d = Charge::new(&b);
            d.grew_to(60);
            assert!(b.spent());
            d.release_all();
            assert!(!b.spent());
            d.grew_to(10);
        }
        assert_eq!(b.held(), 0, "dropped charges are released");
        assert!(default_limit() >= 64 << 20);
    }

    #[test]
    fn freeing_wakes_waiters_once_the_budget_is_no_longer_spent() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let b = Budget::new(10);
            let mut c = Charge::new(&b);
            c.grew_to(20);
            let woken = b.freed();
            tokio::pin!(woken);
            assert!(futures_poll(&mut woken).is_pending());
            c.release_all();
            assert!(futures_poll(&mut woken).is_ready());
        });
    }

    fn futures_poll<F: std::future::Future + Unpin>(f: &mut F) -> std::task::Poll<F::Output> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        std::pin::Pin::new(f).poll(&mut cx)
    }
}
