//! The proxy's counters, as the hot path writes them: blocks of single-writer atomic
//! counters, one block per worker per listener ([`ListenerCounters`]), per worker per
//! backend ([`BackendCounters`]) and per worker ([`WorkerCounters`]), each on cache lines
//! of its own, so that counting a message is a plain load and store on memory only its
//! worker touches (no locked instruction, no line shared between cores). The [`Hub`] holds
//! every block by name; a scrape (the admin listener, on the control thread) sums the
//! workers' blocks. Blocks are kept by name across reloads, so counters never go back.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_core::balance::How;
use switchyard_core::{BackendFault, ClientFault, CloseReason, Fault, Route, Routed};
use switchyard_proto::CodecError;

/// A counter written by one thread only (its worker) and read by any: `add` is a load and
/// a store, not a read-modify-write.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the block's own worker may call it.
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Adds one.
    #[inline]
    pub(crate) fn inc(&self) {
        self.add(1);
    }

    /// Takes one away (for gauges kept as a count, such as open connections).
    #[inline]
    pub(crate) fn dec(&self) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_sub(1),
            Ordering::Relaxed,
        );
    }

    /// Sets a gauge.
    #[inline]
    pub(crate) fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// The value.
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds of the answer-latency histogram's buckets, in seconds.
pub(crate) const LATENCY_BUCKETS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// The same bounds in nanoseconds, for the hot path's comparisons.
const LATENCY_BUCKETS_NS: [u64; 17] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// A latency histogram: a count per bucket (not cumulative; the scrape sums them), the
/// sum in nanoseconds.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    buckets: [Counter; LATENCY_BUCKETS.len() + 1],
    sum_ns: Counter,
}

impl Histogram {
    /// Records one observation.
    #[inline]
    pub(crate) fn observe(&self, d: Duration) {
        let ns = d.as_secs() * 1_000_000_000 + u64::from(d.subsec_nanos());
        // From the low end: answers mostly come in the first few buckets.
        let mut i = 0;
        while i < LATENCY_BUCKETS_NS.len() && ns > LATENCY_BUCKETS_NS[i] {
            i += 1;
        }
        self.buckets[i].inc();
        self.sum_ns.add(ns);
    }

    /// Observations so far.
    pub(crate) fn count(&self) -> u64 {
        self.buckets.iter().map(Counter::get).sum()
    }

    /// Adds this block's buckets (not cumulative, the last one is `+Inf` only) and sum
    /// into `into`.
    pub(crate) fn sum_into(&self, into: &mut HistogramSum) {
        for (t, b) in into.buckets.iter_mut().zip(&self.buckets) {
            *t += b.get();
        }
        into.sum_ns += self.sum_ns.get();
    }
}

/// Histograms of several workers, summed.
#[derive(Debug, Default, Clone)]
pub(crate) struct HistogramSum {
    /// Per bucket (not cumulative); the last is above every bound.
    pub(crate) buckets: [u64; LATENCY_BUCKETS.len() + 1],
    /// Sum of observations, nanoseconds.
    pub(crate) sum_ns: u64,
}

/// Why a client connection ended, as a metric label. The variants of [`CloseReason`] and
/// its faults, in a fixed order (the index into [`ListenerCounters::closed`]).
pub(crate) const CLOSE_REASONS: [&str; 22] = [
    "client_closed",
    "idle",
    "shutting_down",
    "quit",
    "script_suspended",
    "bad_request",
    "closed_mid_frame",
    "slow_frame",
    "not_reading",
    "over_budget",
    "io",
    "poison",
    "backend_lost",
    "backend_timed_out",
    "no_backend",
    "key_down",
    "no_free_id",
    "script",
    "config",
    "internal",
    "duplicate_id",
    "no_session",
];

/// `reason`'s index in [`CLOSE_REASONS`].
pub(crate) fn close_index(reason: &CloseReason) -> usize {
    match reason {
        CloseReason::ClientClosed => 0,
        CloseReason::Idle => 1,
        CloseReason::ShuttingDown => 2,
        CloseReason::Quit => 3,
        CloseReason::ScriptSuspended => 4,
        CloseReason::Fault(f) => match f {
            Fault::Client(c) => match c {
                ClientFault::BadRequest(_) => 5,
                ClientFault::ClosedMidFrame(_) => 6,
                ClientFault::SlowFrame { .. } => 7,
                ClientFault::NotReading { .. } => 8,
                ClientFault::OverBudget { .. } => 9,
                ClientFault::Io(_) => 10,
                ClientFault::Poison { .. } => 11,
                ClientFault::DuplicateId => 20,
            },
            Fault::Backend(b) => match b {
                BackendFault::Lost { .. } => 12,
                BackendFault::TimedOut { .. } => 13,
                BackendFault::NoBackend(_) => 14,
                BackendFault::KeyDown(_) => 15,
                BackendFault::NoFreeId => 16,
                BackendFault::NoSession => 21,
            },
            Fault::Script(_) => 17,
            Fault::Config(_) => 18,
            Fault::Internal(_) => 19,
        },
    }
}

/// Why a codec refused bytes, as a metric label (the index into the codec-error counters).
pub(crate) const CODEC_REASONS: [&str; 5] =
    ["too_large", "oversized", "malformed", "script", "rejected"];

/// `e`'s index in [`CODEC_REASONS`].
pub(crate) fn codec_index(e: &CodecError) -> usize {
    match e {
        CodecError::TooLarge { .. } => 0,
        CodecError::Oversized { .. } => 1,
        CodecError::Malformed(_) => 2,
        CodecError::Script(_) => 3,
        CodecError::Rejected(_) => 4,
    }
}

/// What a route found for a keyed message, as a metric label (the index into
/// [`ListenerCounters::pins`]).
pub(crate) const PIN_OUTCOMES: [&str; 5] = ["hit", "new", "moved", "pinned_down", "unavailable"];

/// `routed`'s index in [`PIN_OUTCOMES`], for a keyed message of a cluster with pins; `None`
/// while it waits for room (it is routed again).
#[inline]
pub(crate) fn pin_index(routed: &Routed) -> Option<usize> {
    match routed {
        Routed::To(Route {
            how: How::Pinned, ..
        }) => Some(0),
        Routed::To(Route {
            how: How::Placed, ..
        }) => Some(1),
        Routed::To(_) => Some(2),
        Routed::PinnedDown(_) => Some(3),
        Routed::Unavailable | Routed::NoSession => Some(4),
        Routed::Busy => None,
    }
}

/// One worker's counters for one listener.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct ListenerCounters {
    /// Requests read from clients (complete frames).
    pub(crate) messages_in: Counter,
    /// Bytes read from clients.
    pub(crate) bytes_in: Counter,
    /// Answers written to clients (backend answers, error answers, local answers, pushes).
    pub(crate) messages_out: Counter,
    /// Their bytes.
    pub(crate) bytes_out: Counter,
    /// Client connections accepted.
    pub(crate) opened: Counter,
    /// Client connections closed at once: the listener was at `max_connections`.
    pub(crate) refused: Counter,
    /// Client connections closed, by [`CLOSE_REASONS`].
    pub(crate) closed: [Counter; CLOSE_REASONS.len()],
    /// Client bytes the codec refused, by [`CODEC_REASONS`].
    pub(crate) codec_errors: [Counter; CODEC_REASONS.len()],
    /// Keyed routes, by [`PIN_OUTCOMES`].
    pub(crate) pins: [Counter; PIN_OUTCOMES.len()],
    /// Messages dropped unanswered, by why they failed ([`CLOSE_REASONS`]' faults): one-way
    /// messages that could not go, and failed requests of clients whose answers need no
    /// order and that have no error answer (the client stays connected).
    pub(crate) dropped: [Counter; CLOSE_REASONS.len()],
    /// Frames the protocol handled itself (`LOCAL`, `DROP`: keep-alives, pings).
    pub(crate) local: Counter,
    /// TLS handshakes completed.
    pub(crate) tls_handshakes: Counter,
    /// Connections closed before their protocol started, by [`PRELUDE_REASONS`].
    pub(crate) prelude_failures: [Counter; PRELUDE_REASONS.len()],
}

/// Why a connection was closed before its protocol started, as a metric label: a bad or
/// missing PROXY header, a failed TLS handshake, either too slow, too many handshakes at
/// once.
pub(crate) const PRELUDE_REASONS: [&str; 4] = ["proxy_header", "tls", "timeout", "busy"];
/// [`PRELUDE_REASONS`]' indices.
pub(crate) const PRELUDE_PROXY: usize = 0;
/// See [`PRELUDE_PROXY`].
pub(crate) const PRELUDE_TLS: usize = 1;
/// See [`PRELUDE_PROXY`].
pub(crate) const PRELUDE_TIMEOUT: usize = 2;
/// See [`PRELUDE_PROXY`].
pub(crate) const PRELUDE_BUSY: usize = 3;

impl ListenerCounters {
    /// A client connection ended for `reason`.
    pub(crate) fn on_close(&self, reason: &CloseReason) {
        self.closed[close_index(reason)].inc();
    }
}

/// Why a request to a backend failed without an answer, as a metric label.
pub(crate) const FAILURE_REASONS: [&str; 2] = ["lost", "timed_out"];

/// [`FAILURE_REASONS`]' `lost`.
pub(crate) const LOST: usize = 0;

/// One worker's counters for one backend.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct BackendCounters {
    /// Requests queued to the backend.
    pub(crate) requests: Counter,
    /// Their bytes.
    pub(crate) request_bytes: Counter,
    /// Messages read from it that answered no waiting request: pushes, late answers.
    /// (Answers to requests are the latency histogram's count.)
    pub(crate) unasked: Counter,
    /// Answers after a request's first (a provisional answer's successors).
    pub(crate) further: Counter,
    /// Bytes of everything read from it.
    pub(crate) answer_bytes: Counter,
    /// Requests failed without an answer, by [`FAILURE_REASONS`].
    pub(crate) failures: [Counter; FAILURE_REASONS.len()],
    /// From queuing a request to reading its answer.
    pub(crate) latency: Histogram,
    /// Connections established (shared and probation).
    pub(crate) connects: Counter,
    /// Connection attempts that failed.
    pub(crate) connect_failures: Counter,
    /// Established shared connections that ended (closed, I/O error, bad answer).
    pub(crate) losses: Counter,
    /// Shared connections open now (this worker's).
    pub(crate) open: Counter,
    /// Answer bytes the codec refused, by [`CODEC_REASONS`].
    pub(crate) codec_errors: [Counter; CODEC_REASONS.len()],
    /// Requests re-sent on probation and answered.
    pub(crate) retries_answered: Counter,
    /// Requests found to be poison.
    pub(crate) poisoned: Counter,
    /// Probations stopped by the storm guard.
    pub(crate) probations_stopped: Counter,
}

impl BackendCounters {
    /// A request of `len` bytes was queued.
    #[inline]
    pub(crate) fn on_request(&self, len: usize) {
        self.requests.inc();
        self.request_bytes.add(len as u64);
    }

    /// An answer of `len` bytes came `latency` after its request (`None`: a push or a late
    /// answer).
    #[inline]
    pub(crate) fn on_answer(&self, len: usize, latency: Option<Duration>) {
        self.answer_bytes.add(len as u64);
        match latency {
            Some(l) => self.latency.observe(l),
            None => self.unasked.inc(),
        }
    }

    /// A further answer of a request answered before (after a provisional one): counted,
    /// its latency not (the first answer's was).
    pub(crate) fn on_further_answer(&self, len: usize) {
        self.answer_bytes.add(len as u64);
        self.further.inc();
    }

    /// A request failed without an answer, for `fault`: timed out, or lost (a poison
    /// request is counted in `poisoned` instead).
    pub(crate) fn on_failure(&self, fault: &Fault) {
        match fault {
            Fault::Backend(BackendFault::TimedOut { .. }) => self.failures[1].inc(),
            Fault::Client(ClientFault::Poison { .. }) => {}
            _ => self.failures[LOST].inc(),
        }
    }

    /// Everything read from the backend: answers and unasked messages.
    pub(crate) fn answers(&self) -> u64 {
        self.latency
            .count()
            .wrapping_add(self.unasked.get())
            .wrapping_add(self.further.get())
    }
}

/// One worker's own counters.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct WorkerCounters {
    /// Worst lateness of the worker's 100 ms tick over the last second, nanoseconds.
    pub(crate) loop_lag_ns: Counter,
    /// When the tick last ran, in [`switchyard_core::clock`] milliseconds (a worker stuck
    /// in one task shows as a tick long overdue, not as its last good second).
    pub(crate) last_tick_ms: Counter,
    /// Pushes delivered to their session's client (by the owner's worker).
    pub(crate) pushes_delivered: Counter,
    /// Pushes dropped: no live session, owner gone, or inbox full.
    pub(crate) pushes_dropped: Counter,
    /// Clients closed to bring the buffer budget back.
    pub(crate) budget_closes: Counter,
    /// Open client connections on this worker.
    pub(crate) clients: Counter,
}

/// A name's blocks, one per worker (created on first use).
type PerWorker<T> = Vec<Option<Arc<T>>>;

/// Every counter block of the process, by name, for scrapes.
#[derive(Debug)]
pub(crate) struct Hub {
    workers: Vec<Arc<WorkerCounters>>,
    listeners: Mutex<BTreeMap<String, PerWorker<ListenerCounters>>>,
    backends: Mutex<BTreeMap<(String, String), PerWorker<BackendCounters>>>,
}

fn slot<T: Default>(per: &mut PerWorker<T>, worker: usize, workers: usize) -> Arc<T> {
    if per.len() < workers {
        per.resize_with(workers, || None);
    }
    per[worker].get_or_insert_with(Default::default).clone()
}

impl Hub {
    /// A hub for `workers` workers.
    pub(crate) fn new(workers: usize) -> Self {
        Hub {
            workers: (0..workers.max(1)).map(|_| Arc::default()).collect(),
            listeners: Mutex::default(),
            backends: Mutex::default(),
        }
    }

    /// Worker `worker`'s own block.
    pub(crate) fn worker(&self, worker: usize) -> Arc<WorkerCounters> {
        self.workers[worker].clone()
    }

    /// Every worker's own block, by worker index.
    pub(crate) fn workers(&self) -> &[Arc<WorkerCounters>] {
        &self.workers
    }

    /// Worker `worker`'s block for listener `name` (the same block on every call).
    pub(crate) fn listener(&self, worker: usize, name: &str) -> Arc<ListenerCounters> {
        let mut m = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        slot(
            m.entry(name.to_string()).or_default(),
            worker,
            self.workers.len(),
        )
    }

    /// Worker `worker`'s block for backend `backend` of cluster `cluster`.
    pub(crate) fn backend(
        &self,
        worker: usize,
        cluster: &str,
        backend: &str,
    ) -> Arc<BackendCounters> {
        let mut m = self.backends.lock().unwrap_or_else(|p| p.into_inner());
        slot(
            m.entry((cluster.to_string(), backend.to_string()))
                .or_default(),
            worker,
            self.workers.len(),
        )
    }

    /// Every worker's blocks of listener `name`.
    pub(crate) fn listener_blocks(&self, name: &str) -> Vec<Arc<ListenerCounters>> {
        let m = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        m.get(name)
            .map(|v| v.iter().flatten().cloned().collect())
            .unwrap_or_default()
    }

    /// Every worker's blocks of a backend.
    pub(crate) fn backend_blocks(&self, cluster: &str, backend: &str) -> Vec<Arc<BackendCounters>> {
        let m = self.backends.lock().unwrap_or_else(|p| p.into_inner());
        m.get(&(cluster.to_string(), backend.to_string()))
            .map(|v| v.iter().flatten().cloned().collect())
            .unwrap_or_default()
    }
}

/// Sums `field` over blocks.
pub(crate) fn sum<T>(blocks: &[Arc<T>], field: impl Fn(&T) -> &Counter) -> u64 {
    blocks
        .iter()
        .map(|b| field(b).get())
        .fold(0, u64::wrapping_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_by_upper_bound() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50)); // on the bound: that bucket
        h.observe(Duration::from_micros(51));
        h.observe(Duration::from_secs(11)); // above every bound
        let mut s = HistogramSum::default();
        h.sum_into(&mut s);
        assert_eq!(s.buckets[0], 1);
        assert_eq!(s.buckets[1], 1);
        assert_eq!(s.buckets[LATENCY_BUCKETS.len()], 1);
        assert_eq!(s.buckets.iter().sum::<u64>(), 3);
        assert_eq!(s.sum_ns, 50_000 + 51_000 + 11_000_000_000);
    }

    #[test]
    fn blocks_are_per_worker_and_kept_by_name() {
        let hub = Hub::new(2);
        let a = hub.listener(0, "l");
        let b = hub.listener(1, "l");
        assert!(!Arc::ptr_eq(&a, &b));
        assert!(Arc::ptr_eq(&a, &hub.listener(0, "l")));
        a.messages_in.add(3);
        b.messages_in.add(4);
        assert_eq!(sum(&hub.listener_blocks("l"), |c| &c.messages_in), 7);
        assert!(hub.listener_blocks("other").is_empty());
    }

    #[test]
    fn every_close_reason_has_a_label() {
        assert_eq!(close_index(&CloseReason::ClientClosed), 0);
        let internal = CloseReason::Fault(Fault::Internal("x".into()));
        assert_eq!(CLOSE_REASONS[close_index(&internal)], "internal");
        let poison = CloseReason::from(ClientFault::Poison {
            backend: "b".into(),
            reason: "r".into(),
        });
        assert_eq!(CLOSE_REASONS[close_index(&poison)], "poison");
    }

    #[test]
    fn blocks_sit_on_their_own_cache_lines() {
        assert_eq!(std::mem::align_of::<ListenerCounters>(), 128);
        assert_eq!(std::mem::align_of::<BackendCounters>(), 128);
        assert_eq!(std::mem::align_of::<WorkerCounters>(), 128);
    }
}
