//! A backend connection's task: connect (with back-off), then pump bytes both ways until
//! the connection ends ([`super::pump`]: answers matched to their requests and handed to
//! their clients, pushes routed by key, requests timed out) and, when it ends, hand back or
//! fail what was in flight and reconnect.

use super::conn::{BackendConn, Status};
use super::handshake;
use super::pump::{pump, Ended};
use crate::registry::Registry;
use bytes::BytesMut;
use std::rc::Rc;
use std::time::{Duration, Instant};
use switchyard_proto::Protocols;

/// A connection that lived shorter than this and died counts as a failed attempt (back-off
/// applies), so a backend that accepts and closes at once is not hammered.
const MIN_HEALTHY_LIFETIME: Duration = Duration::from_secs(1);

/// The connection's task. Ends when the connection is retired and idle, or when the
/// worker's runtime ends.
pub(crate) async fn run(
    conn: Rc<BackendConn>,
    protocols: Protocols,
    max_frame: usize,
    registry: Rc<Registry>,
) {
    let addr = conn.backend.address;
    let mut backoff: Option<Duration> = None;
    loop {
        let config = conn.upstream.borrow().config.clone();
        let retry = config.retry_on_connect_failure;
        if conn.retired.get() {
            let lost = conn.lost("backend removed from the cluster");
            conn.settle_in_flight(&lost, BytesMut::new(), (retry, false));
            return;
        }
        let Some(life) = connect_and_pump(&conn, &protocols, max_frame, &registry, &config).await
        else {
            return;
        };
        let had_work = !conn.state.borrow().corr.is_empty();
        // Requests written that may be repeated go on probation, where the one that killed
        // the connection is found: until then the loss is not the backend's to count.
        let probation = life.blame_backend && conn.probation.open(Instant::now());
        // A connection that served a while and was lost reconnects at once (messages may
        // queue meanwhile), as does one whose requests went on probation; otherwise it is
        // down until the back-off ends. The status is set before what was in flight is
        // settled, so nothing handed back comes here again.
        conn.set_status(if life.healthy || probation {
            Status::Connecting
        } else {
            Status::Down
        });
        let on_probation = settle(&conn, &life.reason, life.unwritten, (retry, probation));
        if on_probation > 0 {
            super::probation::start(&conn, &protocols, max_frame, &registry);
        }
        if life.healthy || on_probation > 0 {
            backoff = None;
            if had_work && life.blame_backend && on_probation == 0 {
                conn.report_failure(&life.reason);
            }
            registry.capacity.notify_waiters();
            continue;
        }
        conn.set_status(Status::Down);
        conn.report_failure(&life.reason);
        let pool = config.pool;
        let delay = backoff.map_or(pool.reconnect_backoff_min, |b| {
            (b * 2).min(pool.reconnect_backoff_max)
        });
        backoff = Some(delay);
        if conn.backend.set_up(false) {
            tracing::warn!(backend = %conn.backend.name, %addr, reason = %life.reason, retry_in = ?delay, "backend is down");
        }
        // Clients waiting for room must re-decide now that this connection is gone.
        registry.capacity.notify_waiters();
        let jitter = Duration::from_millis(fastrand::u64(0..=delay.as_millis() as u64 / 4 + 1));
        tokio::select! {
            _ = tokio::time::sleep(delay + jitter) => {}
            _ = conn.notify.notified(), if !conn.retired.get() => {}
        }
    }
}

/// How one connection's life ended.
struct Life {
    reason: String,
    /// Requests taken from the write buffer but not written.
    unwritten: BytesMut,
    /// It served long enough (or was replaced on purpose) to reconnect at once.
    healthy: bool,
    /// Whether the loss counts against the backend (not when the answer script failed);
    /// only then may requests in flight go on probation (the connection died, or was
    /// replaced after a timeout).
    blame_backend: bool,
}

/// Connects (with the protocol's handshake) and pumps until the connection ends; `None`
/// when it was retired and idle (the task ends).
async fn connect_and_pump(
    conn: &Rc<BackendConn>,
    protocols: &Protocols,
    max_frame: usize,
    registry: &Rc<Registry>,
    config: &crate::config::ClusterConfig,
) -> Option<Life> {
    let addr = conn.backend.address;
    let failed = |reason: String| Life {
        reason,
        unwritten: BytesMut::new(),
        healthy: false,
        blame_backend: true,
    };
    let attempt = tokio::time::timeout(
        config.pool.connect_timeout,
        handshake::connect(addr, protocols, config),
    )
    .await;
    let stream = match attempt {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            conn.counters.connect_failures.inc();
            return Some(failed(e));
        }
        Err(_) => {
            conn.counters.connect_failures.inc();
            let t = config.pool.connect_timeout;
            return Some(failed(format!("connect timed out after {t:?}")));
        }
    };
    conn.counters.connects.inc();
    conn.counters.open.inc();
    conn.set_status(Status::Connected);
    if !conn.backend.set_up(true) {
        tracing::info!(backend = %conn.backend.name, %addr, "backend is up");
    }
    registry.capacity.notify_waiters();
    let since = Instant::now();
    let (ended, unwritten) = pump(
        conn,
        stream,
        protocols,
        max_frame,
        registry,
        (
            (config.request_timeout, config.provisional_timeout),
            config.pool.quick_ack,
        ),
    )
    .await;
    conn.counters.open.dec();
    if !matches!(ended, Ended::Retired) {
        conn.counters.losses.inc();
    }
    let (reason, replaced, blame_backend) = match ended {
        Ended::Retired => return None,
        Ended::Replace(r) => (r, true, true),
        Ended::Lost(r) => (r, false, true),
        Ended::ScriptFailed(r) => (r, true, false),
    };
    // Throttled per backend and reason: a poison flood or a flapping backend must not
    // flood the log (the next line of the kind counts the ones left out).
    if let Some(suppressed) = crate::throttle::admit(&[&conn.backend.name, "lost", &reason]) {
        tracing::warn!(backend = %conn.backend.name, %addr, slot = conn.slot, %reason, suppressed, "backend connection lost");
    }
    Some(Life {
        reason,
        unwritten,
        healthy: replaced || since.elapsed() >= MIN_HEALTHY_LIFETIME,
        blame_backend,
    })
}

/// Settles what was in flight on a lost connection: hands back what was not sent (if
/// `retry.0`), puts what was sent and may be repeated on probation (if `retry.1`), fails
/// the rest. Returns how many went on probation.
fn settle(conn: &BackendConn, reason: &str, unwritten: BytesMut, retry: (bool, bool)) -> usize {
    let lost = conn.lost(reason);
    let s = conn.settle_in_flight(&lost, unwritten, retry);
    conn.counters.failures[crate::metrics::LOST].add(s.failed as u64);
    let max = conn.upstream.borrow().config.pool.max_queued_bytes;
    let on_probation = s.probation.len();
    let admitted = conn.probation.admit(s.probation, (max, conn), &lost.into());
    let suppressed = (s.failed > 0 || s.retried > 0 || on_probation > 0 || s.oneway_lost > 0)
        .then(|| crate::throttle::admit(&[&conn.backend.name, "lost in flight", reason]))
        .flatten();
    if let Some(suppressed) = suppressed {
        tracing::warn!(
            backend = %conn.backend.name,
            failed = s.failed + on_probation - admitted,
            retried = s.retried,
            probation = admitted,
            one_way_lost = s.oneway_lost,
            reason,
            suppressed,
            "backend connection lost with requests in flight: failing what was sent, routing again what was not, re-sending alone what may be repeated"
        );
    }
    admitted
}
