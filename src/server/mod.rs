//! The process: binds every listener once per worker, starts the worker threads and the
//! control thread (session purging, active health checks), applies config reloads as a new
//! generation every worker picks up, and shuts down gracefully (stop accepting, finish
//! in-flight messages up to `shutdown_timeout`).

mod reload;

use crate::access_log::AccessLog;
pub use crate::admin::ReloadReport;
use crate::admin::Reloads;
use crate::backend::Upstream;
use crate::config::Config;
use crate::registry::{Shared, PUSH_INBOX};
use crate::worker::{self, Generation, WorkerSockets};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use switchyard_core::Cluster;
use tokio::sync::{mpsc, watch};

/// Why the server could not start, or a reload was refused.
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
    /// Another process already listens on a listener's address.
    #[error(
        "listener {listener}: {address} is already in use by another process (a second \
         switchyard?); not starting, since both would take a share of new connections, each \
         with its own session pins. Stop the other process, or pass --takeover to share the \
         address on purpose"
    )]
    InUse {
        /// Listener name.
        listener: String,
        /// Address from the config.
        address: SocketAddr,
    },
    /// The admin listener or the stats port could not be bound.
    #[error("admin: cannot bind {address}: {source}")]
    AdminBind {
        /// Address from the config.
        address: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The access log could not be opened.
    #[error(transparent)]
    AccessLog(#[from] crate::access_log::OpenError),
    /// A thread or runtime could not be created.
    #[error("cannot start thread {thread}: {source}")]
    Thread {
        /// Thread name.
        thread: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Told of each listener a reload binds anew (name, address), whatever asked for the
/// reload: `run` prints its `listening NAME ADDR` line.
pub type Announce = Arc<dyn Fn(&str, SocketAddr) + Send + Sync>;

/// How to start.
#[derive(Clone, Default)]
pub struct Options {
    /// Bind beside another process listening on a listener's address (see
    /// [`start_with`]).
    pub takeover: bool,
    /// The config file, for reloads (SIGHUP, `POST /api/reload`).
    pub config_file: Option<PathBuf>,
    /// Told of listeners bound by a reload.
    pub announce: Option<Announce>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("takeover", &self.takeover)
            .field("config_file", &self.config_file)
            .field("announce", &self.announce.is_some())
            .finish()
    }
}

/// A started server.
#[derive(Debug)]
pub struct Running {
    /// Each listener's name and bound address, in config order, as started.
    pub listeners: Vec<(String, SocketAddr)>,
    /// The admin listener's bound address, if configured.
    pub admin: Option<SocketAddr>,
    /// The twemproxy-compatible stats port's bound address, if configured.
    pub twemproxy_stats: Option<SocketAddr>,
    control: Arc<Control>,
    shutdown: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
}

/// What reloads change, shared by the caller's thread (signals) and the control thread
/// (the admin API).
struct Control {
    generation: Mutex<Arc<Generation>>,
    generations: watch::Sender<Arc<Generation>>,
    reloads: Arc<Reloads>,
    config_file: Option<PathBuf>,
    announce: Option<Announce>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("config_file", &self.config_file)
            .finish_non_exhaustive()
    }
}

/// Binds sockets for every listener of `config` that `previous` does not already serve on
/// the same address. Unless `share` is set, an address another process listens on is
/// refused (addresses this process listens on are its own to re-bind).
fn bind_new(
    config: &Config,
    previous: Option<&Generation>,
    share: bool,
) -> Result<(Vec<SocketAddr>, Vec<Option<WorkerSockets>>), ServerError> {
    let mut addrs = Vec::new();
    let mut sockets = Vec::new();
    for l in &config.listeners {
        let kept = previous.and_then(|g| {
            g.config
                .listeners
                .iter()
                .position(|o| o.name == l.name && o.listen == l.listen)
                .map(|i| g.addrs[i])
        });
        if let Some(addr) = kept {
            addrs.push(addr);
            sockets.push(None);
            continue;
        }
        let ours = previous.is_some_and(|g| g.addrs.contains(&l.listen));
        if !share && !ours && crate::listener::listened_on(l.listen) {
            return Err(ServerError::InUse {
                listener: l.name.clone(),
                address: l.listen,
            });
        }
        let (socks, bound) =
            crate::listener::bind_reuseport(l.listen, config.workers).map_err(|source| {
                ServerError::Bind {
                    listener: l.name.clone(),
                    address: l.listen,
                    source,
                }
            })?;
        addrs.push(bound);
        sockets.push(Some(Mutex::new(socks.into_iter().map(Some).collect())));
    }
    Ok((addrs, sockets))
}

fn thread_error(thread: &str) -> impl FnOnce(std::io::Error) -> ServerError + '_ {
    move |source| ServerError::Thread {
        thread: thread.to_string(),
        source,
    }
}

/// Binds the listeners and starts the workers; returns once every socket is bound. Refuses
/// an address another process listens on ([`ServerError::InUse`]).
pub fn start(config: Config) -> Result<Running, ServerError> {
    start_with(config, false)
}

/// Like [`start`]; with `takeover`, binds beside another process already listening on a
/// listener's address (the kernel then spreads new connections over both: the path of a
/// zero-downtime upgrade, where the old process is told to drain once the new one runs).
pub fn start_with(config: Config, takeover: bool) -> Result<Running, ServerError> {
    start_full(
        config,
        Options {
            takeover,
            config_file: None,
            announce: None,
        },
    )
}

/// Binds a loopback-or-configured admin address.
fn bind_admin(address: SocketAddr) -> Result<std::net::TcpListener, ServerError> {
    let l = std::net::TcpListener::bind(address)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| ServerError::AdminBind { address, source })?;
    Ok(l)
}

/// Like [`start_with`], with every option.
pub fn start_full(config: Config, options: Options) -> Result<Running, ServerError> {
    let workers = config.workers;
    let (addrs, sockets) = bind_new(&config, None, options.takeover)?;
    let admin = config.admin.clone();
    let admin_socket = admin.as_ref().map(|a| bind_admin(a.listen)).transpose()?;
    let stats_socket = admin
        .as_ref()
        .and_then(|a| a.twemproxy_stats)
        .map(bind_admin)
        .transpose()?;
    let local = |l: &Option<std::net::TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
    let (admin_addr, stats_addr) = (local(&admin_socket), local(&stats_socket));
    let access = match admin.as_ref().and_then(|a| a.access_log.as_ref()) {
        Some(a) => AccessLog::open(&a.path, a.sample)?,
        None => AccessLog::off(),
    };
    let listeners = config
        .listeners
        .iter()
        .map(|l| l.name.clone())
        .zip(addrs.iter().copied())
        .collect();
    let upstreams = config
        .clusters
        .iter()
        .map(|c| Upstream {
            cluster: Arc::new(Cluster::new(c.balance.clone())),
            config: Arc::new(c.clone()),
        })
        .collect();
    let generation = Arc::new(Generation {
        number: 0,
        config,
        upstreams,
        addrs,
        sockets,
    });
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..workers).map(|_| mpsc::channel(PUSH_INBOX)).unzip();
    let shared = Arc::new(Shared::new(
        txs,
        generation.config.buffer_budget,
        Arc::new(access),
    ));
    let (generations, gen_rx) = watch::channel(generation.clone());
    let (shutdown, shutdown_rx) = watch::channel(false);
    // Every runtime is built before any thread starts, so a failure (e.g. no file
    // descriptors left) stops the start instead of leaving a worker missing.
    let runtime = |name: &str| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(thread_error(name))
    };
    let worker_rts = (0..workers)
        .map(|id| runtime(&format!("sy-worker-{id}")))
        .collect::<Result<Vec<_>, _>>()?;
    let control_rt = runtime("sy-control")?;
    let mut threads = Vec::new();
    for ((id, inbox), rt) in rxs.into_iter().enumerate().zip(worker_rts) {
        let shared = shared.clone();
        let gens = gen_rx.clone();
        let rx = shutdown_rx.clone();
        let name = format!("sy-worker-{id}");
        let t = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, worker::run(id, shared, gens, rx, inbox));
            })
            .map_err(thread_error(&name))?;
        threads.push(t);
    }
    let control_state = Arc::new(Control {
        generation: Mutex::new(generation),
        generations,
        reloads: Arc::default(),
        config_file: options.config_file,
        announce: options.announce,
    });
    let admin_state = admin.zip(admin_addr).map(|(a, bound)| {
        let c = control_state.clone();
        Arc::new(crate::admin::State::new(
            gen_rx.clone(),
            shared.clone(),
            control_state.reloads.clone(),
            Box::new(move |source| c.reload_file(source)),
            a.token,
            control_state
                .config_file
                .as_ref()
                .map(|p| p.display().to_string()),
            bound,
        ))
    });
    let admin_serve = admin_state
        .zip(admin_socket)
        .map(|(state, socket)| crate::admin::serve(state, socket, stats_socket));
    let control_rx = gen_rx;
    let control_shutdown = shutdown_rx;
    threads.push(
        std::thread::Builder::new()
            .name("sy-control".into())
            .spawn(move || control(control_rt, control_rx, control_shutdown, admin_serve))
            .map_err(thread_error("sy-control"))?,
    );
    Ok(Running {
        listeners,
        admin: admin_addr,
        twemproxy_stats: stats_addr,
        control: control_state,
        shutdown,
        threads,
    })
}

/// The control thread: active health checks for the current generation, a purge of
/// expired session pins once a second, and the admin listener, until shutdown.
fn control(
    rt: tokio::runtime::Runtime,
    mut generations: watch::Receiver<Arc<Generation>>,
    mut shutdown: watch::Receiver<bool>,
    admin: Option<impl std::future::Future<Output = ()> + Send + 'static>,
) {
    rt.block_on(async move {
        let _admin = admin.map(|a| AbortOnDrop(tokio::spawn(a)));
        let mut current = generations.borrow_and_update().clone();
        let mut checks = crate::health::Checks::start(&current.upstreams);
        let mut purge = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                r = generations.changed() => {
                    if r.is_err() {
                        return;
                    }
                    current = generations.borrow_and_update().clone();
                    drop(checks);
                    checks = crate::health::Checks::start(&current.upstreams);
                }
                _ = purge.tick() => {
                    for c in current.upstreams.iter().map(|u| &u.cluster) {
                        if let Some(t) = &c.sessions {
                            let n = t.purge_expired();
                            if n > 0 {
                                tracing::debug!(cluster = %c.settings.name, expired = n, "purged session pins");
                            }
                        }
                    }
                }
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    });
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Running {
    /// The bound address of the listener called `name`, in the current generation.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        let g = self.current();
        g.config
            .listeners
            .iter()
            .position(|l| l.name == name)
            .map(|i| g.addrs[i])
    }

    /// The current generation.
    pub(crate) fn current(&self) -> Arc<Generation> {
        self.control.current()
    }

    /// Applies a new, validated config without dropping connections: listeners are added,
    /// removed or re-bound, clusters and backends replaced (backends that stay keep their
    /// state, connections and pins). The worker count cannot change without a restart.
    /// Returns the listeners bound anew. On error nothing changes.
    pub fn reload(&self, config: Config) -> Result<Vec<(String, SocketAddr)>, ServerError> {
        match self.control.swap(config) {
            Ok(done) => {
                let bound = done.bound.clone();
                self.control.report("call", Ok(done));
                Ok(bound)
            }
            Err(e) => {
                self.control.report("call", Err(e.to_string()));
                Err(e)
            }
        }
    }

    /// Reloads the config file the server was started with (SIGHUP): what changed, or why
    /// it was refused (then nothing changes). Logged and kept for the admin API.
    pub fn reload_file(&self, source: &'static str) -> ReloadReport {
        self.control.reload_file(source)
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

/// A signal the `run` command acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGHUP: reload the config file.
    Reload,
    /// SIGTERM or SIGINT: shut down gracefully.
    Terminate(&'static str),
}

/// The signals the `run` command listens to, registered up front (so that a process that
/// later runs out of file descriptors can still be stopped and reloaded).
#[derive(Debug)]
pub struct Signals {
    rt: tokio::runtime::Runtime,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Registers SIGTERM, SIGINT and SIGHUP.
    pub fn register() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let _enter = rt.enter();
        let term = signal(SignalKind::terminate())?;
        let hup = signal(SignalKind::hangup())?;
        let int = signal(SignalKind::interrupt())?;
        drop(_enter);
        Ok(Signals { rt, term, hup, int })
    }

    /// Delivers signals to `on_signal` until it returns `false`.
    pub fn handle(mut self, mut on_signal: impl FnMut(Signal) -> bool) {
        let Signals { rt, term, hup, int } = &mut self;
        rt.block_on(async {
            loop {
                let s = tokio::select! {
                    _ = term.recv() => Signal::Terminate("SIGTERM"),
                    _ = int.recv() => Signal::Terminate("SIGINT"),
                    _ = hup.recv() => Signal::Reload,
                };
                if !on_signal(s) {
                    return;
                }
            }
        })
    }
}
