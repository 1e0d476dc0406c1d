//! `/metrics`: a [`Snapshot`] in the Prometheus (OpenMetrics) text format, encoded by
//! `prometheus-client`. Names are `switchyard_*` with their unit; labels name listeners,
//! clusters, backends, directions and reasons, never keys or clients. Series with a reason
//! or direction label are written for every value, zeros included.

mod backends;

use super::snapshot::Snapshot;
use crate::metrics::{CLOSE_REASONS, CODEC_REASONS, PIN_OUTCOMES};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::borrow::Cow;
use std::fmt::Error;

/// Encodes `snap`.
pub(super) fn encode(snap: Snapshot) -> Result<String, Error> {
    // A collector owns what it encodes: the snapshot moves into a one-scrape registry.
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(snap)));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

#[derive(Debug)]
struct Scrape(Snapshot);

/// Labels of one series: names, and values escaped for the text format.
type Labels<'a> = Vec<(&'a str, Cow<'a, str>)>;

/// A label value as the text format needs it: `\`, `"` and newlines escaped (the encoder
/// writes values as they are, and names in the config are free text).
fn esc(v: &str) -> Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return Cow::Borrowed(v);
    }
    Cow::Owned(
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n"),
    )
}

/// A family with one series per row: its labels and its value (a counter's, or a
/// gauge's).
fn family<'a>(
    e: &mut DescriptorEncoder,
    (name, help, unit): (&str, &str, Option<&Unit>),
    kind: MetricType,
    rows: impl IntoIterator<Item = (Labels<'a>, f64)>,
) -> Result<(), Error> {
    let mut m = e.encode_descriptor(name, help, unit, kind)?;
    for (labels, v) in rows {
        match (kind, labels.is_empty()) {
            (MetricType::Counter, true) => {
                m.encode_counter::<NoLabelSet, _, u64>(&(v as u64), None)?
            }
            (MetricType::Counter, false) => {
                ConstCounter::new(v as u64).encode(m.encode_family(&labels)?)?
            }
            (_, true) => m.encode_gauge(&v)?,
            (_, false) => ConstGauge::new(v).encode(m.encode_family(&labels)?)?,
        }
    }
    Ok(())
}

/// A counter family whose rows each give one value per `values` label value: `label`
/// (`direction`, `reason`, …) tells them apart.
fn counters<'a>(
    e: &mut DescriptorEncoder,
    (name, help): (&str, &str),
    (label, values): (&'a str, &[&'a str]),
    rows: impl IntoIterator<Item = (Labels<'a>, Vec<u64>)>,
) -> Result<(), Error> {
    let series = rows.into_iter().flat_map(|(base, counts)| {
        values.iter().zip(counts).map(move |(value, n)| {
            let mut labels = base.clone();
            labels.push((label, Cow::Borrowed(*value)));
            (labels, n as f64)
        })
    });
    family(e, (name, help, None), MetricType::Counter, series)
}

fn listener(name: &str) -> Labels<'_> {
    vec![("listener", esc(name))]
}

fn cluster(name: &str) -> Labels<'_> {
    vec![("cluster", esc(name))]
}

/// A family of one series without labels.
fn single(
    e: &mut DescriptorEncoder,
    meta: (&str, &str, Option<&Unit>),
    kind: MetricType,
    v: f64,
) -> Result<(), Error> {
    family(e, meta, kind, [(Vec::new(), v)])
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), Error> {
        use MetricType::{Counter, Gauge};
        let v = &self.0;
        let e = &mut e;
        e.encode_descriptor(
            "switchyard_build",
            "The running version.",
            None,
            MetricType::Info,
        )?
        .encode_info(&[("version", esc(v.version))])?;
        let seconds = Some(&Unit::Seconds);
        let bytes = Some(&Unit::Bytes);
        single(
            e,
            (
                "switchyard_start_time",
                "Unix time the process started.",
                seconds,
            ),
            Gauge,
            v.start_time_seconds,
        )?;
        single(
            e,
            (
                "switchyard_config_generation",
                "Config generation running: 0 at start, one more per applied reload.",
                None,
            ),
            Gauge,
            v.generation as f64,
        )?;
        counters(
            e,
            ("switchyard_reloads", "Config reloads, by result."),
            ("result", &["applied", "refused"]),
            [(Vec::new(), vec![v.reloads_applied, v.reloads_refused])],
        )?;

        // Listeners.
        counters(e, ("switchyard_listener_messages", "Messages per listener: in = requests read from clients, out = answers written to them."),
            ("direction", &["in", "out"]),
            v.listeners.iter().map(|l| (listener(&l.name), vec![l.messages_in, l.messages_out])))?;
        counters(
            e,
            (
                "switchyard_listener_bytes",
                "Bytes per listener: in = read from clients, out = written to them.",
            ),
            ("direction", &["in", "out"]),
            v.listeners
                .iter()
                .map(|l| (listener(&l.name), vec![l.bytes_in, l.bytes_out])),
        )?;
        family(
            e,
            (
                "switchyard_client_connections_opened",
                "Client connections accepted.",
                None,
            ),
            Counter,
            v.listeners
                .iter()
                .map(|l| (listener(&l.name), l.connections_opened as f64)),
        )?;
        family(
            e,
            (
                "switchyard_client_connections_refused",
                "Client connections closed at once: the listener was at max_connections.",
                None,
            ),
            Counter,
            v.listeners
                .iter()
                .map(|l| (listener(&l.name), l.connections_refused as f64)),
        )?;
        family(
            e,
            (
                "switchyard_client_connections",
                "Client connections open.",
                None,
            ),
            Gauge,
            v.listeners
                .iter()
                .map(|l| (listener(&l.name), l.connections as f64)),
        )?;
        counters(
            e,
            (
                "switchyard_client_connections_closed",
                "Client connections closed, by reason (orderly ends and faults).",
            ),
            ("reason", &CLOSE_REASONS),
            v.listeners.iter().map(|l| {
                (
                    listener(&l.name),
                    CLOSE_REASONS.iter().map(|r| l.closed[r]).collect(),
                )
            }),
        )?;
        counters(
            e,
            (
                "switchyard_codec_errors",
                "Client bytes the listener's codec or protocol script refused, by reason.",
            ),
            ("reason", &CODEC_REASONS),
            v.listeners.iter().map(|l| {
                (
                    listener(&l.name),
                    CODEC_REASONS.iter().map(|r| l.codec_errors[r]).collect(),
                )
            }),
        )?;

        let faults = &CLOSE_REASONS[super::snapshot::FIRST_FAULT..];
        counters(
            e,
            (
                "switchyard_messages_dropped",
                "Messages dropped unanswered, by why they failed: one-way messages that could not go, and failed requests without an error answer on listeners whose answers need no order (the client stays connected).",
            ),
            ("reason", faults),
            v.listeners.iter().map(|l| {
                (
                    listener(&l.name),
                    faults.iter().map(|r| l.dropped.get(r).copied().unwrap_or(0)).collect(),
                )
            }),
        )?;
        counters(
            e,
            (
                "switchyard_messages_local",
                "Frames the listener's protocol answered or dropped itself (keep-alives, pings addressed to the proxy).",
            ),
            ("kind", &["local"]),
            v.listeners
                .iter()
                .map(|l| (listener(&l.name), vec![l.local])),
        )?;
        counters(
            e,
            (
                "switchyard_tls_handshakes",
                "TLS handshakes completed on the listener.",
            ),
            ("result", &["done"]),
            v.listeners
                .iter()
                .map(|l| (listener(&l.name), vec![l.tls_handshakes])),
        )?;
        counters(
            e,
            (
                "switchyard_connections_failed_prelude",
                "Client connections closed before their protocol started: a bad or missing PROXY header, a failed TLS handshake, either too slow, or too many handshakes at once (max_handshakes).",
            ),
            ("reason", &crate::metrics::PRELUDE_REASONS),
            v.listeners.iter().map(|l| {
                (
                    listener(&l.name),
                    crate::metrics::PRELUDE_REASONS
                        .iter()
                        .map(|r| l.prelude_failures.get(r).copied().unwrap_or(0))
                        .collect(),
                )
            }),
        )?;

        // Clusters and pins.
        counters(
            e,
            (
                "switchyard_cluster_messages",
                "Messages per cluster: request = sent to its backends, answer = read from them.",
            ),
            ("direction", &["request", "answer"]),
            v.clusters
                .iter()
                .map(|c| (cluster(&c.name), vec![c.messages_in, c.messages_out])),
        )?;
        counters(
            e,
            (
                "switchyard_cluster_bytes",
                "Bytes per cluster: request = sent to its backends, answer = read from them.",
            ),
            ("direction", &["request", "answer"]),
            v.clusters
                .iter()
                .map(|c| (cluster(&c.name), vec![c.bytes_in, c.bytes_out])),
        )?;
        let pinned = || v.clusters.iter().filter(|c| c.pins.is_some());
        family(
            e,
            (
                "switchyard_pins",
                "Session pins held (clusters with persistence).",
                None,
            ),
            Gauge,
            pinned().map(|c| (cluster(&c.name), c.pins.unwrap_or(0) as f64)),
        )?;
        counters(e, ("switchyard_pin_lookups", "Keyed messages routed through the pin table, by outcome (moved: the key's backend was unusable and the pin moved)."),
            ("outcome", &PIN_OUTCOMES),
            pinned().map(|c| (cluster(&c.name), vec![c.pin_hits, c.pin_new, c.pin_moved, c.pin_pinned_down, c.pin_unavailable])))?;
        counters(
            e,
            (
                "switchyard_pin_evictions",
                "Pins dropped: full = the table was at max_entries, expired = idle past the TTL, ended = the session ended (ENDS_SESSION).",
            ),
            ("cause", &["full", "expired", "ended"]),
            pinned().map(|c| (cluster(&c.name), vec![c.pin_evictions, c.pin_expired, c.pin_released])),
        )?;

        backends::encode(e, v)?;

        // The process.
        counters(e, ("switchyard_pushes", "Backend messages that answer nothing, routed to the session's client: delivered or dropped."),
            ("outcome", &["delivered", "dropped"]),
            [(Vec::new(), vec![v.pushes.delivered, v.pushes.dropped])])?;
        single(
            e,
            (
                "switchyard_buffer_budget_used",
                "Bytes all clients' input buffers hold.",
                bytes,
            ),
            Gauge,
            v.budget.used_bytes as f64,
        )?;
        single(
            e,
            (
                "switchyard_buffer_budget_limit",
                "buffer_budget: bytes all clients' input buffers may hold.",
                bytes,
            ),
            Gauge,
            v.budget.limit_bytes as f64,
        )?;
        single(
            e,
            (
                "switchyard_buffer_budget_closes",
                "Clients closed to bring the buffer budget back.",
                None,
            ),
            Counter,
            v.budget.clients_closed as f64,
        )?;
        let ids: Vec<String> = v.workers.iter().map(|w| w.id.to_string()).collect();
        family(
            e,
            (
                "switchyard_worker_loop_lag",
                "Worst lateness of a 100 ms timer on the worker's event loop over the last second.",
                seconds,
            ),
            Gauge,
            v.workers.iter().zip(&ids).map(|(w, id)| {
                (
                    vec![("worker", Cow::Borrowed(id.as_str()))],
                    w.loop_lag_seconds,
                )
            }),
        )?;
        counters(
            e,
            (
                "switchyard_access_log_records",
                "Sampled access log records: written, or dropped because the writer fell behind.",
            ),
            ("outcome", &["written", "dropped"]),
            [(Vec::new(), vec![v.access_log.written, v.access_log.dropped])],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn label_values_are_escaped() {
        assert_eq!(super::esc("b1"), "b1");
        assert_eq!(super::esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
