//! `GET /api/config`: the effective config as JSON — every listener and cluster as
//! validated, defaults filled in, the admin token and backend passwords redacted.

use super::State;
use serde_json::{json, Value};

/// The effective config: every listener and cluster as validated, defaults filled in,
/// secrets (the admin token, backend passwords) redacted.
pub(super) fn config(state: &State) -> Value {
    let g = state.generations.borrow().clone();
    let c = &g.config;
    let secs = |d: std::time::Duration| d.as_secs_f64();
    let listeners: Vec<Value> = c
        .listeners
        .iter()
        .zip(&g.addrs)
        .map(|(l, a)| {
            json!({
                "name": l.name,
                "listen": l.listen.to_string(),
                "bound": a.to_string(),
                "cluster": c.clusters[l.cluster].name(),
                "protocol": l.protocols.requests.kind(),
                "answer_protocol": l.protocols.answers.kind(),
                "correlation": format!("{:?}", l.correlation()),
                "retry_on_backend_close": l.retry_on_backend_close,
                "max_connections": l.max_connections,
                "limits": {
                    "max_frame_size": l.limits.max_frame_size,
                    "max_buffered_bytes": l.limits.max_buffered_bytes,
                    "max_inflight": l.limits.max_inflight,
                    "max_reply_buffer": l.limits.max_reply_buffer,
                    "client_idle_timeout_seconds": secs(l.limits.idle_timeout),
                    "frame_timeout_seconds": secs(l.limits.frame_timeout),
                },
            })
        })
        .collect();
    let clusters: Vec<Value> = c
        .clusters
        .iter()
        .map(|k| {
            let b = &k.balance;
            json!({
                "name": k.name(),
                "policy": b.policy.name(),
                "backends": b.backends.iter().map(|s| json!({
                    "name": s.name, "address": s.address.to_string(),
                    "weight": s.weight, "drain": s.drain,
                })).collect::<Vec<_>>(),
                "persistence": b.persistence.map(|p| json!({
                    "ttl_seconds": secs(p.ttl), "max_entries": p.max_entries,
                })),
                "request_timeout_seconds": secs(k.request_timeout),
                "retry_on_connect_failure": k.retry_on_connect_failure,
                "health_checks": k.health.is_some(),
                "pool": {
                    "connections_per_backend": k.pool.connections_per_backend,
                    "connect_timeout_seconds": secs(k.pool.connect_timeout),
                    "max_queued_bytes": k.pool.max_queued_bytes,
                    "reconnect_backoff_min_seconds": secs(k.pool.reconnect_backoff_min),
                    "reconnect_backoff_max_seconds": secs(k.pool.reconnect_backoff_max),
                    "quick_ack": format!("{:?}", k.pool.quick_ack).to_lowercase(),
                },
                "backend_setup": {
                    "password": k.backend_setup.password.as_ref().map(|_| "<redacted>"),
                    "db": k.backend_setup.db,
                },
            })
        })
        .collect();
    let admin = c.admin.as_ref().map(|a| {
        json!({
            "listen": a.listen.to_string(),
            "token": a.token.as_ref().map(|_| "<redacted>"),
            "twemproxy_stats": a.twemproxy_stats.map(|s| s.to_string()),
            "access_log": a.access_log.as_ref().map(|l| json!({
                "path": l.path.display().to_string(), "sample": l.sample,
            })),
        })
    });
    json!({
        "file": state.config_file,
        "generation": g.number,
        "workers": c.workers,
        "shutdown_timeout_seconds": secs(c.shutdown_timeout),
        "buffer_budget": c.buffer_budget,
        "admin": admin,
        "listeners": listeners,
        "clusters": clusters,
    })
}
