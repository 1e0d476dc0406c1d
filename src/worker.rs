//! One worker: a single-threaded tokio runtime on its own thread, with its own listener
//! sockets, client connections and backend pools. Nothing here is shared with other workers
//! except through [`Shared`]: clusters (atomics and a sharded session table), the push
//! inboxes, and counters.

use crate::balancer::{Cluster, Picker};
use crate::config::Config;
use crate::downstream::{Client, ListenerCtx, ListenerSlot};
use crate::upstream::Pool;
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Notify};

/// Bits of a client's global id that hold the per-worker counter.
const GID_WORKER_SHIFT: u32 = 40;

/// A backend message for a client connection owned by another worker.
#[derive(Debug)]
pub struct Push {
    /// Global id of the client connection.
    pub owner: u64,
    /// The message bytes.
    pub frame: Bytes,
}

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Client connections accepted.
    pub clients_accepted: AtomicU64,
    /// Client connections closed for a reason worth a warning.
    pub clients_failed: AtomicU64,
    /// Client connections closed at once because the listener was at max_connections.
    pub clients_refused: AtomicU64,
    /// Pushes delivered to their session's client.
    pub pushes_delivered: AtomicU64,
    /// Pushes dropped: no key, no live session, owner gone, or inbox full.
    pub pushes_dropped: AtomicU64,
}

/// One configuration generation: the validated config, its clusters, and the sockets bound
/// for listeners that are new in it.
#[derive(Debug)]
pub struct Generation {
    /// Counts reloads; 0 is the config the process started with.
    pub number: u64,
    /// The config.
    pub config: Config,
    /// Clusters, in config order.
    pub clusters: Vec<Arc<Cluster>>,
    /// Bound address of each listener, in config order.
    pub addrs: Vec<std::net::SocketAddr>,
    /// Per listener (config order): for a listener bound anew in this generation, one socket
    /// per worker, each taken by its worker. `None` where the previous socket stays.
    pub sockets: Vec<Option<WorkerSockets>>,
}

/// One listening socket per worker, each taken once by its worker.
pub type WorkerSockets = Mutex<Vec<Option<std::net::TcpListener>>>;

/// What all workers share.
#[derive(Debug)]
pub struct Shared {
    /// Each worker's push inbox.
    pub push_tx: Vec<mpsc::Sender<Push>>,
    /// Counters.
    pub stats: Stats,
    /// Open client connections per listener name, across workers and reloads.
    pub conn_counts: Mutex<HashMap<String, Arc<AtomicUsize>>>,
    /// Bytes all clients' input buffers hold, against `buffer_budget`.
    pub budget: crate::budget::Budget,
}

impl Shared {
    /// The connection counter of listener `name`.
    pub fn conn_count(&self, name: &str) -> Arc<AtomicUsize> {
        let mut m = self.conn_counts.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(name.to_string()).or_default().clone()
    }
}

/// Per-worker state shared by that worker's tasks.
#[derive(Debug)]
pub struct WorkerCtx {
    /// Worker index.
    pub id: usize,
    /// Process-wide state.
    pub shared: Arc<Shared>,
    /// Becomes `true` when the process is shutting down.
    pub shutdown: watch::Receiver<bool>,
    /// Signalled when a backend connection has room again (or went down).
    pub capacity: Notify,
    clients: RefCell<HashMap<u64, Weak<Client>>>,
    next_conn: Cell<u64>,
    /// Clients given answers in the current batch, to flush at its end.
    to_flush: RefCell<Vec<Rc<Client>>>,
    /// When this worker last closed a client to bring the buffer budget back.
    last_reclaim: Cell<Option<Instant>>,
}

impl WorkerCtx {
    /// A worker's context, for worker `id` of the process sharing `shared`.
    pub fn new(id: usize, shared: Arc<Shared>, shutdown: watch::Receiver<bool>) -> Self {
        WorkerCtx {
            id,
            shared,
            shutdown,
            capacity: Notify::new(),
            clients: RefCell::new(HashMap::new()),
            next_conn: Cell::new(0),
            to_flush: RefCell::new(Vec::new()),
            last_reclaim: Cell::new(None),
        }
    }

    /// The buffer budget is spent and a client of this worker needs room: closes this
    /// worker's client holding the most partial-frame bytes (at most one every 20 ms, so
    /// that the room it frees is seen before another is closed). Complete requests already
    /// sent are not what is counted, so clients waiting on answers are left alone.
    pub fn reclaim(&self) {
        let now = Instant::now();
        if self
            .last_reclaim
            .get()
            .is_some_and(|t| now.duration_since(t) < RECLAIM_EVERY)
        {
            return;
        }
        self.last_reclaim.set(Some(now));
        let victim = self
            .clients
            .borrow()
            .values()
            .filter_map(Weak::upgrade)
            .filter(|c| c.partial_bytes() > 0)
            .max_by_key(|c| c.partial_bytes());
        let Some(victim) = victim else {
            return;
        };
        let budget = &self.shared.budget;
        victim.fail(&format!(
            "the process's client buffers reached buffer_budget ({} of {} bytes): closing the client holding the largest partial frame ({} bytes)",
            budget.held(),
            budget.limit(),
            victim.partial_bytes()
        ));
    }

    /// A new global client connection id.
    pub fn next_gid(&self) -> u64 {
        let n = self.next_conn.get() + 1;
        self.next_conn.set(n);
        ((self.id as u64) << GID_WORKER_SHIFT) | (n & ((1 << GID_WORKER_SHIFT) - 1))
    }

    /// Makes a client reachable for pushes.
    pub fn register(&self, client: &Rc<Client>) {
        self.shared
            .stats
            .clients_accepted
            .fetch_add(1, Ordering::Relaxed);
        self.clients
            .borrow_mut()
            .insert(client.gid, Rc::downgrade(client));
    }

    /// Queues `client`'s answers to be written at the end of the current batch.
    pub fn defer_flush(&self, client: &Rc<Client>) {
        if client.queue_flush() {
            self.to_flush.borrow_mut().push(client.clone());
        }
    }

    /// Writes the answers of every client queued since the last call: one write per client
    /// per batch of backend answers.
    pub fn flush_clients(&self) {
        let mut list = std::mem::take(&mut *self.to_flush.borrow_mut());
        for c in list.drain(..) {
            c.flush_queued();
        }
        let mut slot = self.to_flush.borrow_mut();
        if slot.is_empty() {
            *slot = list; // keep the allocation
        }
    }

    /// Forgets a closed client.
    pub fn unregister(&self, gid: u64) {
        self.clients.borrow_mut().remove(&gid);
    }

    /// Open client connections on this worker.
    pub fn client_count(&self) -> usize {
        self.clients.borrow().len()
    }

    /// Routes a backend message that answers nothing to the client owning its session key.
    /// `key` is the hashed session key of the message, if it has one.
    pub fn route_push(&self, cluster: &Cluster, key: Option<u64>, frame: &[u8]) {
        let stats = &self.shared.stats;
        let owner = key.and_then(|k| cluster.sessions.as_ref().and_then(|t| t.owner_of(k)));
        let Some(owner) = owner else {
            stats.pushes_dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(cluster = %cluster.config.name, "dropping a backend message with no live session");
            return;
        };
        let worker = (owner >> GID_WORKER_SHIFT) as usize;
        if worker == self.id {
            self.deliver_push(owner, frame);
            return;
        }
        let push = Push {
            owner,
            frame: Bytes::copy_from_slice(frame),
        };
        match self.shared.push_tx.get(worker).map(|tx| tx.try_send(push)) {
            Some(Ok(())) => {}
            _ => {
                stats.pushes_dropped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(worker, "push inbox full; dropping a backend message");
            }
        }
    }

    fn deliver_push(&self, owner: u64, frame: &[u8]) {
        let client = self.clients.borrow().get(&owner).and_then(Weak::upgrade);
        let delivered = client.is_some_and(|c| c.push(frame));
        let counter = if delivered {
            &self.shared.stats.pushes_delivered
        } else {
            &self.shared.stats.pushes_dropped
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Most one closing per worker to bring the buffer budget back, per this long.
const RECLAIM_EVERY: Duration = Duration::from_millis(20);

/// Capacity of each worker's push inbox.
pub const PUSH_INBOX: usize = 4096;

/// A listener on this worker.
struct WorkerListener {
    slot: Rc<ListenerSlot>,
    accept: tokio::task::JoinHandle<()>,
}

/// Brings this worker's listeners in line with generation `g`.
fn apply(ctx: &Rc<WorkerCtx>, g: &Generation, listeners: &mut HashMap<String, WorkerListener>) {
    let mut keep = Vec::new();
    for (i, cfg) in g.config.listeners.iter().enumerate() {
        keep.push(cfg.name.clone());
        let cluster = g.clusters[cfg.cluster].clone();
        let seed = ((ctx.id as u64) << 32) ^ (i as u64) ^ (g.number << 16) ^ 0x5157_4954_4348;
        let picker = RefCell::new(Picker::new(
            cluster.config.policy,
            cluster.backends.len(),
            seed,
        ));
        let error_reply = cfg.error_reply.as_ref().and_then(|spec| match spec.build() {
            Ok(r) => Some(Rc::new(r)),
            Err(e) => {
                tracing::error!(listener = %cfg.name, "failed requests will close their clients: cannot load the error answer: {e}");
                None
            }
        });
        let socket = g.sockets[i].as_ref().and_then(|m| {
            m.lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(ctx.id)
                .and_then(Option::take)
        });
        match (listeners.get(&cfg.name), socket) {
            (Some(wl), None) => {
                // Same socket: swap in the new context; connections follow it.
                let old = wl.slot.current();
                let pool =
                    if old.same_protocol(cfg) && old.cluster.config.name == cluster.config.name {
                        old.pool.reconcile(&cluster, ctx);
                        old.pool.clone()
                    } else {
                        Rc::new(Pool::start(cfg, &cluster, ctx))
                    };
                wl.slot.replace(Rc::new(ListenerCtx {
                    config: cfg.clone(),
                    cluster,
                    pool,
                    picker,
                    error_reply,
                    worker: ctx.clone(),
                }));
            }
            (_, Some(sock)) => {
                if let Some(old) = listeners.remove(&cfg.name) {
                    old.accept.abort();
                }
                let lctx = Rc::new(ListenerCtx {
                    config: cfg.clone(),
                    pool: Rc::new(Pool::start(cfg, &cluster, ctx)),
                    cluster,
                    picker,
                    error_reply,
                    worker: ctx.clone(),
                });
                let slot = Rc::new(ListenerSlot::new(lctx, ctx.shared.conn_count(&cfg.name)));
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
pub async fn run(
    id: usize,
    shared: Arc<Shared>,
    mut generations: watch::Receiver<Arc<Generation>>,
    mut shutdown: watch::Receiver<bool>,
    mut inbox: mpsc::Receiver<Push>,
) {
    let ctx = Rc::new(WorkerCtx::new(id, shared.clone(), shutdown.clone()));
    let mut listeners = HashMap::new();
    let first = generations.borrow_and_update().clone();
    apply(&ctx, &first, &mut listeners);
    let mut shutdown_timeout = first.config.shutdown_timeout;
    // Suppressed log lines no later line reported: summed up once a second.
    tokio::task::spawn_local(async {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            every.tick().await;
            crate::throttle::flush();
        }
    });
    let inbox_ctx = ctx.clone();
    tokio::task::spawn_local(async move {
        while let Some(p) = inbox.recv().await {
            inbox_ctx.deliver_push(p.owner, &p.frame);
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
                apply(&ctx, &g, &mut listeners);
                shutdown_timeout = g.config.shutdown_timeout;
                ctx.shared.budget.set_limit(g.config.buffer_budget);
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
    while ctx.client_count() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = ctx.client_count();
    if left > 0 {
        tracing::warn!(
            worker = id,
            clients = left,
            "shutdown deadline reached; closing remaining clients"
        );
    }
}
