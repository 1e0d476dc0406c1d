//! A cluster as the backend side sees it: the core's cluster and the proxy's settings for
//! its connections.

use crate::config::ClusterConfig;
use std::sync::Arc;
use switchyard_core::Cluster;

/// A cluster as the backend side connects to it: where messages go (the core's cluster,
/// shared by every worker) and how its connections behave (the proxy's settings).
#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    /// Backends, their load and health, the session store.
    pub(crate) cluster: Arc<Cluster>,
    /// Pool, timeouts, retry, handshake settings.
    pub(crate) config: Arc<ClusterConfig>,
}
