//! `/metrics`: a [`Snapshot`] in the Prometheus (OpenMetrics) text format, encoded by
//! `prometheus-client`. Names are `switchyard_*` with their unit; labels name listeners,
//! clusters, backends, directions and reasons, never keys or clients.

mod backends;

use super::snapshot::Snapshot;
use crate::metrics::{CLOSE_REASONS, CODEC_REASONS, PIN_OUTCOMES};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
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

/// One metric family: its descriptor and every series.
pub(super) struct Family<'e> {
    pub(super) enc: prometheus_client::encoding::MetricEncoder<'e>,
}

pub(super) fn family<'e>(
    enc: &'e mut DescriptorEncoder,
    name: &'e str,
    help: &str,
    unit: Option<&'e Unit>,
    kind: MetricType,
) -> Result<Family<'e>, Error> {
    Ok(Family {
        enc: enc.encode_descriptor(name, help, unit, kind)?,
    })
}

impl Family<'_> {
    pub(super) fn counter(&mut self, labels: &[(&str, &str)], v: u64) -> Result<(), Error> {
        if labels.is_empty() {
            return self.enc.encode_counter::<NoLabelSet, _, u64>(&v, None);
        }
        ConstCounter::new(v).encode(self.enc.encode_family(&labels)?)
    }

    pub(super) fn gauge(&mut self, labels: &[(&str, &str)], v: f64) -> Result<(), Error> {
        if labels.is_empty() {
            return self.enc.encode_gauge(&v);
        }
        ConstGauge::new(v).encode(self.enc.encode_family(&labels)?)
    }
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), Error> {
        use MetricType::{Counter, Gauge};
        let v = &self.0;
        {
            let mut m = family(
                &mut e,
                "switchyard_build",
                "The running version.",
                None,
                MetricType::Info,
            )?;
            m.enc.encode_info(&[("version", v.version)])?;
        }
        let mut m = family(
            &mut e,
            "switchyard_start_time",
            "Unix time the process started.",
            Some(&Unit::Seconds),
            Gauge,
        )?;
        m.gauge(&[], v.start_time_seconds)?;
        let mut m = family(
            &mut e,
            "switchyard_config_generation",
            "Config generation running: 0 at start, one more per applied reload.",
            None,
            Gauge,
        )?;
        m.gauge(&[], v.generation as f64)?;
        let mut m = family(
            &mut e,
            "switchyard_reloads",
            "Config reloads, by result.",
            None,
            Counter,
        )?;
        m.counter(&[("result", "applied")], v.reloads_applied)?;
        m.counter(&[("result", "refused")], v.reloads_refused)?;

        // Listeners.
        let mut m = family(&mut e, "switchyard_listener_messages", "Messages per listener: in = requests read from clients, out = answers written to them.", None, Counter)?;
        for l in &v.listeners {
            m.counter(&[("listener", &l.name), ("direction", "in")], l.messages_in)?;
            m.counter(
                &[("listener", &l.name), ("direction", "out")],
                l.messages_out,
            )?;
        }
        let mut m = family(
            &mut e,
            "switchyard_listener_bytes",
            "Bytes per listener: in = read from clients, out = written to them.",
            None,
            Counter,
        )?;
        for l in &v.listeners {
            m.counter(&[("listener", &l.name), ("direction", "in")], l.bytes_in)?;
            m.counter(&[("listener", &l.name), ("direction", "out")], l.bytes_out)?;
        }
        let mut m = family(
            &mut e,
            "switchyard_client_connections_opened",
            "Client connections accepted.",
            None,
            Counter,
        )?;
        for l in &v.listeners {
            m.counter(&[("listener", &l.name)], l.connections_opened)?;
        }
        let mut m = family(
            &mut e,
            "switchyard_client_connections_refused",
            "Client connections closed at once: the listener was at max_connections.",
            None,
            Counter,
        )?;
        for l in &v.listeners {
            m.counter(&[("listener", &l.name)], l.connections_refused)?;
        }
        let mut m = family(
            &mut e,
            "switchyard_client_connections",
            "Client connections open.",
            None,
            Gauge,
        )?;
        for l in &v.listeners {
            m.gauge(&[("listener", &l.name)], l.connections as f64)?;
        }
        let mut m = family(
            &mut e,
            "switchyard_client_connections_closed",
            "Client connections closed, by reason (orderly ends and faults).",
            None,
            Counter,
        )?;
        for l in &v.listeners {
            for r in CLOSE_REASONS {
                m.counter(&[("listener", &l.name), ("reason", r)], l.closed[r])?;
            }
        }
        let mut m = family(
            &mut e,
            "switchyard_codec_errors",
            "Client bytes the listener's codec or protocol script refused, by reason.",
            None,
            Counter,
        )?;
        for l in &v.listeners {
            for r in CODEC_REASONS {
                m.counter(&[("listener", &l.name), ("reason", r)], l.codec_errors[r])?;
            }
        }

        // Clusters and pins.
        let mut m = family(
            &mut e,
            "switchyard_cluster_messages",
            "Messages per cluster: request = sent to its backends, answer = read from them.",
            None,
            Counter,
        )?;
        for c in &v.clusters {
            m.counter(
                &[("cluster", &c.name), ("direction", "request")],
                c.messages_in,
            )?;
            m.counter(
                &[("cluster", &c.name), ("direction", "answer")],
                c.messages_out,
            )?;
        }
        let mut m = family(
            &mut e,
            "switchyard_cluster_bytes",
            "Bytes per cluster: request = sent to its backends, answer = read from them.",
            None,
            Counter,
        )?;
        for c in &v.clusters {
            m.counter(
                &[("cluster", &c.name), ("direction", "request")],
                c.bytes_in,
            )?;
            m.counter(
                &[("cluster", &c.name), ("direction", "answer")],
                c.bytes_out,
            )?;
        }
        let pinned = || v.clusters.iter().filter(|c| c.pins.is_some());
        let mut m = family(
            &mut e,
            "switchyard_pins",
            "Session pins held (clusters with persistence).",
            None,
            Gauge,
        )?;
        for c in pinned() {
            m.gauge(&[("cluster", &c.name)], c.pins.unwrap_or(0) as f64)?;
        }
        let mut m = family(&mut e, "switchyard_pin_lookups", "Keyed messages routed through the pin table, by outcome (moved: the key's backend was unusable and the pin moved).", None, Counter)?;
        for c in pinned() {
            let counts = [
                c.pin_hits,
                c.pin_new,
                c.pin_moved,
                c.pin_pinned_down,
                c.pin_unavailable,
            ];
            for (o, n) in PIN_OUTCOMES.iter().zip(counts) {
                m.counter(&[("cluster", &c.name), ("outcome", o)], n)?;
            }
        }
        let mut m = family(
            &mut e,
            "switchyard_pin_evictions",
            "Pins dropped: full = the table was at max_entries, expired = idle past the TTL.",
            None,
            Counter,
        )?;
        for c in pinned() {
            m.counter(&[("cluster", &c.name), ("cause", "full")], c.pin_evictions)?;
            m.counter(&[("cluster", &c.name), ("cause", "expired")], c.pin_expired)?;
        }

        backends::encode(&mut e, v)?;

        // The process.
        let mut m = family(&mut e, "switchyard_pushes", "Backend messages that answer nothing, routed to the session's client: delivered or dropped.", None, Counter)?;
        m.counter(&[("outcome", "delivered")], v.pushes.delivered)?;
        m.counter(&[("outcome", "dropped")], v.pushes.dropped)?;
        let mut m = family(
            &mut e,
            "switchyard_buffer_budget_used",
            "Bytes all clients' input buffers hold.",
            Some(&Unit::Bytes),
            Gauge,
        )?;
        m.gauge(&[], v.budget.used_bytes as f64)?;
        let mut m = family(
            &mut e,
            "switchyard_buffer_budget_limit",
            "buffer_budget: bytes all clients' input buffers may hold.",
            Some(&Unit::Bytes),
            Gauge,
        )?;
        m.gauge(&[], v.budget.limit_bytes as f64)?;
        let mut m = family(
            &mut e,
            "switchyard_buffer_budget_closes",
            "Clients closed to bring the buffer budget back.",
            None,
            Counter,
        )?;
        m.counter(&[], v.budget.clients_closed)?;
        let mut m = family(
            &mut e,
            "switchyard_worker_loop_lag",
            "Worst lateness of a 100 ms timer on the worker's event loop over the last second.",
            Some(&Unit::Seconds),
            Gauge,
        )?;
        for w in &v.workers {
            m.gauge(&[("worker", &w.id.to_string())], w.loop_lag_seconds)?;
        }
        let mut m = family(
            &mut e,
            "switchyard_access_log_records",
            "Sampled access log records: written, or dropped because the writer fell behind.",
            None,
            Counter,
        )?;
        m.counter(&[("outcome", "written")], v.access_log.written)?;
        m.counter(&[("outcome", "dropped")], v.access_log.dropped)?;
        Ok(())
    }
}
