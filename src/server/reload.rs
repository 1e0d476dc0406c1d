//! Reloads: a new config becomes the running generation (listeners bound anew, clusters
//! evolved so that backends keep their state), and what it changed is logged and kept.

use super::{bind_new, Control, ServerError};
use crate::admin::ReloadReport;
use crate::backend::Upstream;
use crate::config::Config;
use crate::worker::Generation;
use std::net::SocketAddr;
use std::sync::Arc;
use switchyard_core::Cluster;

/// What an applied reload did.
#[derive(Debug, Clone)]
pub(super) struct Swapped {
    pub(super) generation: u64,
    pub(super) bound: Vec<(String, SocketAddr)>,
    changes: Vec<String>,
}

impl Control {
    pub(super) fn current(&self) -> Arc<Generation> {
        self.generation
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes `config` the running generation (see [`Running::reload`]).
    pub(super) fn swap(&self, mut config: Config) -> Result<Swapped, ServerError> {
        let mut guard = self.generation.lock().unwrap_or_else(|p| p.into_inner());
        let previous = guard.clone();
        if config.workers != previous.config.workers {
            tracing::warn!(
                running = previous.config.workers,
                configured = config.workers,
                "reload: the worker count changes only on restart; keeping the running count"
            );
            config.workers = previous.config.workers;
        }
        if config.admin != previous.config.admin {
            tracing::warn!("reload: the [admin] section changes only on restart; keeping the running admin listener");
            config.admin = previous.config.admin.clone();
        }
        let (addrs, sockets) = bind_new(&config, Some(&previous), false)?;
        let upstreams = config
            .clusters
            .iter()
            .map(|c| {
                let old = previous
                    .upstreams
                    .iter()
                    .find(|o| o.cluster.settings.name == c.name());
                Upstream {
                    cluster: Arc::new(Cluster::evolve(
                        c.balance.clone(),
                        old.map(|o| o.cluster.as_ref()),
                    )),
                    config: Arc::new(c.clone()),
                }
            })
            .collect();
        let bound = config
            .listeners
            .iter()
            .zip(&addrs)
            .zip(&sockets)
            .filter(|(_, s)| s.is_some())
            .map(|((l, a), _)| (l.name.clone(), *a))
            .collect();
        let changes = crate::config::changes(&previous.config, &config);
        let next = Arc::new(Generation {
            number: previous.number + 1,
            config,
            upstreams,
            addrs,
            sockets,
        });
        *guard = next.clone();
        let _ = self.generations.send(next.clone());
        Ok(Swapped {
            generation: next.number,
            bound,
            changes,
        })
    }

    /// Logs and keeps what a reload did.
    pub(super) fn report(
        &self,
        source: &'static str,
        result: Result<Swapped, String>,
    ) -> ReloadReport {
        let at_unix_ms = crate::admin::unix_ms();
        let report = match result {
            Ok(done) => {
                let summary = if done.changes.is_empty() {
                    "no changes".to_string()
                } else {
                    done.changes.join("; ")
                };
                tracing::info!(source, generation = done.generation, changes = %summary, "config reloaded");
                if let Some(announce) = &self.announce {
                    for (name, addr) in &done.bound {
                        announce(name, *addr);
                    }
                }
                ReloadReport {
                    at_unix_ms,
                    source,
                    applied: true,
                    generation: done.generation,
                    changes: done.changes,
                    summary,
                    error: None,
                    bound: done.bound,
                }
            }
            Err(e) => {
                tracing::error!(source, "reload refused, keeping the running config: {e}");
                ReloadReport {
                    at_unix_ms,
                    source,
                    applied: false,
                    generation: self.current().number,
                    changes: Vec::new(),
                    summary: "refused".into(),
                    error: Some(e),
                    bound: Vec::new(),
                }
            }
        };
        self.reloads.record(&report);
        report
    }

    /// Reads the config file again and applies it.
    pub(super) fn reload_file(&self, source: &'static str) -> ReloadReport {
        let result = match &self.config_file {
            None => Err("the server was started without a config file".to_string()),
            Some(path) => crate::config::load(path)
                .map_err(|e| e.to_string())
                .and_then(|c| self.swap(c).map_err(|e| e.to_string())),
        };
        self.report(source, result)
    }
}
