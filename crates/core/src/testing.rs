//! Test clusters written as the config file writes them: a `[cluster]` table's policy,
//! backends and extra keys, read with serde into [`BalanceSettings`].

use crate::balance::Cluster;
use crate::settings::{
    BackendSettings, BalanceSettings, OnBackendDown, OutlierSettings, Persistence, PolicyKind,
};
use std::time::Duration;

#[derive(serde::Deserialize)]
struct Raw {
    policy: String,
    backends: Vec<RawBackend>,
    on_backend_down: Option<String>,
    hash_tag: Option<String>,
    persistence: Option<RawPersistence>,
    outlier: Option<RawOutlier>,
}

#[derive(serde::Deserialize)]
struct RawBackend {
    address: String,
    name: String,
    weight: Option<u32>,
    drain: Option<bool>,
}

#[derive(serde::Deserialize)]
struct RawPersistence {
    ttl: String,
}

#[derive(serde::Deserialize)]
struct RawOutlier {
    consecutive_failures: u32,
    base_ejection: String,
    max_ejection: Option<String>,
    max_ejected_percent: u32,
}

fn duration(s: &str) -> Duration {
    humantime::parse_duration(s).unwrap()
}

/// A cluster of `policy` over `backends` (a TOML array of inline tables), with `extra`
/// cluster keys and tables (`[persistence]`, `[outlier]`, `on_backend_down = …`).
pub(crate) fn cluster_with(policy: &str, extra: &str, backends: &str) -> Cluster {
    // Keys before any table, then the tables.
    let (keys, tables): (Vec<&str>, Vec<&str>) = {
        let at = extra.find('[').unwrap_or(extra.len());
        (vec![&extra[..at]], vec![&extra[at..]])
    };
    let text = format!(
        "policy = \"{policy}\"\nbackends = {backends}\n{}\n{}",
        keys.join(""),
        tables.join("").replace("[cluster.", "[")
    );
    let raw: Raw = toml::from_str(&text).unwrap();
    let policy_kind = PolicyKind::parse(&raw.policy).unwrap();
    Cluster::new(BalanceSettings {
        name: "c".into(),
        policy: policy_kind,
        backends: raw
            .backends
            .into_iter()
            .map(|b| BackendSettings {
                name: b.name,
                address: b.address.parse().unwrap(),
                weight: b.weight.unwrap_or(1),
                drain: b.drain.unwrap_or(false),
            })
            .collect(),
        persistence: raw.persistence.map(|p| Persistence {
            ttl: duration(&p.ttl),
            max_entries: 1_000_000,
        }),
        on_backend_down: match raw.on_backend_down.as_deref() {
            Some("fail") => OnBackendDown::Fail,
            Some("repin") => OnBackendDown::Repin,
            _ if policy_kind.hashes_keys() => OnBackendDown::Fail,
            _ => OnBackendDown::Repin,
        },
        outlier: raw.outlier.map(|o| OutlierSettings {
            consecutive_failures: o.consecutive_failures,
            base_ejection: duration(&o.base_ejection),
            max_ejection: o
                .max_ejection
                .as_deref()
                .map_or(Duration::from_secs(300), duration),
            max_ejected_percent: o.max_ejected_percent,
        }),
        hash_tag: raw.hash_tag.map(|t| [t.as_bytes()[0], t.as_bytes()[1]]),
    })
}

/// A `round_robin` cluster.
pub(crate) fn cluster(extra: &str, backends: &str) -> Cluster {
    cluster_with("round_robin", extra, backends)
}

/// Three backends; `c` draining.
pub(crate) const THREE: &str = r#"[{ address = "127.0.0.1:1", name = "a" }, { address = "127.0.0.1:2", name = "b" }, { address = "127.0.0.1:3", name = "c", drain = true }]"#;

/// Five backends; `c` of weight 2.
pub(crate) const FIVE: &str = r#"[{ address = "127.0.0.1:1", name = "a" }, { address = "127.0.0.1:2", name = "b" }, { address = "127.0.0.1:3", name = "c", weight = 2 }, { address = "127.0.0.1:4", name = "d" }, { address = "127.0.0.1:5", name = "e" }]"#;

/// A key for test `i`.
pub(crate) fn key(i: usize) -> Vec<u8> {
    format!("{:x}", (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)).into_bytes()
}
