//! What a client task of one listener needs on its worker, for one config generation
//! ([`ListenerCtx`]), and the slot that holds the current one across reloads
//! ([`ListenerSlot`]).

use crate::backend::{Pool, Upstream};
use crate::config::ListenerConfig;
use crate::metrics::ListenerCounters;
use crate::registry::Registry;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use switchyard_core::balance::Policy;
use switchyard_core::Cluster;

/// Everything a client task of one listener needs, per worker, for one config generation.
pub(crate) struct ListenerCtx {
    /// The listener's config (its protocols and client bounds).
    pub(crate) config: ListenerConfig,
    /// The cluster it balances over, and its connection settings.
    pub(crate) upstream: Upstream,
    /// This worker's connections to that cluster's backends.
    pub(crate) pool: Rc<Pool>,
    /// This worker's policy state for the cluster.
    pub(crate) picker: RefCell<Box<dyn Policy>>,
    /// The worker's clients, pushes and flush batch.
    pub(crate) registry: Rc<Registry>,
    /// The listener's counters on this worker (the same block across reloads).
    pub(crate) counters: Arc<ListenerCounters>,
    /// The listener's name, for access log records.
    pub(crate) name: Arc<str>,
    /// The access log follows one request in this many (0: it is off).
    pub(crate) sample_every: u32,
    /// Requests until the next one the access log follows.
    pub(crate) sample_in: Cell<u32>,
}

impl std::fmt::Debug for ListenerCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerCtx")
            .field("listener", &self.config.name)
            .field("cluster", &self.cluster().settings.name)
            .finish()
    }
}

impl ListenerCtx {
    /// Whether the access log follows this request: one in `every` (the log's rate).
    #[inline]
    pub(crate) fn sample_now(&self) -> bool {
        let every = self.sample_every;
        if every == 0 {
            return false;
        }
        let n = self.sample_in.get();
        if n > 1 {
            self.sample_in.set(n - 1);
            return false;
        }
        self.sample_in.set(every);
        true
    }

    /// The cluster.
    pub(crate) fn cluster(&self) -> &Cluster {
        &self.upstream.cluster
    }

    /// Whether connections of `other` speak the same protocol, so a connection accepted
    /// under one can be served under the other.
    pub(crate) fn same_protocol(&self, other: &ListenerConfig) -> bool {
        self.config.same_protocol(other)
    }
}

/// A listener's current context on one worker; replaced on reload. Client connections
/// follow the current context unless its protocol changed under them.
#[derive(Debug)]
pub(crate) struct ListenerSlot {
    current: RefCell<Rc<ListenerCtx>>,
    /// Open client connections of this listener on every worker.
    pub(crate) active: Arc<AtomicUsize>,
    /// Handshakes (PROXY header, TLS) in progress on this worker.
    handshakes: Rc<Cell<usize>>,
}

/// One handshake in progress, counted until dropped.
pub(crate) struct Handshake(Rc<Cell<usize>>);

impl Drop for Handshake {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

impl ListenerSlot {
    /// A slot holding `ctx`.
    pub(crate) fn new(ctx: Rc<ListenerCtx>, active: Arc<AtomicUsize>) -> Self {
        ListenerSlot {
            current: RefCell::new(ctx),
            active,
            handshakes: Rc::default(),
        }
    }

    /// Counts a handshake in, if fewer than `max` are in progress.
    pub(crate) fn begin_handshake(&self, max: usize) -> Option<Handshake> {
        let n = self.handshakes.get();
        (n < max).then(|| {
            self.handshakes.set(n + 1);
            Handshake(self.handshakes.clone())
        })
    }

    /// The current context.
    pub(crate) fn current(&self) -> Rc<ListenerCtx> {
        self.current.borrow().clone()
    }

    /// Installs a reloaded context.
    pub(crate) fn replace(&self, ctx: Rc<ListenerCtx>) {
        *self.current.borrow_mut() = ctx;
    }

    /// The context a connection accepted under `own` follows now: the current one, unless
    /// the protocol changed under the connection.
    pub(crate) fn follow(&self, own: &Rc<ListenerCtx>) -> Rc<ListenerCtx> {
        let current = self.current();
        if Rc::ptr_eq(&current, own) || current.same_protocol(&own.config) {
            current
        } else {
            own.clone()
        }
    }
}
