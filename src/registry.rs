//! The per-worker registry: the client connections of one worker as the backend side may
//! reach them (by global id, for pushes), the batch of clients to write to at the end of a
//! backend read, the wake-up for clients waiting on backend room, and what every worker of
//! the process shares ([`Shared`]: the push inboxes between workers, counters, the buffer
//! budget). Both halves of the proxy stand on it; it knows a client only as a
//! [`Registered`] handle.

use crate::access_log::AccessLog;
use crate::budget::Budget;
use crate::metrics::{Hub, WorkerCounters};
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard_core::{ClientFault, Cluster, ReplySink};
use tokio::sync::{mpsc, watch, Notify};

/// Bits of a client's global id that hold the per-worker counter.
const GID_WORKER_SHIFT: u32 = 40;

/// A client connection's global id as logs and the admin API show it: `w<worker>#<n>`,
/// the worker that owns it and its number there.
pub(crate) fn conn_name(gid: u64) -> String {
    format!(
        "w{}#{}",
        gid >> GID_WORKER_SHIFT,
        gid & ((1 << GID_WORKER_SHIFT) - 1)
    )
}

/// Capacity of each worker's push inbox.
pub(crate) const PUSH_INBOX: usize = 4096;

/// Most one closing per worker to bring the buffer budget back, per this long.
const RECLAIM_EVERY: Duration = Duration::from_millis(20);

/// A backend message for a client connection owned by another worker.
#[derive(Debug)]
pub(crate) struct Push {
    /// Global id of the client connection.
    pub(crate) owner: u64,
    /// The message bytes.
    pub(crate) frame: Bytes,
}

/// What all workers share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Each worker's push inbox.
    pub(crate) push_tx: Vec<mpsc::Sender<Push>>,
    /// Every worker's counters, for scrapes.
    pub(crate) metrics: Hub,
    /// The sampled access log (off unless configured).
    pub(crate) access: Arc<AccessLog>,
    /// Open client connections per listener name, across workers and reloads.
    pub(crate) conn_counts: Mutex<HashMap<String, Arc<AtomicUsize>>>,
    /// Bytes all clients' input buffers hold, against `buffer_budget`.
    pub(crate) budget: Budget,
}

impl Shared {
    /// Shared state for workers with these push inboxes and a buffer budget of `budget`.
    pub(crate) fn new(
        push_tx: Vec<mpsc::Sender<Push>>,
        budget: usize,
        access: Arc<AccessLog>,
    ) -> Self {
        Shared {
            metrics: Hub::new(push_tx.len()),
            access,
            push_tx,
            conn_counts: Mutex::new(HashMap::new()),
            budget: Budget::new(budget),
        }
    }

    /// The connection counter of listener `name`.
    pub(crate) fn conn_count(&self, name: &str) -> Arc<AtomicUsize> {
        let mut m = self.conn_counts.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(name.to_string()).or_default().clone()
    }
}

/// A client connection as the registry holds it: what the backend side reaches it by,
/// and what the buffer budget needs of it.
pub(crate) trait Registered: ReplySink {
    /// Bytes of its input that are not yet a whole frame.
    fn partial_bytes(&self) -> usize;
    /// Closes it for `fault`.
    fn close_for(&self, fault: ClientFault);
}

/// One worker's registry.
pub(crate) struct Registry {
    /// Worker index.
    pub(crate) id: usize,
    /// Process-wide state.
    pub(crate) shared: Arc<Shared>,
    /// Becomes `true` when the process is shutting down.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Signalled when a backend connection has room again (or went up or down).
    pub(crate) capacity: Notify,
    /// This worker's own counters.
    pub(crate) counters: Arc<WorkerCounters>,
    clients: RefCell<HashMap<u64, Weak<dyn Registered>>>,
    next_conn: Cell<u64>,
    /// Clients given answers in the current batch, to flush at its end.
    to_flush: RefCell<Vec<Rc<dyn ReplySink>>>,
    /// When this worker last closed a client to bring the buffer budget back.
    last_reclaim: Cell<Option<Instant>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("id", &self.id)
            .field("clients", &self.clients.borrow().len())
            .finish()
    }
}

impl Registry {
    /// Worker `id`'s registry, sharing `shared`.
    pub(crate) fn new(id: usize, shared: Arc<Shared>, shutdown: watch::Receiver<bool>) -> Self {
        Registry {
            id,
            counters: shared.metrics.worker(id),
            shared,
            shutdown,
            capacity: Notify::new(),
            clients: RefCell::new(HashMap::new()),
            next_conn: Cell::new(0),
            to_flush: RefCell::new(Vec::new()),
            last_reclaim: Cell::new(None),
        }
    }

    /// A new global client connection id: this worker's index in the top bits.
    pub(crate) fn next_gid(&self) -> u64 {
        let n = self.next_conn.get() + 1;
        self.next_conn.set(n);
        ((self.id as u64) << GID_WORKER_SHIFT) | (n & ((1 << GID_WORKER_SHIFT) - 1))
    }

    /// Makes a client reachable for pushes.
    pub(crate) fn register(&self, gid: u64, client: Weak<dyn Registered>) {
        self.counters.clients.inc();
        self.clients.borrow_mut().insert(gid, client);
    }

    /// Forgets a closed client.
    pub(crate) fn unregister(&self, gid: u64) {
        if self.clients.borrow_mut().remove(&gid).is_some() {
            self.counters.clients.dec();
        }
    }

    /// Open client connections on this worker.
    pub(crate) fn client_count(&self) -> usize {
        self.clients.borrow().len()
    }

    /// Queues `client`'s answers to be written at the end of the current batch.
    pub(crate) fn defer_flush(&self, client: &Rc<dyn ReplySink>) {
        if client.queue_flush() {
            self.to_flush.borrow_mut().push(client.clone());
        }
    }

    /// Writes the answers of every client queued since the last call: one write per client
    /// per batch of backend answers.
    pub(crate) fn flush_clients(&self) {
        let mut list = std::mem::take(&mut *self.to_flush.borrow_mut());
        for c in list.drain(..) {
            c.flush_queued();
        }
        let mut slot = self.to_flush.borrow_mut();
        if slot.is_empty() {
            *slot = list; // keep the allocation
        }
    }

    /// Routes a backend message that answers nothing to the client owning its session:
    /// `key` is its session key in `cluster`'s store, if it has one.
    pub(crate) fn route_push(&self, cluster: &Cluster, key: Option<u64>, frame: &[u8]) {
        let stats = &self.counters;
        let owner = key.and_then(|k| cluster.sessions.as_ref().and_then(|t| t.owner_of(k)));
        let Some(owner) = owner else {
            stats.pushes_dropped.inc();
            let why = if key.is_some() {
                "no live session owns its key"
            } else {
                "it has no session key"
            };
            if let Some(suppressed) = crate::throttle::admit(&[&cluster.settings.name, why]) {
                tracing::warn!(cluster = %cluster.settings.name, suppressed, "dropping a message a backend sent unasked: {why}");
            }
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
                stats.pushes_dropped.inc();
                if let Some(suppressed) = crate::throttle::admit(&["push inbox full"]) {
                    tracing::warn!(worker, suppressed, "dropping a message a backend sent unasked: the owner's worker's push inbox is full");
                }
            }
        }
    }

    /// Hands a push to the client `owner` of this worker, if it is still open.
    pub(crate) fn deliver_push(&self, owner: u64, frame: &[u8]) {
        let client = self.clients.borrow().get(&owner).and_then(Weak::upgrade);
        let delivered = client.is_some_and(|c| c.push(frame));
        let counter = if delivered {
            &self.counters.pushes_delivered
        } else {
            &self.counters.pushes_dropped
        };
        counter.inc();
    }

    /// The buffer budget is spent and a client of this worker needs room: closes this
    /// worker's client holding the most partial-frame bytes (at most one every 20 ms, so
    /// that the room it frees is seen before another is closed). Complete requests already
    /// sent are not what is counted, so clients waiting on answers are left alone.
    pub(crate) fn reclaim(&self) {
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
        self.counters.budget_closes.inc();
        victim.close_for(ClientFault::OverBudget {
            held: budget.held(),
            limit: budget.limit(),
            partial: victim.partial_bytes(),
        });
    }
}
