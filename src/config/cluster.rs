//! The `[[cluster]]` section: backends, the policy, pins, the connection pool, timeouts and
//! what new backend connections are told. The balancing part becomes the core's
//! [`BalanceSettings`]; the rest stays with the proxy.

use super::health::{validate_health, validate_outlier, HealthConfig, RawHealth, RawOutlier};
use super::values::{duration, nonzero_duration, resolve, size, Invalid};
use serde::Deserialize;
use std::time::Duration;
use switchyard_core::settings::{
    BackendSettings, BalanceSettings, OnBackendDown, Persistence, PolicyKind,
};
use switchyard_proto::proxy_header::ProxyVersion;
use switchyard_proto::BackendSetup;

/// One `[[cluster]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCluster {
    name: String,
    policy: Option<String>,
    #[serde(default)]
    backends: Vec<RawBackend>,
    persistence: Option<RawPersistence>,
    pool: Option<RawPool>,
    request_timeout: Option<String>,
    provisional_timeout: Option<String>,
    retry_on_connect_failure: Option<bool>,
    on_backend_down: Option<String>,
    health: Option<RawHealth>,
    outlier: Option<RawOutlier>,
    backend_password: Option<String>,
    backend_db: Option<u32>,
    hash_tag: Option<String>,
    tls: Option<super::tls::RawClusterTls>,
    proxy_protocol: Option<String>,
}

/// One backend entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackend {
    address: String,
    weight: Option<u32>,
    name: Option<String>,
    drain: Option<bool>,
}

/// `[cluster.persistence]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPersistence {
    store: Option<String>,
    ttl: Option<String>,
    max_entries: Option<u64>,
}

/// `[cluster.pool]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPool {
    connections_per_backend: Option<usize>,
    connect_timeout: Option<String>,
    max_queued_bytes: Option<u64>,
    reconnect_backoff_min: Option<String>,
    reconnect_backoff_max: Option<String>,
    quick_ack: Option<String>,
}

/// Per-worker backend connection pool settings.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Shared connections each worker keeps to each backend.
    pub connections_per_backend: usize,
    /// Time allowed for a TCP connect.
    pub connect_timeout: Duration,
    /// Request bytes queued on one backend connection before it takes no more.
    pub max_queued_bytes: usize,
    /// First reconnect delay after a failure.
    pub reconnect_backoff_min: Duration,
    /// Largest reconnect delay.
    pub reconnect_backoff_max: Duration,
    /// When reads of answers are ACKed at once (`TCP_QUICKACK`) while more are due.
    pub quick_ack: QuickAck,
}

/// `pool.quick_ack`: when a backend connection ACKs each read of answers at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuickAck {
    /// From the first time answers stall about a delayed ACK's time (the server holds them
    /// for our ACK: Nagle's algorithm on its side), for the rest of the connection's life.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// One `[[cluster]]`, validated.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Where its messages go: backends, policy, pins, ejection.
    pub balance: BalanceSettings,
    /// Connection pool settings.
    pub pool: PoolConfig,
    /// An answer not received this long after its request was queued fails the request.
    pub request_timeout: Duration,
    /// After a provisional answer, the final one may take this long (from the last
    /// provisional answer) before the request fails.
    pub provisional_timeout: Duration,
    /// A message never written to a backend whose connection failed is routed again.
    pub retry_on_connect_failure: bool,
    /// Active health checks, if configured.
    pub health: Option<HealthConfig>,
    /// What every new backend connection is told first (`resp`: AUTH, SELECT).
    pub backend_setup: BackendSetup,
    /// TLS to the backends.
    pub tls: Option<super::tls::BackendTls>,
    /// A PROXY protocol header written first on every backend connection.
    pub proxy_protocol: Option<ProxyVersion>,
}

impl ClusterConfig {
    /// How its backend connections start.
    pub(crate) fn outbound(&self) -> crate::transport::Outbound {
        crate::transport::Outbound {
            proxy_protocol: self.proxy_protocol,
            tls: self
                .tls
                .as_ref()
                .map(|t| (t.config.clone(), t.server_name.clone())),
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.balance.name
    }
}

pub(crate) fn validate(
    i: usize,
    c: RawCluster,
    base: &std::path::Path,
) -> Result<ClusterConfig, Invalid> {
    let label = if c.name.is_empty() {
        format!("cluster[{i}]")
    } else {
        format!("cluster.{}", c.name)
    };
    let key = |k: &str| format!("{label}.{k}");
    if c.name.is_empty() {
        return Err((key("name"), "must not be empty".into()));
    }
    let policy = match c.policy.as_deref() {
        None => PolicyKind::LeastOutstanding,
        Some(p) => PolicyKind::parse(p).ok_or_else(|| {
            (
                key("policy"),
                format!(
                    "unknown policy `{p}`, expected one of {}",
                    PolicyKind::NAMES
                ),
            )
        })?,
    };
    if c.backends.is_empty() {
        return Err((key("backends"), "at least one backend is required".into()));
    }
    let mut backends = Vec::new();
    for (j, b) in c.backends.into_iter().enumerate() {
        let bkey = |k: &str| key(&format!("backends[{j}].{k}"));
        let address = resolve(&b.address).map_err(|p| (bkey("address"), p))?;
        let weight = b.weight.unwrap_or(1);
        if weight == 0 || weight > 10_000 {
            return Err((bkey("weight"), format!("must be 1 to 10000, got {weight}")));
        }
        let name = b.name.unwrap_or_else(|| b.address.clone());
        if backends.iter().any(|x: &BackendSettings| x.name == name) {
            return Err((bkey("name"), format!("backend `{name}` is listed twice")));
        }
        backends.push(BackendSettings {
            name,
            address,
            weight,
            drain: b.drain.unwrap_or(false),
        });
    }
    let persistence = match c.persistence {
        None => None,
        Some(p) => {
            match p.store.as_deref() {
                None | Some("memory") => {}
                Some(o) => {
                    return Err((
                        key("persistence.store"),
                        format!("unknown store `{o}`, expected `memory`"),
                    ))
                }
            }
            let ttl = duration(
                &key("persistence.ttl"),
                p.ttl.as_ref(),
                Duration::from_secs(600),
            )?;
            if ttl.is_zero() {
                return Err((key("persistence.ttl"), "must be longer than 0s".into()));
            }
            Some(Persistence {
                ttl,
                max_entries: size(&key("persistence.max_entries"), p.max_entries, 1_000_000, 1)?,
            })
        }
    };
    if policy == PolicyKind::LeastSessions && persistence.is_none() {
        return Err((
            key("policy"),
            "least_sessions counts each backend's pinned sessions: it needs [cluster.persistence]"
                .into(),
        ));
    }
    let raw_pool = c.pool.unwrap_or_default();
    let connections_per_backend = raw_pool.connections_per_backend.unwrap_or(2);
    if !(1..=64).contains(&connections_per_backend) {
        return Err((
            key("pool.connections_per_backend"),
            format!("must be 1 to 64, got {connections_per_backend}"),
        ));
    }
    let pool = PoolConfig {
        connections_per_backend,
        connect_timeout: duration(
            &key("pool.connect_timeout"),
            raw_pool.connect_timeout.as_ref(),
            Duration::from_secs(2),
        )?,
        max_queued_bytes: size(
            &key("pool.max_queued_bytes"),
            raw_pool.max_queued_bytes,
            8 << 20,
            1024,
        )?,
        reconnect_backoff_min: duration(
            &key("pool.reconnect_backoff_min"),
            raw_pool.reconnect_backoff_min.as_ref(),
            Duration::from_millis(100),
        )?,
        reconnect_backoff_max: duration(
            &key("pool.reconnect_backoff_max"),
            raw_pool.reconnect_backoff_max.as_ref(),
            Duration::from_secs(5),
        )?,
        quick_ack: match raw_pool.quick_ack.as_deref() {
            None | Some("auto") => QuickAck::Auto,
            Some("always") => QuickAck::Always,
            Some("never") => QuickAck::Never,
            Some(o) => {
                return Err((
                    key("pool.quick_ack"),
                    format!("must be `auto`, `always` or `never`, got `{o}`"),
                ))
            }
        },
    };
    if pool.reconnect_backoff_max < pool.reconnect_backoff_min {
        return Err((
            key("pool.reconnect_backoff_max"),
            "must not be shorter than reconnect_backoff_min".into(),
        ));
    }
    let on_backend_down = match c.on_backend_down.as_deref() {
        // Key-hashing clusters are caches and shards whose data lives on one server: fail
        // rather than read and write another, as twemproxy does by default
        // (`auto_eject_hosts: false`).
        None if policy.hashes_keys() => OnBackendDown::Fail,
        None | Some("repin") => OnBackendDown::Repin,
        Some("fail") => OnBackendDown::Fail,
        Some(o) => {
            return Err((
                key("on_backend_down"),
                format!("must be `repin` or `fail`, got `{o}`"),
            ))
        }
    };
    let hash_tag = match c.hash_tag.as_deref() {
        None => None,
        Some(t) => match t.as_bytes() {
            [open, close] if t.is_ascii() => Some([*open, *close]),
            _ => {
                return Err((
                    key("hash_tag"),
                    format!("must be two ASCII characters, such as \"{{}}\", got {t:?}"),
                ))
            }
        },
    };
    let tls = c
        .tls
        .map(|t| super::tls::cluster(&key("tls"), t, base))
        .transpose()?;
    let proxy_protocol = match c.proxy_protocol.as_deref() {
        None => None,
        Some("v1") => Some(ProxyVersion::V1),
        Some("v2") => Some(ProxyVersion::V2),
        Some(o) => {
            return Err((
                key("proxy_protocol"),
                format!("`{o}` must be \"v1\" or \"v2\""),
            ))
        }
    };
    Ok(ClusterConfig {
        tls,
        proxy_protocol,
        request_timeout: nonzero_duration(
            &key("request_timeout"),
            c.request_timeout.as_ref(),
            Duration::from_secs(30),
        )?,
        provisional_timeout: nonzero_duration(
            &key("provisional_timeout"),
            c.provisional_timeout.as_ref(),
            Duration::from_secs(180),
        )?,
        retry_on_connect_failure: c.retry_on_connect_failure.unwrap_or(true),
        health: c.health.map(|h| validate_health(&key, h)).transpose()?,
        backend_setup: BackendSetup {
            password: c.backend_password,
            db: c.backend_db,
        },
        pool,
        balance: BalanceSettings {
            name: c.name,
            policy,
            backends,
            persistence,
            on_backend_down,
            outlier: c.outlier.map(|o| validate_outlier(&key, o)).transpose()?,
            hash_tag,
        },
    })
}
