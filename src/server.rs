//! The process: binds every listener once per worker, starts the worker threads, purges
//! expired session pins, and turns SIGTERM / Ctrl-C into a graceful shutdown (stop
//! accepting, finish in-flight messages up to `shutdown_timeout`, exit).

use crate::balancer::Cluster;
use crate::config::Config;
use crate::worker::{self, Shared, Stats};
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener address could not be bound.
    #[error("listener {listener}: cannot bind {address}: {source}")]
    Bind {
        /// Listener name.
        listener: String,
        /// Address from the config.
        address: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A thread or runtime could not be created.
    #[error("cannot start worker {worker}: {source}")]
    Worker {
        /// Worker index.
        worker: usize,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A started server.
#[derive(Debug)]
pub struct Running {
    /// Each listener's name and bound address, in config order.
    pub listeners: Vec<(String, SocketAddr)>,
    /// State shared with the workers (clusters, counters).
    pub shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
}

impl Running {
    /// The bound address of the listener called `name`.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    /// Asks every worker to stop accepting and drain.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Waits for every worker to finish (call [`Self::shutdown`] first).
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Binds the listeners and starts the workers; returns once every socket is bound.
pub fn start(config: Config) -> Result<Running, ServerError> {
    let workers = config.workers;
    let mut per_worker: Vec<Vec<std::net::TcpListener>> =
        (0..workers).map(|_| Vec::new()).collect();
    let mut listeners = Vec::new();
    for l in &config.listeners {
        let (socks, bound) =
            crate::listener::bind_reuseport(l.listen, workers).map_err(|source| {
                ServerError::Bind {
                    listener: l.name.clone(),
                    address: l.listen,
                    source,
                }
            })?;
        for (w, s) in socks.into_iter().enumerate() {
            per_worker[w].push(s);
        }
        listeners.push((l.name.clone(), bound));
    }
    let clusters = config
        .clusters
        .iter()
        .map(|c| Arc::new(Cluster::new(c.clone())))
        .collect();
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..workers)
        .map(|_| mpsc::channel(worker::PUSH_INBOX))
        .unzip();
    let shared = Arc::new(Shared {
        config,
        clusters,
        push_tx: txs,
        stats: Stats::default(),
    });
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut threads = Vec::new();
    for (id, (socks, inbox)) in per_worker.into_iter().zip(rxs).enumerate() {
        let shared = shared.clone();
        let rx = shutdown_rx.clone();
        let t = std::thread::Builder::new()
            .name(format!("sy-worker-{id}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(worker = id, "cannot build runtime: {e}");
                        return;
                    }
                };
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, worker::run(id, shared, socks, rx, inbox));
            })
            .map_err(|source| ServerError::Worker { worker: id, source })?;
        threads.push(t);
    }
    let purge_shared = shared.clone();
    let mut purge_rx = shutdown_rx;
    threads.push(
        std::thread::Builder::new()
            .name("sy-purge".into())
            .spawn(move || purge_loop(&purge_shared, &mut purge_rx))
            .map_err(|source| ServerError::Worker {
                worker: workers,
                source,
            })?,
    );
    Ok(Running {
        listeners,
        shared,
        shutdown,
        threads,
    })
}

/// Forgets expired session pins once a second until shutdown.
fn purge_loop(shared: &Shared, shutdown: &mut watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        for c in &shared.clusters {
            if let Some(t) = &c.sessions {
                let n = t.purge_expired();
                if n > 0 {
                    tracing::debug!(cluster = %c.config.name, expired = n, "purged session pins");
                }
            }
        }
        // Sleep in small steps so shutdown is noticed quickly.
        for _ in 0..10 {
            if *shutdown.borrow() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Waits for SIGTERM or SIGINT (Ctrl-C).
pub fn wait_for_signal() -> std::io::Result<&'static str> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => Ok("SIGTERM"),
            r = tokio::signal::ctrl_c() => r.map(|_| "SIGINT"),
        }
    })
}
