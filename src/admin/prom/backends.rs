//! The backend families of `/metrics`: traffic, failures, connections, health, poison
//! isolation, and the answer-latency histogram, per cluster and backend.

use super::{counters, esc, family, Labels};
use crate::admin::snapshot::{BackendView, Snapshot};
use crate::metrics::{CODEC_REASONS, FAILURE_REASONS, LATENCY_BUCKETS};
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use std::fmt::Error;

fn flag(on: bool) -> f64 {
    if on {
        1.0
    } else {
        0.0
    }
}

fn labels(b: &BackendView) -> Labels<'_> {
    vec![("cluster", esc(&b.cluster)), ("backend", esc(&b.name))]
}

/// Encodes every backend family of `v`.
pub(super) fn encode(e: &mut DescriptorEncoder, v: &Snapshot) -> Result<(), Error> {
    let all = &v.backends;
    let direction = ("direction", &["request", "answer"][..]);
    counters(
        e,
        (
            "switchyard_backend_messages",
            "Messages per backend: request = sent, answer = read (pushes included).",
        ),
        direction,
        all.iter().map(|b| (labels(b), vec![b.requests, b.answers])),
    )?;
    counters(
        e,
        (
            "switchyard_backend_bytes",
            "Bytes per backend: request = sent, answer = read.",
        ),
        direction,
        all.iter()
            .map(|b| (labels(b), vec![b.bytes_out, b.bytes_in])),
    )?;
    counters(e, ("switchyard_backend_request_failures", "Requests failed without an answer: lost = the connection died with them, timed_out = request_timeout."),
        ("reason", &FAILURE_REASONS),
        all.iter().map(|b| (labels(b), FAILURE_REASONS.iter().map(|r| b.failures_by_reason[r]).collect())))?;
    counters(
        e,
        (
            "switchyard_backend_codec_errors",
            "Answer bytes the codec refused, by reason (the connection is dropped).",
        ),
        ("reason", &CODEC_REASONS),
        all.iter().map(|b| {
            (
                labels(b),
                CODEC_REASONS.iter().map(|r| b.codec_errors[r]).collect(),
            )
        }),
    )?;
    counters(
        e,
        (
            "switchyard_backend_health_transitions",
            "Active health check verdict changes.",
        ),
        ("to", &["healthy", "unhealthy"]),
        all.iter()
            .map(|b| (labels(b), vec![b.became_healthy, b.became_unhealthy])),
    )?;
    type Field = fn(&BackendView) -> f64;
    let plain: [(&str, &str, MetricType, Field); 15] = [
        ("switchyard_backend_connects", "Backend connections established (shared and probation).", MetricType::Counter, |b| b.connects as f64),
        ("switchyard_backend_connect_failures", "Backend connection attempts that failed.", MetricType::Counter, |b| b.connect_failures as f64),
        ("switchyard_backend_connection_losses", "Established shared backend connections that ended (closed, I/O error, bad answer, replaced).", MetricType::Counter, |b| b.connection_losses as f64),
        ("switchyard_backend_ejections", "Passive outlier ejections.", MetricType::Counter, |b| b.ejections as f64),
        ("switchyard_backend_retries_answered", "Requests of a dead connection re-sent alone on probation and answered.", MetricType::Counter, |b| b.retries_answered as f64),
        ("switchyard_backend_requests_poisoned", "Requests found to close the backend's connection (poison), failed.", MetricType::Counter, |b| b.requests_poisoned as f64),
        ("switchyard_backend_probations_stopped", "Probations stopped by the storm guard.", MetricType::Counter, |b| b.probations_stopped as f64),
        ("switchyard_backend_outstanding_requests", "Requests awaiting answers, all workers.", MetricType::Gauge, |b| b.outstanding as f64),
        ("switchyard_backend_connections", "Open shared connections, all workers.", MetricType::Gauge, |b| b.connections as f64),
        ("switchyard_backend_sessions", "Sessions pinned to the backend (clusters with persistence; what least_sessions balances).", MetricType::Gauge, |b| b.sessions as f64),
        ("switchyard_backend_weight", "Weight in effect (configured, or set through the API).", MetricType::Gauge, |b| f64::from(b.weight)),
        ("switchyard_backend_up", "1 when the last connection attempt succeeded.", MetricType::Gauge, |b| flag(b.up)),
        ("switchyard_backend_healthy", "1 when active health checks pass (or there are none).", MetricType::Gauge, |b| flag(b.healthy)),
        ("switchyard_backend_ejected", "1 while passively ejected.", MetricType::Gauge, |b| flag(b.ejected)),
        ("switchyard_backend_draining", "1 while draining (no new messages or pins).", MetricType::Gauge, |b| flag(b.draining)),
    ];
    for (name, help, kind, field) in plain {
        family(
            e,
            (name, help, None),
            kind,
            all.iter().map(|b| (labels(b), field(b))),
        )?;
    }
    let mut m = e.encode_descriptor(
        "switchyard_backend_answer_latency",
        "From queuing a request to reading its answer.",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    for b in all {
        // Counts per bucket, not cumulative: the encoder sums them; `f64::MAX` is its
        // `+Inf`.
        let buckets: Vec<(f64, u64)> = b
            .latency
            .buckets
            .iter()
            .enumerate()
            .map(|(i, n)| (LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::MAX), *n))
            .collect();
        let count = b.latency.buckets.iter().sum();
        m.encode_family(&labels(b))?
            .encode_histogram::<NoLabelSet>(b.latency.sum_ns as f64 / 1e9, count, &buckets, None)?;
    }
    Ok(())
}
