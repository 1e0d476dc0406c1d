//! One worker's pool of shared connections to one cluster's backends, for one listener
//! (the listener fixes the protocol and the correlation mode spoken on them).

use super::conn::{self, UpConn};
use crate::balancer::Cluster;
use crate::config::ListenerConfig;
use crate::worker::WorkerCtx;
use std::rc::Rc;
use std::sync::Arc;

/// `connections_per_backend` connections to each backend of a cluster.
#[derive(Debug)]
pub struct Pool {
    conns: Vec<Vec<Rc<UpConn>>>,
}

/// Where a message can go.
pub enum PoolTarget<'a> {
    /// This connection takes it.
    Conn(&'a Rc<UpConn>),
    /// The backend's connections are up but full; wait for capacity.
    Full,
    /// The backend cannot take messages now.
    Down,
}

impl Pool {
    /// Creates the pool and spawns its connection tasks on the current `LocalSet`.
    pub fn start(
        listener: &ListenerConfig,
        cluster: &Arc<Cluster>,
        worker: &Rc<WorkerCtx>,
    ) -> Self {
        let pool_cfg = cluster.config.pool;
        let conns = cluster
            .backends
            .iter()
            .enumerate()
            .map(|(i, backend)| {
                (0..pool_cfg.connections_per_backend)
                    .map(|n| {
                        let c = Rc::new(UpConn::new(i, n, backend.clone(), listener, &pool_cfg));
                        tokio::task::spawn_local(conn::run(
                            c.clone(),
                            listener.clone(),
                            cluster.clone(),
                            worker.clone(),
                        ));
                        c
                    })
                    .collect()
            })
            .collect();
        Pool { conns }
    }

    /// The connection of backend `b` that should take the next message: the usable one
    /// with the fewest queued bytes.
    pub fn target(&self, b: usize) -> PoolTarget<'_> {
        let mut full = false;
        let mut best: Option<&Rc<UpConn>> = None;
        for c in &self.conns[b] {
            if !c.accepts_messages() {
                continue;
            }
            if !c.has_room() {
                full = true;
                continue;
            }
            if best.is_none_or(|x| c.queued() < x.queued()) {
                best = Some(c);
            }
        }
        match best {
            Some(c) => PoolTarget::Conn(c),
            None if full => PoolTarget::Full,
            None => PoolTarget::Down,
        }
    }

    /// Whether backend `b` can take a message now.
    pub fn usable(&self, b: usize) -> bool {
        matches!(self.target(b), PoolTarget::Conn(_))
    }

    /// Whether some backend is up but momentarily full (so waiting makes sense).
    pub fn any_full(&self) -> bool {
        (0..self.conns.len()).any(|b| matches!(self.target(b), PoolTarget::Full))
    }
}
