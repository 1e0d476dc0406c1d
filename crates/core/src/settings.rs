//! A cluster's balancing settings, validated: what the config file says about backends,
//! the policy, pins and ejection. The proxy's config module builds these; this crate only
//! reads them.

use std::net::SocketAddr;
use std::time::Duration;

/// How new messages and new keys pick a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// Each backend in turn.
    RoundRobin,
    /// Each backend in turn, in proportion to its weight (smooth WRR).
    WeightedRoundRobin,
    /// Fewest requests awaiting answers, relative to weight.
    LeastOutstanding,
    /// Fewest sessions pinned, relative to weight (calls open on each server).
    LeastSessions,
    /// Power of two random choices over latency EWMA × outstanding.
    P2cEwma,
    /// Random, in proportion to weight.
    Random,
    /// By key, on twemproxy's ketama continuum (MD5 points, twemproxy's `fnv1a_64` key hash).
    Ketama,
    /// By key, on a Maglev lookup table (65537 entries, weighted).
    Maglev,
    /// By the client's address (rendezvous hashing, weighted): one client, one backend.
    Source,
}

impl PolicyKind {
    /// Every policy's config name, for error messages.
    pub const NAMES: &'static str =
        "round_robin, weighted_round_robin, least_outstanding, least_sessions, p2c_ewma, random, ketama, maglev, source";

    /// The policy with config name `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "round_robin" => PolicyKind::RoundRobin,
            "weighted_round_robin" => PolicyKind::WeightedRoundRobin,
            "least_outstanding" => PolicyKind::LeastOutstanding,
            "least_sessions" => PolicyKind::LeastSessions,
            "p2c_ewma" => PolicyKind::P2cEwma,
            "random" => PolicyKind::Random,
            "ketama" => PolicyKind::Ketama,
            "maglev" => PolicyKind::Maglev,
            "source" => PolicyKind::Source,
            _ => return None,
        })
    }

    /// Its config name.
    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::RoundRobin => "round_robin",
            PolicyKind::WeightedRoundRobin => "weighted_round_robin",
            PolicyKind::LeastOutstanding => "least_outstanding",
            PolicyKind::LeastSessions => "least_sessions",
            PolicyKind::P2cEwma => "p2c_ewma",
            PolicyKind::Random => "random",
            PolicyKind::Ketama => "ketama",
            PolicyKind::Maglev => "maglev",
            PolicyKind::Source => "source",
        }
    }

    /// Whether it places keyed messages by hashing the key (no table needed).
    pub fn hashes_keys(self) -> bool {
        matches!(self, PolicyKind::Ketama | PolicyKind::Maglev)
    }
}

/// One backend of a cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendSettings {
    /// Name for logs, and what the key-hashing policies hash (default: the address).
    pub name: String,
    /// Resolved address.
    pub address: SocketAddr,
    /// Relative share of new messages and pins (≥ 1).
    pub weight: u32,
    /// Draining: no new messages or pins; existing pins are kept until their TTL.
    pub drain: bool,
}

/// Session persistence of a cluster.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Persistence {
    /// Idle time after which a pin is forgotten.
    pub ttl: Duration,
    /// Most pins kept; the stalest are evicted beyond it.
    pub max_entries: usize,
}

/// What happens to a message whose key's backend (pinned, or where a key-hashing policy
/// places it) is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBackendDown {
    /// Send it to a live backend (and pin the key there): the default, except under the
    /// key-hashing policies.
    Repin,
    /// Fail the message (the listener's error answer, or its client closed): the default
    /// under `ketama` and `maglev`.
    Fail,
}

/// Passive outlier ejection, Envoy's idea.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutlierSettings {
    /// Consecutive failures (connect refused, reset, request timeout) that eject.
    pub consecutive_failures: u32,
    /// First ejection period; doubles with each further ejection.
    pub base_ejection: Duration,
    /// Longest ejection period.
    pub max_ejection: Duration,
    /// Largest share of the cluster's backends ejected at once.
    pub max_ejected_percent: u32,
}

/// Everything about a cluster that decides where its messages go.
#[derive(Debug, Clone, PartialEq)]
pub struct BalanceSettings {
    /// The cluster's name.
    pub name: String,
    /// How new messages and new keys pick a backend.
    pub policy: PolicyKind,
    /// The backends, in file order.
    pub backends: Vec<BackendSettings>,
    /// Key pinning; `None` balances every message freely.
    pub persistence: Option<Persistence>,
    /// What a message whose key's backend is unusable does.
    pub on_backend_down: OnBackendDown,
    /// Passive outlier ejection, if configured.
    pub outlier: Option<OutlierSettings>,
    /// twemproxy's `hash_tag`: an opening and a closing byte; a key holding both (with
    /// something between) is placed and pinned by the part between them.
    pub hash_tag: Option<[u8; 2]>,
}
