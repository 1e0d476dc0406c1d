//! Configuration: one TOML file, read with serde into each section's raw shape (unknown
//! keys refused, so a typo never silently becomes a default), then validated into the
//! immutable model the workers run from. Every error names the file, the key and what is
//! wrong. One file per section: [`listener`] (and its protocols, built by
//! `switchyard-proto`), [`cluster`] (its balancing settings become `switchyard-core`'s),
//! [`health`] (active probes and outlier ejection); [`values`] reads durations, sizes and
//! addresses.

mod admin;
mod cluster;
mod diff;
mod health;
mod listener;
mod tls;
mod values;

pub use admin::{AccessLogConfig, AdminConfig};
pub use cluster::{ClusterConfig, PoolConfig, QuickAck};
pub use diff::changes;
pub use health::{Expect, HealthConfig};
pub use listener::{ClientLimits, ListenerConfig};
pub use tls::{BackendTls, ListenerTls};

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use switchyard_proto::Correlation;
use values::{duration, size, Invalid};

/// The whole file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    workers: Option<usize>,
    shutdown_timeout: Option<String>,
    buffer_budget: Option<u64>,
    #[serde(default)]
    listener: Vec<listener::RawListener>,
    #[serde(default)]
    cluster: Vec<cluster::RawCluster>,
    admin: Option<admin::RawAdmin>,
}

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Worker threads (each a single-threaded runtime with its own listeners and pools).
    pub workers: usize,
    /// How long a graceful shutdown waits for in-flight messages.
    pub shutdown_timeout: Duration,
    /// Bytes all clients' input buffers may hold together (see [`crate::budget`]).
    pub buffer_budget: usize,
    /// Listeners, in file order.
    pub listeners: Vec<ListenerConfig>,
    /// Clusters, in file order.
    pub clusters: Vec<ClusterConfig>,
    /// The admin listener, if configured (changes apply on restart).
    pub admin: Option<AdminConfig>,
}

impl Config {
    /// What the configuration allows but an operator most likely does not want, each as
    /// `key: problem`: listeners whose backends' unasked messages (pushes) can never be
    /// delivered, because nothing pins their sessions or their answers carry no key.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for l in &self.listeners {
            let Some(c) = self.clusters.get(l.cluster) else {
                continue;
            };
            let pins = c.balance.persistence.is_some();
            let none = l.correlation() == Correlation::None;
            let name = &l.name;
            if none && !pins {
                out.push(format!(
                    "listener.{name}.correlation: with \"none\" every message a backend sends is a push, delivered to the client that owns its session; cluster {} has no [cluster.persistence], so there are no sessions and every one of them is dropped",
                    c.name()
                ));
            } else if !pins && l.correlation() == Correlation::ByIdAsSent {
                out.push(format!(
                    "listener.{name}.correlation: with \"by_id_as_sent\" what a backend sends unasked (its own requests, an answer no request awaits) goes to the client that owns its session; cluster {} has no [cluster.persistence], so all of it is dropped",
                    c.name()
                ));
            } else if pins && none && !l.protocols.answers.capabilities().keys {
                out.push(format!(
                    "listener.{name}.response_codec: with \"none\" every message a backend sends is a push, found by its session key, but the {} codec finds no key in backend messages: every one of them is dropped",
                    l.protocols.answers.kind()
                ));
            }
        }
        out
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The config file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape (the message names the key).
    #[error("{file}: {message}")]
    Parse {
        /// The config file.
        file: PathBuf,
        /// What the TOML parser said, with line and column.
        message: String,
    },
    /// A value is present but wrong.
    #[error("{file}: {key}: {problem}")]
    Invalid {
        /// The config file.
        file: PathBuf,
        /// Dotted path of the offending key, e.g. `listener.orders.codec.length_width`.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Validates config `text`; `path` is used in error messages.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
        file: path.to_path_buf(),
        message: e.to_string().trim_end().replace('\n', "\n    "),
    })?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    validate(raw, base).map_err(|(key, problem)| ConfigError::Invalid {
        file: path.to_path_buf(),
        key,
        problem,
    })
}

/// Validates the raw file; relative script paths are resolved against `base` (the config
/// file's folder).
fn validate(raw: RawConfig, base: &Path) -> Result<Config, Invalid> {
    let workers = match raw.workers {
        Some(0) => return Err(("workers".into(), "must be at least 1".into())),
        Some(n) if n > 1024 => return Err(("workers".into(), format!("{n} is too many"))),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let shutdown_timeout = duration(
        "shutdown_timeout",
        raw.shutdown_timeout.as_ref(),
        Duration::from_secs(10),
    )?;
    let buffer_budget = size(
        "buffer_budget",
        raw.buffer_budget,
        crate::budget::default_limit(),
        1 << 20,
    )?;
    if raw.listener.is_empty() {
        return Err((
            "listener".into(),
            "at least one [[listener]] is required".into(),
        ));
    }
    let mut clusters = Vec::new();
    for (i, c) in raw.cluster.into_iter().enumerate() {
        let cluster = cluster::validate(i, c, base)?;
        if clusters
            .iter()
            .any(|x: &ClusterConfig| x.name() == cluster.name())
        {
            return Err((
                format!("cluster.{}.name", cluster.name()),
                "another cluster has this name".into(),
            ));
        }
        clusters.push(cluster);
    }
    let mut listeners = Vec::new();
    for (i, l) in raw.listener.into_iter().enumerate() {
        let listener = listener::validate(i, l, &clusters, base)?;
        if listeners
            .iter()
            .any(|x: &ListenerConfig| x.name == listener.name)
        {
            return Err((
                format!("listener.{}.name", listener.name),
                "another listener has this name".into(),
            ));
        }
        if listener.listen.port() != 0
            && listeners
                .iter()
                .any(|x: &ListenerConfig| x.listen == listener.listen)
        {
            return Err((
                format!("listener.{}.listen", listener.name),
                format!("{} is already used by another listener", listener.listen),
            ));
        }
        listeners.push(listener);
    }
    let admin = raw.admin.map(|a| admin::validate(a, base)).transpose()?;
    Ok(Config {
        workers,
        shutdown_timeout,
        buffer_budget,
        listeners,
        clusters,
        admin,
    })
}

#[cfg(test)]
mod tests;
