//! One worker's pool of shared connections to one cluster's backends, for one listener
//! protocol (the listener fixes the codec and the correlation mode spoken on them). On a
//! config reload the pool is reconciled with the new cluster: connections to backends that
//! stay are kept (with everything in flight on them), new backends get connections, and
//! connections to removed backends are retired: they take no new messages and close once
//! their last answer is in.

use super::conn::BackendConn;
use super::task;
use super::upstream::Upstream;
use crate::config::ListenerConfig;
use crate::registry::Registry;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use switchyard_core::{Backend, Reach};
use switchyard_proto::Correlation;

/// `connections_per_backend` connections to each backend of a cluster, in the cluster's
/// backend order.
#[derive(Debug)]
pub(crate) struct Pool {
    listener: ListenerConfig,
    conns: RefCell<Vec<Vec<Rc<BackendConn>>>>,
}

/// Where a message can go.
pub(crate) enum PoolTarget {
    /// This connection takes it.
    Conn(Rc<BackendConn>),
    /// The backend's connections are up but full; wait for capacity.
    Full,
    /// The backend cannot take messages now.
    Down,
}

impl Pool {
    /// Creates the pool and spawns its connection tasks on the current `LocalSet`.
    pub(crate) fn start(
        listener: &ListenerConfig,
        upstream: &Upstream,
        registry: &Rc<Registry>,
    ) -> Self {
        let pool = Pool {
            listener: listener.clone(),
            conns: RefCell::new(Vec::new()),
        };
        pool.reconcile(upstream, registry);
        pool
    }

    fn spawn(
        &self,
        backend: &Arc<Backend>,
        slot: usize,
        upstream: &Upstream,
        registry: &Rc<Registry>,
    ) -> Rc<BackendConn> {
        let protocols = &self.listener.protocols;
        let ids = protocols.requests.capabilities();
        let c = Rc::new(BackendConn::new(
            backend.clone(),
            slot,
            (
                protocols.correlation,
                protocols.requests.error_answer_needs_request(),
            ),
            (
                ids.id_format,
                switchyard_proto::id_space(ids.id_format, ids.id_width),
            ),
            upstream.clone(),
            registry.shared.metrics.backend(
                registry.id,
                &upstream.cluster.settings.name,
                &backend.name,
            ),
        ));
        tokio::task::spawn_local(task::run(
            c.clone(),
            protocols.clone(),
            self.listener.limits.max_frame_size,
            registry.clone(),
        ));
        c
    }

    /// Brings the pool in line with `upstream` (a reload): keeps connections to backends
    /// that stay, opens connections to new ones, retires the rest.
    pub(crate) fn reconcile(&self, upstream: &Upstream, registry: &Rc<Registry>) {
        let cluster = &upstream.cluster;
        let per_backend = upstream.config.pool.connections_per_backend;
        let mut old: Vec<Vec<Rc<BackendConn>>> = std::mem::take(&mut *self.conns.borrow_mut());
        let mut next = Vec::with_capacity(cluster.backends.len());
        for backend in &cluster.backends {
            let mut kept: Vec<Rc<BackendConn>> = old
                .iter_mut()
                .find(|v| v.first().is_some_and(|c| Arc::ptr_eq(&c.backend, backend)))
                .map(std::mem::take)
                .unwrap_or_default();
            for extra in kept.drain(per_backend.min(kept.len())..) {
                extra.retire();
            }
            for c in &kept {
                c.set_upstream(upstream.clone());
            }
            while kept.len() < per_backend {
                let slot = kept.len();
                kept.push(self.spawn(backend, slot, upstream, registry));
            }
            next.push(kept);
        }
        for gone in old.into_iter().flatten() {
            tracing::info!(backend = %gone.backend.name, "backend removed: retiring its connection after its last answer");
            gone.retire();
        }
        *self.conns.borrow_mut() = next;
    }

    /// Among backend `b`'s connections: the usable one with the fewest queued bytes, and
    /// whether some connection is up but full.
    fn choose(&self, b: usize) -> (Option<usize>, bool) {
        let conns = self.conns.borrow();
        let mut full = false;
        let mut best: Option<(usize, usize)> = None;
        for (i, c) in conns.get(b).into_iter().flatten().enumerate() {
            if !c.accepts_messages() {
                continue;
            }
            if !c.has_room() {
                full = true;
                continue;
            }
            let q = c.queued();
            if best.is_none_or(|(_, bq)| q < bq) {
                best = Some((i, q));
            }
        }
        (best.map(|(i, _)| i), full)
    }

    /// The connection of backend `b` that should take client `client`'s next message.
    ///
    /// Where answers come back in order (`in_order`, and one-way `none`), a client's
    /// messages to one backend all go over one connection, its own (by its id), so the
    /// backend sees them in the order the client sent them: a pipelined `SET k` then
    /// `GET k` must not race over two connections. Only when that connection is down do
    /// they move to the next one that takes messages. With `by_id` the client matches
    /// answers by id and the least loaded connection takes the message.
    pub(crate) fn target(&self, b: usize, client: u64) -> PoolTarget {
        if self.listener.correlation() == Correlation::ById {
            return match self.choose(b) {
                (Some(i), _) => PoolTarget::Conn(self.conns.borrow()[b][i].clone()),
                (None, true) => PoolTarget::Full,
                (None, false) => PoolTarget::Down,
            };
        }
        let conns = self.conns.borrow();
        let Some(conns) = conns.get(b).filter(|c| !c.is_empty()) else {
            return PoolTarget::Down;
        };
        let own = (client % conns.len() as u64) as usize;
        let taking = (0..conns.len())
            .map(|i| &conns[(own + i) % conns.len()])
            .find(|c| c.accepts_messages());
        match taking {
            Some(c) if c.has_room() => PoolTarget::Conn(c.clone()),
            Some(_) => PoolTarget::Full,
            None => PoolTarget::Down,
        }
    }

    /// Whether some connection to backend `b` takes messages (up, or on its first attempt),
    /// full or not.
    pub(crate) fn up(&self, b: usize) -> bool {
        self.conns
            .borrow()
            .get(b)
            .is_some_and(|conns| conns.iter().any(|c| c.accepts_messages()))
    }

    /// What this pool knows of each backend, for placing client `client`'s next message.
    pub(crate) fn reach(&self, client: u64) -> PoolReach<'_> {
        PoolReach { pool: self, client }
    }
}

/// A pool seen by one client: a backend is up if a connection to it takes messages, and
/// has room if the connection this client's next message would take has room.
pub(crate) struct PoolReach<'p> {
    pool: &'p Pool,
    client: u64,
}

impl Reach for PoolReach<'_> {
    fn up(&self, i: usize) -> bool {
        self.pool.up(i)
    }

    fn room(&self, i: usize) -> bool {
        matches!(self.pool.target(i, self.client), PoolTarget::Conn(_))
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for c in self.conns.get_mut().iter().flatten() {
            c.retire();
        }
    }
}
