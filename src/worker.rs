//! One worker: a single-threaded tokio runtime on its own thread, with its own listener
//! sockets, client connections and backend pools. Nothing here is shared with other workers
//! except through the registry's [`Shared`]: clusters (atomics and a sharded session
//! table), the push inboxes, counters and the buffer budget. A worker applies each config
//! [`Generation`] as it arrives.

use crate::backend::{Pool, Upstream};
use crate::client::{ListenerCtx, ListenerSlot};
use crate::config::Config;
use crate::registry::{Push, Registry, Shared};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// How often a worker measures its event loop's lag.
pub(crate) const LAG_TICK: Duration = Duration::from_millis(100);

/// One configuration generation: the validated config, its clusters, and the sockets bound
/// for listeners that are new in it.
#[derive(Debug)]
pub(crate) struct Generation {
    /// Counts reloads; 0 is the config the process started with.
    pub(crate) number: u64,
    /// The config.
    pub(crate) config: Config,
    /// Clusters with their connection settings, in config order.
    pub(crate) upstreams: Vec<Upstream>,
    /// Bound address of each listener, in config order.
    pub(crate) addrs: Vec<std::net::SocketAddr>,
    /// Per listener (config order): for a listener bound anew in this generation, one socket
    /// per worker, each taken by its worker. `None` where the previous socket stays.
    pub(crate) sockets: Vec<Option<WorkerSockets>>,
}

/// One listening socket per worker, each taken once by its worker.
pub(crate) type WorkerSockets = Mutex<Vec<Option<std::net::TcpListener>>>;

/// A listener on this worker.
struct WorkerListener {
    slot: Rc<ListenerSlot>,
    accept: tokio::task::JoinHandle<()>,
}

/// Listener `i` of generation `g`, on this worker: its context, reusing `old`'s pool of
/// backend connections where protocol and cluster stay the same (the pool is reconciled
/// with the new cluster: connections to backends that stay keep what is in flight).
fn context(
    registry: &Rc<Registry>,
    g: &Generation,
    i: usize,
    old: Option<&ListenerCtx>,
) -> Rc<ListenerCtx> {
    let cfg = &g.config.listeners[i];
    let upstream = g.upstreams[cfg.cluster].clone();
    let cluster = &upstream.cluster;
    let seed = ((registry.id as u64) << 32) ^ (i as u64) ^ (g.number << 16) ^ 0x5157_4954_4348;
    let picker =
        switchyard_core::balance::picker(cluster.settings.policy, cluster.backends.len(), seed);
    let pool = match old {
        Some(old)
            if old.same_protocol(cfg) && old.cluster().settings.name == cluster.settings.name =>
        {
            old.pool.reconcile(&upstream, registry);
            old.pool.clone()
        }
        _ => Rc::new(Pool::start(cfg, &upstream, registry)),
    };
    Rc::new(ListenerCtx {
        config: cfg.clone(),
        upstream,
        pool,
        picker: RefCell::new(picker),
        counters: registry.shared.metrics.listener(registry.id, &cfg.name),
        name: cfg.name.as_str().into(),
        sample_every: registry.shared.access.every(),
        sample_in: std::cell::Cell::new(1 + registry.id as u32),
        registry: registry.clone(),
    })
}

/// Brings this worker's listeners in line with generation `g`.
fn apply(registry: &Rc<Registry>, g: &Generation, listeners: &mut HashMap<String, WorkerListener>) {
    let mut keep = Vec::new();
    for (i, cfg) in g.config.listeners.iter().enumerate() {
        keep.push(cfg.name.clone());
        let socket = g.sockets[i].as_ref().and_then(|m| {
            m.lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(registry.id)
                .and_then(Option::take)
        });
        match (listeners.get(&cfg.name), socket) {
            (Some(wl), None) => {
                // Same socket: swap in the new context; connections follow it.
                let old = wl.slot.current();
                wl.slot.replace(context(registry, g, i, Some(&old)));
            }
            (_, Some(sock)) => {
                if let Some(old) = listeners.remove(&cfg.name) {
                    old.accept.abort();
                }
                let lctx = context(registry, g, i, None);
                let slot = Rc::new(ListenerSlot::new(
                    lctx,
                    registry.shared.conn_count(&cfg.name),
                ));
                match tokio::net::TcpListener::from_std(sock) {
                    Ok(l) => {
                        let accept =
                            tokio::task::spawn_local(crate::listener::accept_loop(l, slot.clone()));
                        listeners.insert(cfg.name.clone(), WorkerListener { slot, accept });
                    }
                    Err(e) => {
                        tracing::error!(listener = %cfg.name, "cannot register listener: {e}")
                    }
                }
            }
            (None, None) => tracing::error!(listener = %cfg.name, "no socket for a new listener"),
        }
    }
    listeners.retain(|name, wl| {
        let stays = keep.contains(name);
        if !stays {
            tracing::info!(listener = %name, "listener removed: no new connections; open ones continue");
            wl.accept.abort();
        }
        stays
    });
}

/// Runs worker `id` until shutdown: serves the listeners of the current generation (and
/// each new one as it arrives) and the push inbox.
pub(crate) async fn run(
    id: usize,
    shared: Arc<Shared>,
    mut generations: watch::Receiver<Arc<Generation>>,
    mut shutdown: watch::Receiver<bool>,
    mut inbox: mpsc::Receiver<Push>,
) {
    let registry = Rc::new(Registry::new(id, shared, shutdown.clone()));
    let mut listeners = HashMap::new();
    let first = generations.borrow_and_update().clone();
    apply(&registry, &first, &mut listeners);
    let mut shutdown_timeout = first.config.shutdown_timeout;
    // Suppressed log lines no later line reported: summed up once a second.
    tokio::task::spawn_local(async {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            every.tick().await;
            crate::throttle::flush();
        }
    });
    // The event loop's lag: how late a 100 ms tick fires, worst of each second.
    let lag = registry.counters.clone();
    tokio::task::spawn_local(async move {
        let mut tick = tokio::time::interval(LAG_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut worst = Duration::ZERO;
        let mut n = 0u32;
        loop {
            let due = tick.tick().await;
            lag.last_tick_ms
                .set(switchyard_core::clock::now_ms().max(1));
            worst = worst.max(Instant::now().saturating_duration_since(due.into_std()));
            n += 1;
            if n == 10 {
                lag.loop_lag_ns.set(worst.as_nanos() as u64);
                (worst, n) = (Duration::ZERO, 0);
            }
        }
    });
    let inbox_registry = registry.clone();
    tokio::task::spawn_local(async move {
        while let Some(p) = inbox.recv().await {
            inbox_registry.deliver_push(p.owner, &p.frame);
        }
    });
    loop {
        if *shutdown.borrow() {
            break;
        }
        tokio::select! {
            r = generations.changed() => {
                if r.is_err() {
                    break;
                }
                let g = generations.borrow_and_update().clone();
                apply(&registry, &g, &mut listeners);
                shutdown_timeout = g.config.shutdown_timeout;
                registry.shared.budget.set_limit(g.config.buffer_budget);
            }
            r = shutdown.changed() => {
                if r.is_err() {
                    break;
                }
            }
        }
    }
    // Listeners stop accepting and clients stop reading on the same signal; wait for the
    // clients to finish what is in flight, up to the deadline.
    let deadline = Instant::now() + shutdown_timeout;
    while registry.client_count() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = registry.client_count();
    if left > 0 {
        tracing::warn!(
            worker = id,
            clients = left,
            "shutdown deadline reached; closing remaining clients"
        );
    }
}
