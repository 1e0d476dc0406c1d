//! The backend families of `/metrics`: traffic, failures, connections, health, poison
//! isolation, and the answer-latency histogram, per cluster and backend.

use super::family;
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

/// Encodes every backend family of `v`.
pub(super) fn encode(e: &mut DescriptorEncoder, v: &Snapshot) -> Result<(), Error> {
    use MetricType::{Counter, Gauge};
    // Backends.
    let mut m = family(
        e,
        "switchyard_backend_messages",
        "Messages per backend: request = sent, answer = read (pushes included).",
        None,
        Counter,
    )?;
    for b in &v.backends {
        m.counter(
            &[
                ("cluster", &b.cluster),
                ("backend", &b.name),
                ("direction", "request"),
            ],
            b.requests,
        )?;
        m.counter(
            &[
                ("cluster", &b.cluster),
                ("backend", &b.name),
                ("direction", "answer"),
            ],
            b.answers,
        )?;
    }
    let mut m = family(
        e,
        "switchyard_backend_bytes",
        "Bytes per backend: request = sent, answer = read.",
        None,
        Counter,
    )?;
    for b in &v.backends {
        m.counter(
            &[
                ("cluster", &b.cluster),
                ("backend", &b.name),
                ("direction", "request"),
            ],
            b.bytes_out,
        )?;
        m.counter(
            &[
                ("cluster", &b.cluster),
                ("backend", &b.name),
                ("direction", "answer"),
            ],
            b.bytes_in,
        )?;
    }
    let mut m = family(e, "switchyard_backend_request_failures", "Requests failed without an answer: lost = the connection died with them, timed_out = request_timeout.", None, Counter)?;
    for b in &v.backends {
        for r in FAILURE_REASONS {
            m.counter(
                &[("cluster", &b.cluster), ("backend", &b.name), ("reason", r)],
                b.failures_by_reason[r],
            )?;
        }
    }
    let mut m = family(
        e,
        "switchyard_backend_codec_errors",
        "Answer bytes the codec refused, by reason (the connection is dropped).",
        None,
        Counter,
    )?;
    for b in &v.backends {
        for r in CODEC_REASONS {
            m.counter(
                &[("cluster", &b.cluster), ("backend", &b.name), ("reason", r)],
                b.codec_errors[r],
            )?;
        }
    }
    type Field = fn(&BackendView) -> u64;
    let counters: [(&str, &str, Field); 7] = [
            ("switchyard_backend_connects", "Backend connections established (shared and probation).", |b| b.connects),
            ("switchyard_backend_connect_failures", "Backend connection attempts that failed.", |b| b.connect_failures),
            ("switchyard_backend_connection_losses", "Established shared backend connections that ended (closed, I/O error, bad answer, replaced).", |b| b.connection_losses),
            ("switchyard_backend_ejections", "Passive outlier ejections.", |b| b.ejections),
            ("switchyard_backend_retries_answered", "Requests of a dead connection re-sent alone on probation and answered.", |b| b.retries_answered),
            ("switchyard_backend_requests_poisoned", "Requests found to close the backend's connection (poison), failed.", |b| b.requests_poisoned),
            ("switchyard_backend_probations_stopped", "Probations stopped by the storm guard.", |b| b.probations_stopped),
        ];
    for (name, help, field) in counters {
        let mut m = family(e, name, help, None, Counter)?;
        for b in &v.backends {
            m.counter(&[("cluster", &b.cluster), ("backend", &b.name)], field(b))?;
        }
    }
    let mut m = family(
        e,
        "switchyard_backend_health_transitions",
        "Active health check verdict changes.",
        None,
        Counter,
    )?;
    for b in &v.backends {
        m.counter(
            &[
                ("cluster", &b.cluster),
                ("backend", &b.name),
                ("to", "healthy"),
            ],
            b.became_healthy,
        )?;
        m.counter(
            &[
                ("cluster", &b.cluster),
                ("backend", &b.name),
                ("to", "unhealthy"),
            ],
            b.became_unhealthy,
        )?;
    }
    type Level = fn(&BackendView) -> f64;
    let gauges: [(&str, &str, Level); 7] = [
        (
            "switchyard_backend_outstanding_requests",
            "Requests awaiting answers, all workers.",
            |b| b.outstanding as f64,
        ),
        (
            "switchyard_backend_connections",
            "Open shared connections, all workers.",
            |b| b.connections as f64,
        ),
        (
            "switchyard_backend_weight",
            "Weight in effect (configured, or set through the API).",
            |b| f64::from(b.weight),
        ),
        (
            "switchyard_backend_up",
            "1 when the last connection attempt succeeded.",
            |b| flag(b.up),
        ),
        (
            "switchyard_backend_healthy",
            "1 when active health checks pass (or there are none).",
            |b| flag(b.healthy),
        ),
        (
            "switchyard_backend_ejected",
            "1 while passively ejected.",
            |b| flag(b.ejected),
        ),
        (
            "switchyard_backend_draining",
            "1 while draining (no new messages or pins).",
            |b| flag(b.draining),
        ),
    ];
    for (name, help, field) in gauges {
        let mut m = family(e, name, help, None, Gauge)?;
        for b in &v.backends {
            m.gauge(&[("cluster", &b.cluster), ("backend", &b.name)], field(b))?;
        }
    }
    let mut m = family(
        e,
        "switchyard_backend_answer_latency",
        "From queuing a request to reading its answer.",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    for b in &v.backends {
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
        let labels = [
            ("cluster", b.cluster.as_str()),
            ("backend", b.name.as_str()),
        ];
        m.enc
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(b.latency.sum_ns as f64 / 1e9, count, &buckets, None)?;
    }

    Ok(())
}
