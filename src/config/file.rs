//! The raw shape of the TOML file, exactly as written by the operator. Unknown keys are
//! errors, so a typo never silently falls back to a default. Nothing here is validated
//! beyond types; see [`super::model`].

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Worker threads; default: one per core.
    pub workers: Option<usize>,
    /// How long SIGTERM waits for in-flight messages, e.g. `"10s"`.
    pub shutdown_timeout: Option<String>,
    /// Bytes all clients' input buffers may hold together.
    pub buffer_budget: Option<u64>,
    /// `[[listener]]` tables.
    #[serde(default)]
    pub listener: Vec<RawListener>,
    /// `[[cluster]]` tables.
    #[serde(default)]
    pub cluster: Vec<RawCluster>,
}

/// One `[[listener]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: String,
    pub listen: String,
    pub cluster: String,
    pub correlation: Option<String>,
    pub codec: RawCodec,
    pub response_codec: Option<RawCodec>,
    pub max_frame_size: Option<u64>,
    pub max_buffered_bytes: Option<u64>,
    pub max_inflight_per_client: Option<u64>,
    pub max_reply_buffer: Option<u64>,
    pub max_connections: Option<u64>,
    pub client_idle_timeout: Option<String>,
    pub frame_timeout: Option<String>,
    pub password: Option<String>,
    pub error_reply: Option<String>,
    pub error_reply_hex: Option<String>,
}

/// A codec table: `kind` plus that kind's keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCodec {
    pub kind: String,
    // length_field
    pub length_offset: Option<u32>,
    pub length_width: Option<u32>,
    pub length_adjust: Option<i64>,
    pub endian: Option<String>,
    pub key: Option<RawField>,
    pub id: Option<RawField>,
    // delimiter
    pub delimiter: Option<String>,
    pub key_token: Option<usize>,
    pub id_token: Option<usize>,
    // lua
    pub script: Option<String>,
    pub time_limit: Option<String>,
    pub memory_limit: Option<u64>,
}

/// `{ offset = N, width = N }`.
#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct RawField {
    pub offset: u32,
    pub width: u32,
}

/// One `[[cluster]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub name: String,
    pub policy: Option<String>,
    #[serde(default)]
    pub backends: Vec<RawBackend>,
    pub persistence: Option<RawPersistence>,
    pub pool: Option<RawPool>,
    pub request_timeout: Option<String>,
    pub retry_on_connect_failure: Option<bool>,
    pub on_backend_down: Option<String>,
    pub health: Option<RawHealth>,
    pub outlier: Option<RawOutlier>,
    pub backend_password: Option<String>,
    pub backend_db: Option<u32>,
    pub hash_tag: Option<String>,
}

/// `[cluster.health]`: active probes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
    pub send: Option<String>,
    pub send_hex: Option<String>,
    pub expect: Option<String>,
    pub expect_hex: Option<String>,
    pub expect_regex: Option<String>,
}

/// `[cluster.outlier]`: passive ejection.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutlier {
    pub consecutive_failures: Option<u32>,
    pub base_ejection: Option<String>,
    pub max_ejection: Option<String>,
    pub max_ejected_percent: Option<u32>,
}

/// One backend entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub address: String,
    pub weight: Option<u32>,
    pub name: Option<String>,
    pub drain: Option<bool>,
}

/// `[cluster.persistence]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPersistence {
    pub store: Option<String>,
    pub ttl: Option<String>,
    pub max_entries: Option<u64>,
}

/// `[cluster.pool]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub connections_per_backend: Option<usize>,
    pub connect_timeout: Option<String>,
    pub max_queued_bytes: Option<u64>,
    pub reconnect_backoff_min: Option<String>,
    pub reconnect_backoff_max: Option<String>,
}
