//! A stats port that speaks like twemproxy's (nutcracker's, port 22222 by default): each
//! connection gets one JSON document and is closed. Every listener is a pool, every
//! backend of its cluster a server, with nutcracker's field names, so dashboards and
//! scripts written for twemproxy keep working after a switch.

use super::snapshot::Snapshot;
use super::State;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// Most stats connections written to at once.
const MAX_CONNECTIONS: usize = 16;

/// Serves the stats port until the task is dropped.
pub(super) async fn serve(state: Arc<State>, listener: tokio::net::TcpListener) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let doc = document(&Snapshot::take(&state));
        tokio::spawn(async move {
            let _permit = permit;
            let mut text = doc.to_string();
            text.push('\n');
            let write = stream.write_all(text.as_bytes());
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), write).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// The document: nutcracker's top-level fields, then one object per pool.
pub(super) fn document(s: &Snapshot) -> Value {
    let mut top = Map::new();
    let host = hostname();
    let now = super::unix_ms() / 1000;
    let total: u64 = s.listeners.iter().map(|l| l.connections_opened).sum();
    let current: u64 = s.listeners.iter().map(|l| l.connections).sum();
    top.insert("service".into(), json!("nutcracker"));
    top.insert("source".into(), json!(host));
    top.insert("version".into(), json!(s.version));
    top.insert("uptime".into(), json!(s.uptime_seconds as u64));
    top.insert("timestamp".into(), json!(now));
    top.insert("total_connections".into(), json!(total));
    top.insert("curr_connections".into(), json!(current));
    for l in &s.listeners {
        let closed = |r: &str| l.closed.get(r).copied().unwrap_or(0);
        let client_err: u64 = l
            .closed
            .iter()
            .filter(|(r, _)| !matches!(**r, "client_closed" | "idle" | "shutting_down" | "quit"))
            .map(|(_, n)| n)
            .sum();
        let mut pool = Map::new();
        pool.insert(
            "client_eof".into(),
            json!(closed("client_closed") + closed("quit")),
        );
        pool.insert("client_err".into(), json!(client_err));
        pool.insert("client_connections".into(), json!(l.connections));
        let backends: Vec<_> = s
            .backends
            .iter()
            .filter(|b| b.cluster == l.cluster)
            .collect();
        let ejects: u64 = backends.iter().map(|b| b.ejections).sum();
        let forward_error: u64 = backends.iter().map(|b| b.failures).sum();
        pool.insert("server_ejects".into(), json!(ejects));
        pool.insert("forward_error".into(), json!(forward_error));
        pool.insert("fragments".into(), json!(0));
        for b in backends {
            pool.insert(
                b.name.clone(),
                json!({
                    "server_eof": b.connection_losses,
                    "server_err": b.connect_failures,
                    "server_timedout": b.failures_by_reason.get("timed_out").copied().unwrap_or(0),
                    "server_connections": b.connections,
                    "server_ejected_at": 0,
                    "requests": b.requests,
                    "request_bytes": b.bytes_out,
                    "responses": b.answers,
                    "response_bytes": b.bytes_in,
                    "in_queue": b.outstanding,
                    "in_queue_bytes": 0,
                    "out_queue": 0,
                    "out_queue_bytes": 0,
                }),
            );
        }
        top.insert(l.name.clone(), Value::Object(pool));
    }
    Value::Object(top)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}
