//! One reading of everything the admin listener shows: the workers' counter blocks summed,
//! the backends' shared state, pins, reloads. `/metrics`, the JSON API, the status page,
//! `switchyard top` and the twemproxy stats port all render this one value, so they agree.

use super::{Override, State};
use crate::metrics::{
    self, sum, HistogramSum, CLOSE_REASONS, CODEC_REASONS, FAILURE_REASONS, PIN_OUTCOMES,
    PRELUDE_REASONS,
};
use serde::Serialize;
use std::collections::BTreeMap;
use switchyard_core::clock;

/// Index of the first [`CLOSE_REASONS`] entry that is a fault (the ones before are orderly
/// ends).
pub(crate) const FIRST_FAULT: usize = 5;

/// The whole reading.
#[derive(Debug, Serialize)]
pub(crate) struct Snapshot {
    pub(crate) version: &'static str,
    pub(crate) uptime_seconds: f64,
    /// Unix time of the process start, seconds.
    pub(crate) start_time_seconds: f64,
    pub(crate) generation: u64,
    pub(crate) config_file: Option<String>,
    pub(crate) workers: Vec<WorkerView>,
    pub(crate) budget: BudgetView,
    pub(crate) pushes: PushView,
    pub(crate) listeners: Vec<ListenerView>,
    pub(crate) clusters: Vec<ClusterView>,
    pub(crate) backends: Vec<BackendView>,
    /// Every fault counted so far, by where and why (non-zero only).
    pub(crate) errors: Vec<ErrorView>,
    pub(crate) reloads: Vec<super::ReloadReport>,
    pub(crate) reloads_applied: u64,
    pub(crate) reloads_refused: u64,
    pub(crate) access_log: crate::access_log::Tally,
}

#[derive(Debug, Serialize)]
pub(crate) struct WorkerView {
    pub(crate) id: usize,
    pub(crate) clients: u64,
    pub(crate) loop_lag_seconds: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct BudgetView {
    pub(crate) used_bytes: u64,
    pub(crate) limit_bytes: u64,
    pub(crate) clients_closed: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct PushView {
    pub(crate) delivered: u64,
    pub(crate) dropped: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct ListenerView {
    pub(crate) name: String,
    pub(crate) address: String,
    pub(crate) protocol: &'static str,
    pub(crate) cluster: String,
    pub(crate) connections: u64,
    pub(crate) connections_opened: u64,
    pub(crate) connections_refused: u64,
    pub(crate) messages_in: u64,
    pub(crate) messages_out: u64,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    /// Client connections closed, by reason (every reason).
    pub(crate) closed: BTreeMap<&'static str, u64>,
    /// Client bytes refused, by reason (every reason).
    pub(crate) codec_errors: BTreeMap<&'static str, u64>,
    /// Messages dropped unanswered, by why they failed (reasons that happened).
    pub(crate) dropped: BTreeMap<&'static str, u64>,
    /// Frames the protocol answered or dropped itself (keep-alives, pings).
    pub(crate) local: u64,
    /// TLS handshakes completed.
    pub(crate) tls_handshakes: u64,
    /// Connections closed before their protocol started, by reason (every reason).
    pub(crate) prelude_failures: BTreeMap<&'static str, u64>,
    /// Keyed routes by outcome.
    #[serde(skip)]
    pub(crate) pins: [u64; PIN_OUTCOMES.len()],
}

#[derive(Debug, Serialize)]
pub(crate) struct ClusterView {
    pub(crate) name: String,
    pub(crate) policy: &'static str,
    /// Pins held; `None` without persistence.
    pub(crate) pins: Option<u64>,
    pub(crate) pin_hits: u64,
    pub(crate) pin_new: u64,
    pub(crate) pin_moved: u64,
    pub(crate) pin_pinned_down: u64,
    pub(crate) pin_unavailable: u64,
    /// Pins dropped because the table was full.
    pub(crate) pin_evictions: u64,
    /// Pins dropped because they were idle past the TTL.
    pub(crate) pin_expired: u64,
    /// Pins released because their session ended (`ENDS_SESSION`).
    pub(crate) pin_released: u64,
    pub(crate) messages_in: u64,
    pub(crate) messages_out: u64,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct BackendView {
    pub(crate) cluster: String,
    pub(crate) name: String,
    pub(crate) address: String,
    /// `up`, `down` (cannot connect), `unhealthy` (active checks), `ejected` (outlier
    /// ejection) or `draining`.
    pub(crate) state: &'static str,
    pub(crate) up: bool,
    pub(crate) healthy: bool,
    pub(crate) ejected: bool,
    pub(crate) draining: bool,
    pub(crate) weight: u32,
    pub(crate) configured_weight: u32,
    pub(crate) configured_drain: bool,
    /// What an operator changed at run time (kept until the next reload).
    pub(crate) runtime_override: Option<Override>,
    pub(crate) outstanding: u64,
    /// Sessions pinned to it (clusters with persistence).
    pub(crate) sessions: u64,
    pub(crate) latency_ewma_seconds: f64,
    /// Requests sent to it.
    pub(crate) requests: u64,
    /// Answers read from it (pushes included).
    pub(crate) answers: u64,
    pub(crate) failures: u64,
    pub(crate) failures_by_reason: BTreeMap<&'static str, u64>,
    /// Request bytes sent to it.
    pub(crate) bytes_out: u64,
    /// Answer bytes read from it.
    pub(crate) bytes_in: u64,
    pub(crate) connections: u64,
    pub(crate) connects: u64,
    pub(crate) connect_failures: u64,
    pub(crate) connection_losses: u64,
    pub(crate) ejections: u64,
    pub(crate) became_healthy: u64,
    pub(crate) became_unhealthy: u64,
    pub(crate) retries_answered: u64,
    pub(crate) requests_poisoned: u64,
    pub(crate) probations_stopped: u64,
    pub(crate) codec_errors: BTreeMap<&'static str, u64>,
    #[serde(skip)]
    pub(crate) latency: HistogramSum,
}

#[derive(Debug, Serialize)]
pub(crate) struct ErrorView {
    pub(crate) scope: String,
    pub(crate) reason: &'static str,
    pub(crate) count: u64,
}

fn by_reason<T>(
    blocks: &[std::sync::Arc<T>],
    names: &[&'static str],
    field: impl Fn(&T) -> &[metrics::Counter],
) -> BTreeMap<&'static str, u64> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, sum(blocks, |b| &field(b)[i])))
        .collect()
}

fn copied<'m>(
    m: &'m BTreeMap<&'static str, u64>,
) -> impl Iterator<Item = (&'static str, u64)> + 'm {
    m.iter().map(|(r, n)| (*r, *n))
}

/// Adds to `errors` the reasons of `counts` that happened, under `scope`.
fn note_errors(
    errors: &mut Vec<ErrorView>,
    scope: &str,
    counts: impl Iterator<Item = (&'static str, u64)>,
) {
    for (reason, count) in counts.filter(|(_, n)| *n > 0) {
        errors.push(ErrorView {
            scope: scope.to_string(),
            reason,
            count,
        });
    }
}

impl Snapshot {
    /// Reads everything now.
    pub(crate) fn take(state: &State) -> Snapshot {
        let g = state.generations.borrow().clone();
        let hub = &state.shared.metrics;
        let workers = hub.workers();
        let overrides = state.overrides(g.number);
        let now_ms = clock::now_ms();
        let mut errors = Vec::new();
        let listeners: Vec<ListenerView> = g
            .config
            .listeners
            .iter()
            .zip(&g.addrs)
            .map(|(l, addr)| {
                let b = hub.listener_blocks(&l.name);
                let closed = by_reason(&b, &CLOSE_REASONS, |c| &c.closed[..]);
                let codec_errors = by_reason(&b, &CODEC_REASONS, |c| &c.codec_errors[..]);
                let scope = format!("listener {}", l.name);
                let faults = CLOSE_REASONS[FIRST_FAULT..].iter().map(|r| (*r, closed[r]));
                note_errors(&mut errors, &scope, faults);
                note_errors(
                    &mut errors,
                    &format!("{scope} codec"),
                    copied(&codec_errors),
                );
                let dropped: BTreeMap<&'static str, u64> =
                    by_reason(&b, &CLOSE_REASONS, |c| &c.dropped[..])
                        .into_iter()
                        .filter(|(_, n)| *n > 0)
                        .collect();
                note_errors(&mut errors, &format!("{scope} dropped"), copied(&dropped));
                let mut pins = [0; PIN_OUTCOMES.len()];
                for (i, p) in pins.iter_mut().enumerate() {
                    *p = sum(&b, |c| &c.pins[i]);
                }
                ListenerView {
                    name: l.name.clone(),
                    address: addr.to_string(),
                    protocol: l.protocols.requests.kind(),
                    cluster: g.config.clusters[l.cluster].name().to_string(),
                    // The count the listener's connection limit keeps, across workers.
                    connections: state
                        .shared
                        .conn_count(&l.name)
                        .load(std::sync::atomic::Ordering::Relaxed)
                        as u64,
                    connections_opened: sum(&b, |c| &c.opened),
                    connections_refused: sum(&b, |c| &c.refused),
                    messages_in: sum(&b, |c| &c.messages_in),
                    messages_out: sum(&b, |c| &c.messages_out),
                    bytes_in: sum(&b, |c| &c.bytes_in),
                    bytes_out: sum(&b, |c| &c.bytes_out),
                    closed,
                    codec_errors,
                    dropped,
                    local: sum(&b, |c| &c.local),
                    tls_handshakes: sum(&b, |c| &c.tls_handshakes),
                    prelude_failures: by_reason(&b, &PRELUDE_REASONS, |c| &c.prelude_failures[..]),
                    pins,
                }
            })
            .collect();
        let mut backends = Vec::new();
        let mut clusters = Vec::new();
        for (u, cfg) in g.upstreams.iter().zip(&g.config.clusters) {
            let c = &u.cluster;
            let cname = c.settings.name.clone();
            let mut totals = [0u64; 4];
            for (b, bs) in c.backends.iter().zip(&cfg.balance.backends) {
                let blocks = hub.backend_blocks(&cname, &b.name);
                let mut latency = HistogramSum::default();
                for blk in &blocks {
                    blk.latency.sum_into(&mut latency);
                }
                let failures_by_reason = by_reason(&blocks, &FAILURE_REASONS, |x| &x.failures[..]);
                let codec_errors = by_reason(&blocks, &CODEC_REASONS, |x| &x.codec_errors[..]);
                let scope = format!("backend {cname}/{}", b.name);
                let counts = copied(&failures_by_reason).chain(copied(&codec_errors));
                note_errors(&mut errors, &scope, counts);
                let (up, healthy) = (b.is_up(), b.healthy());
                let ejected = b.ejection.ejected(now_ms);
                let draining = b.draining();
                let state = if !up {
                    "down"
                } else if !healthy {
                    "unhealthy"
                } else if ejected {
                    "ejected"
                } else if draining {
                    "draining"
                } else {
                    "up"
                };
                let v = BackendView {
                    cluster: cname.clone(),
                    name: b.name.clone(),
                    address: b.address.to_string(),
                    state,
                    up,
                    healthy,
                    ejected,
                    draining,
                    weight: b.weight(),
                    configured_weight: bs.weight,
                    configured_drain: bs.drain,
                    runtime_override: overrides.get(&(cname.clone(), b.name.clone())).copied(),
                    outstanding: b.load.outstanding(),
                    sessions: b.load.sessions(),
                    latency_ewma_seconds: b.load.ewma_ns() / 1e9,
                    requests: sum(&blocks, |x| &x.requests),
                    answers: blocks.iter().map(|x| x.answers()).sum(),
                    failures: failures_by_reason.values().sum(),
                    failures_by_reason,
                    bytes_out: sum(&blocks, |x| &x.request_bytes),
                    bytes_in: sum(&blocks, |x| &x.answer_bytes),
                    connections: sum(&blocks, |x| &x.open),
                    connects: sum(&blocks, |x| &x.connects),
                    connect_failures: sum(&blocks, |x| &x.connect_failures),
                    connection_losses: sum(&blocks, |x| &x.losses),
                    ejections: u64::from(b.ejection.ejections()),
                    became_healthy: b.health_changes(true),
                    became_unhealthy: b.health_changes(false),
                    retries_answered: sum(&blocks, |x| &x.retries_answered),
                    requests_poisoned: sum(&blocks, |x| &x.poisoned),
                    probations_stopped: sum(&blocks, |x| &x.probations_stopped),
                    codec_errors,
                    latency,
                };
                totals[0] += v.requests;
                totals[1] += v.answers;
                totals[2] += v.bytes_out;
                totals[3] += v.bytes_in;
                backends.push(v);
            }
            let pins_of = |i: usize| {
                listeners
                    .iter()
                    .zip(&g.config.listeners)
                    .filter(|(_, l)| g.config.clusters[l.cluster].name() == cname)
                    .map(|(v, _)| v.pins[i])
                    .sum::<u64>()
            };
            let store = c.sessions.as_ref();
            clusters.push(ClusterView {
                name: cname.clone(),
                policy: c.settings.policy.name(),
                pins: store.map(|s| s.len() as u64),
                pin_hits: pins_of(0),
                pin_new: pins_of(1),
                pin_moved: pins_of(2),
                pin_pinned_down: pins_of(3),
                pin_unavailable: pins_of(4),
                pin_evictions: store.map_or(0, |s| s.evicted() as u64),
                pin_expired: store.map_or(0, |s| s.expired() as u64),
                pin_released: store.map_or(0, |s| s.released() as u64),
                messages_in: totals[0],
                messages_out: totals[1],
                bytes_in: totals[2],
                bytes_out: totals[3],
            });
        }
        let wsum = |f: fn(&metrics::WorkerCounters) -> &metrics::Counter| sum(workers, f);
        let uptime = state.started.elapsed();
        Snapshot {
            version: env!("CARGO_PKG_VERSION"),
            uptime_seconds: uptime.as_secs_f64(),
            start_time_seconds: state.started_unix,
            generation: g.number,
            config_file: state.config_file.clone(),
            workers: workers
                .iter()
                .enumerate()
                .map(|(id, w)| {
                    // A tick overdue now counts as lag already.
                    let last = w.last_tick_ms.get();
                    let tick = crate::worker::LAG_TICK.as_millis() as u64;
                    let overdue = if last == 0 {
                        0
                    } else {
                        now_ms.saturating_sub(last).saturating_sub(tick) * 1_000_000
                    };
                    WorkerView {
                        id,
                        clients: w.clients.get(),
                        loop_lag_seconds: w.loop_lag_ns.get().max(overdue) as f64 / 1e9,
                    }
                })
                .collect(),
            budget: BudgetView {
                used_bytes: state.shared.budget.held() as u64,
                limit_bytes: state.shared.budget.limit() as u64,
                clients_closed: wsum(|w| &w.budget_closes),
            },
            pushes: PushView {
                delivered: wsum(|w| &w.pushes_delivered),
                dropped: wsum(|w| &w.pushes_dropped),
            },
            listeners,
            clusters,
            backends,
            errors,
            reloads: state.reloads.recent(),
            reloads_applied: state.reloads.applied(),
            reloads_refused: state.reloads.refused(),
            access_log: state.shared.access.tally(),
        }
    }
}
