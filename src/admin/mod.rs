//! The admin listener, served on the control thread (never on a worker): `/metrics` in
//! Prometheus text format, the JSON API under `/api/` (state, pins, runtime drain and
//! weight, reload, the effective config), and the status page at `/`. Also the
//! twemproxy-compatible stats port ([`twemproxy`]). Everything shown is read as one [`snapshot::Snapshot`].
//!
//! HTTP is hyper's HTTP/1.1 server under an axum router, with bounds an exposed port
//! needs: request heads of at most 16 KiB (a larger one gets `431`), 5 s to send them
//! (then `408` and the connection is closed), bodies of at most 64 KiB, at most 64 connections at
//! once, one request per connection, 30 s per connection. With a token configured, every
//! request but the page itself must carry `Authorization: Bearer TOKEN` (`401` otherwise).
//! Against other web pages the operator's browser opens: on loopback a request must name
//! the listener in `Host` (DNS rebinding), and a request whose `Origin` is not the
//! listener's own is refused (cross-site requests, CSRF); both `403`.

mod api;
mod effective;
mod prom;
pub(crate) mod snapshot;
mod twemproxy;

use crate::registry::Shared;
use crate::worker::Generation;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Most reloads remembered for the API and the page.
const RELOADS_KEPT: usize = 20;
/// Most admin connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 64;
/// Most bytes of a request head.
const MAX_HEAD: usize = 16 << 10;
/// Time to send a request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Most time one connection is served.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// What one reload did, for the log, the API and the page.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    /// When, in Unix milliseconds.
    pub at_unix_ms: u64,
    /// What asked for it: `sighup`, `api`.
    pub source: &'static str,
    /// Whether the new config runs now.
    pub applied: bool,
    /// The generation running after it.
    pub generation: u64,
    /// What changed, one entry per listener, cluster or backend (empty: nothing).
    pub changes: Vec<String>,
    /// `changes` in one line, or `no changes`.
    pub summary: String,
    /// Why it was refused.
    pub error: Option<String>,
    /// Listeners bound anew: name and address.
    pub bound: Vec<(String, std::net::SocketAddr)>,
}

/// The reloads of the process: the last ones, and counts.
#[derive(Debug, Default)]
pub(crate) struct Reloads {
    recent: Mutex<VecDeque<ReloadReport>>,
    applied: AtomicU64,
    refused: AtomicU64,
}

impl Reloads {
    /// Records one.
    pub(crate) fn record(&self, r: &ReloadReport) {
        let counter = if r.applied {
            &self.applied
        } else {
            &self.refused
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut q = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() == RELOADS_KEPT {
            q.pop_back();
        }
        q.push_front(r.clone());
    }

    /// The last ones, newest first.
    pub(crate) fn recent(&self) -> Vec<ReloadReport> {
        let q = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        q.iter().cloned().collect()
    }

    pub(crate) fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// An operator's run-time change to one backend, kept until the next reload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Override {
    /// Drained (`true`) or undrained (`false`) through the API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) drain: Option<bool>,
    /// Weight set through the API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) weight: Option<u32>,
}

/// Run-time changes, valid for one generation (a reload applies the file again).
#[derive(Debug, Default)]
struct Overrides {
    generation: u64,
    by_backend: BTreeMap<(String, String), Override>,
}

/// Asks for a reload from the config file; says what it did.
pub(crate) type Reloader = Box<dyn Fn(&'static str) -> ReloadReport + Send + Sync>;

/// What the admin listener reads and changes.
pub(crate) struct State {
    pub(crate) generations: watch::Receiver<Arc<Generation>>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) reloads: Arc<Reloads>,
    pub(crate) reload: Reloader,
    overrides: Mutex<Overrides>,
    token: Option<String>,
    /// The `Host` values a request may name (DNS-rebinding protection), when the listener
    /// is on loopback; `None`: any (a token guards a public listener).
    hosts: Option<Vec<String>>,
    pub(crate) started: Instant,
    pub(crate) started_unix: f64,
    pub(crate) config_file: Option<String>,
}

impl State {
    /// The admin state over the running process.
    pub(crate) fn new(
        generations: watch::Receiver<Arc<Generation>>,
        shared: Arc<Shared>,
        reloads: Arc<Reloads>,
        reload: Reloader,
        token: Option<String>,
        config_file: Option<String>,
        bound: std::net::SocketAddr,
    ) -> Self {
        let port = bound.port();
        let hosts = bound.ip().is_loopback().then(|| {
            vec![
                bound.to_string(),
                format!("localhost:{port}"),
                format!("127.0.0.1:{port}"),
                format!("[::1]:{port}"),
            ]
        });
        let started_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        State {
            generations,
            shared,
            reloads,
            reload,
            overrides: Mutex::default(),
            token,
            hosts,
            started: Instant::now(),
            started_unix,
            config_file,
        }
    }

    /// The run-time changes, brought up to generation `number` (a newer one clears them:
    /// its reload applied the file again); `None` if `number` is older than they are.
    fn overrides_at(&self, number: u64) -> Option<std::sync::MutexGuard<'_, Overrides>> {
        let mut o = self.overrides.lock().unwrap_or_else(|p| p.into_inner());
        if o.generation < number {
            *o = Overrides {
                generation: number,
                by_backend: BTreeMap::new(),
            };
        }
        (o.generation == number).then_some(o)
    }

    /// The run-time changes that still hold in generation `number` (the current one).
    pub(crate) fn overrides(&self, number: u64) -> BTreeMap<(String, String), Override> {
        self.overrides_at(number)
            .map(|o| o.by_backend.clone())
            .unwrap_or_default()
    }

    /// Records a run-time change made in generation `number`; nothing if a reload has
    /// since replaced it (the file's settings apply again).
    pub(crate) fn set_override(
        &self,
        number: u64,
        key: (String, String),
        change: impl FnOnce(&mut Override),
    ) {
        if let Some(mut o) = self.overrides_at(number) {
            change(o.by_backend.entry(key).or_default());
        }
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("admin::State").finish_non_exhaustive()
    }
}

/// Unix time now, milliseconds.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What a client too slow to send its request head gets.
const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

/// The stream and a second handle on the same socket.
fn split_handle(
    stream: tokio::net::TcpStream,
) -> Option<(tokio::net::TcpStream, tokio::net::TcpStream)> {
    let std = stream.into_std().ok()?;
    let spare = std.try_clone().ok()?;
    Some((
        tokio::net::TcpStream::from_std(std).ok()?,
        tokio::net::TcpStream::from_std(spare).ok()?,
    ))
}

/// Serves the admin listener on `listener` and, if given, the twemproxy stats port, on
/// the current (control) runtime, until the future is dropped.
pub(crate) async fn serve(
    state: Arc<State>,
    listener: std::net::TcpListener,
    stats: Option<std::net::TcpListener>,
) {
    if let Some(s) = stats {
        match tokio::net::TcpListener::from_std(s) {
            Ok(s) => {
                tokio::spawn(twemproxy::serve(state.clone(), s));
            }
            Err(e) => tracing::error!(error = %e, "twemproxy stats port: cannot serve"),
        }
    }
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "admin listener: cannot serve");
            return;
        }
    };
    let router = api::router(state);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let _permit = permit;
            // A second handle on the socket, to answer 408 when hyper gives up on a head
            // that does not come (hyper itself just closes).
            let Some((stream, spare)) = split_handle(stream) else {
                return;
            };
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                // One request per connection: the head timeout then means exactly "a client
                // too slow to send its request", never an idle kept-alive connection.
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) if e.is_timeout() => {
                    tracing::debug!(%peer, "admin client too slow to send its request head");
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        use tokio::io::AsyncWriteExt;
                        let mut spare = spare;
                        spare.write_all(REQUEST_TIMEOUT).await?;
                        spare.shutdown().await
                    })
                    .await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "admin connection ended"),
                Err(_) => tracing::debug!(%peer, "admin connection closed after 30 s"),
            }
        });
    }
}
