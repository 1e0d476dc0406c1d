//! The balancer: a cluster's backends with their live load, and the choice of one backend per
//! message. A message with a session key goes where its key is pinned if that backend is
//! usable; otherwise (and for keyless messages) the cluster's policy picks from live load,
//! and the key is pinned to the pick. The balancer owns no connections: "usable" is a
//! question the caller (the worker's upstream pool) answers.

mod backend;
mod policy;

pub use backend::Backend;
pub use policy::Picker;

use crate::config::ClusterConfig;
use crate::session::{PinOutcome, SessionTable};
use std::sync::Arc;

/// A cluster, shared by every worker.
#[derive(Debug)]
pub struct Cluster {
    /// Its config.
    pub config: ClusterConfig,
    /// Backends, in config order; indices are stable for the life of the cluster.
    pub backends: Vec<Arc<Backend>>,
    /// Key pins, when the cluster has persistence.
    pub sessions: Option<SessionTable>,
}

impl Cluster {
    /// A cluster with fresh load state and an empty session table.
    pub fn new(config: ClusterConfig) -> Self {
        let backends = config
            .backends
            .iter()
            .map(|b| Arc::new(Backend::new(b)))
            .collect();
        let sessions = config
            .persistence
            .map(|p| SessionTable::new(p.ttl, p.max_entries));
        Cluster {
            config,
            backends,
            sessions,
        }
    }

    /// Chooses the backend for one message. `key` is the hashed session key, if the message
    /// has one; `owner` the global id of the sending client connection.
    pub fn route(
        &self,
        key: Option<u64>,
        owner: u64,
        picker: &mut Picker,
        usable: &dyn Fn(usize) -> bool,
    ) -> PinOutcome {
        match (key, &self.sessions) {
            (Some(k), Some(table)) => table.route(
                k,
                owner,
                |b| usable(b as usize),
                || picker.pick(&self.backends, usable).map(|b| b as u32),
            ),
            _ => match picker.pick(&self.backends, usable) {
                Some(b) => PinOutcome::New(b as u32),
                None => PinOutcome::Unavailable,
            },
        }
    }
}
