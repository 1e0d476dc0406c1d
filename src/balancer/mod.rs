//! The balancer: a cluster's backends with their live load and availability, and the choice
//! of one backend per message. A message with a session key goes where its key is pinned if
//! that backend is usable; otherwise (and for keyless messages) the cluster's policy picks
//! from live load among available, non-draining backends, and the key is pinned to the
//! pick. The key-hashing policies (`ketama`, `maglev`) instead place a keyed message by its
//! key bytes on a map built once per cluster, walking past unusable backends. The balancer
//! owns no connections: whether this worker can reach a backend right now is a question the
//! caller (the worker's upstream pool) answers. Passive outlier ejection also lives here,
//! since it is a cluster-wide decision (at most `max_ejected_percent` of the backends out at
//! once).

mod backend;
pub mod ketama;
pub mod maglev;
mod policy;

pub use backend::Backend;
pub use ketama::Continuum;
pub use maglev::Maglev;
pub use policy::Picker;

use crate::config::{ClusterConfig, OnBackendDown, PolicyKind};
use crate::session::{key_hash, PinOutcome, SessionTable};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// Milliseconds since the process's first call: the clock of ejection deadlines.
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// A cluster, shared by every worker. Replaced as a whole on reload; backends and the
/// session table carry over.
#[derive(Debug)]
pub struct Cluster {
    /// Its config.
    pub config: ClusterConfig,
    /// Backends, in config order.
    pub backends: Vec<Arc<Backend>>,
    /// Key pins (by backend id), when the cluster has persistence.
    pub sessions: Option<Arc<SessionTable>>,
    /// The key → backend map of a key-hashing policy, over `backends` by index.
    keymap: Option<KeyMap>,
}

/// Where a key-hashing policy sends each key, built from the backends' names and weights.
#[derive(Debug)]
enum KeyMap {
    Ketama(Continuum),
    Maglev(Maglev),
}

impl KeyMap {
    fn build(config: &ClusterConfig) -> Option<Self> {
        let named = || -> Vec<(&str, u32)> {
            config
                .backends
                .iter()
                .map(|b| (b.name.as_str(), b.weight))
                .collect()
        };
        match config.policy {
            PolicyKind::Ketama => Some(KeyMap::Ketama(Continuum::new(&named()))),
            PolicyKind::Maglev => Some(KeyMap::Maglev(Maglev::new(&named()))),
            _ => None,
        }
    }

    fn pick(&self, key: &[u8], usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        match self {
            KeyMap::Ketama(c) => c.pick(key, usable),
            KeyMap::Maglev(m) => m.pick(key, usable),
        }
    }
}

/// Where one message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// To this backend (index), by pin or by policy.
    To(usize),
    /// Its key was pinned to an unusable backend (index, if still in the cluster) and now
    /// is pinned to `to`.
    Moved {
        /// The old backend, if it is still in the cluster.
        from: Option<usize>,
        /// The new backend.
        to: usize,
    },
    /// Its key's backend (pinned, or where the hash places it) is unusable and
    /// `on_backend_down = "fail"`.
    PinnedDown(Option<usize>),
    /// Free to go anywhere, but every backend that could take it is full right now: wait.
    Busy,
    /// No backend can take it.
    Unavailable,
}

/// What the caller (a worker's connection pool) knows of each backend right now.
pub trait Reach {
    /// Whether this worker has a connection to backend `i` that takes messages (up, or on
    /// its first attempt). A backend that is not up is unusable: keys move off it (or fail).
    fn up(&self, i: usize) -> bool;
    /// Whether backend `i` takes a message now without waiting. Only freely placed messages
    /// (no pin, no hashed key) look at this: a key never leaves its backend because a
    /// queue is full; its client waits instead.
    fn room(&self, i: usize) -> bool;
}

/// A predicate is both: up exactly when it has room (tests, `frames`).
impl<F: Fn(usize) -> bool> Reach for F {
    fn up(&self, i: usize) -> bool {
        self(i)
    }
    fn room(&self, i: usize) -> bool {
        self(i)
    }
}

/// Where a message without a live pin is placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    To(usize),
    /// Free to go anywhere, but all are full.
    Busy,
    /// Its hashed key's backend is unusable and `on_backend_down = "fail"`.
    HomeDown(usize),
    Nowhere,
}

impl Cluster {
    /// A cluster with fresh load state and an empty session table.
    pub fn new(config: ClusterConfig) -> Self {
        Self::evolve(config, None)
    }

    /// A cluster for `config` that keeps what `previous` (same name) knew: backends with the
    /// same name and address keep their state and id (so their pins stay valid), and the
    /// session table is kept if the cluster still has persistence.
    pub fn evolve(config: ClusterConfig, previous: Option<&Cluster>) -> Self {
        let backends = config
            .backends
            .iter()
            .map(|b| {
                let old = previous.and_then(|p| {
                    p.backends
                        .iter()
                        .find(|o| o.name == b.name && o.address == b.address)
                });
                match old {
                    Some(o) => {
                        o.update(b);
                        o.clone()
                    }
                    None => Arc::new(Backend::new(b)),
                }
            })
            .collect();
        let sessions =
            config
                .persistence
                .map(|p| match previous.and_then(|c| c.sessions.clone()) {
                    Some(t) => {
                        t.set_limits(p.ttl, p.max_entries);
                        t
                    }
                    None => Arc::new(SessionTable::new(p.ttl, p.max_entries)),
                });
        Cluster {
            keymap: KeyMap::build(&config),
            config,
            backends,
            sessions,
        }
    }

    /// The backend (index) a key-hashing policy (`ketama`, `maglev`) sends `key` to with
    /// every backend usable; `None` under the other policies.
    pub fn key_home(&self, key: &[u8]) -> Option<usize> {
        self.keymap.as_ref()?.pick(key, &|_| true)
    }

    /// The index of the backend with `id`, if it is in this cluster.
    pub fn index_of(&self, id: u32) -> Option<usize> {
        self.backends.iter().position(|b| b.id == id)
    }

    /// The part of `key` that places and pins it: with a `hash_tag`, the bytes between the
    /// first opening tag byte and the first closing one after it, if there are any (as
    /// twemproxy does); otherwise the whole key.
    pub fn hash_key<'k>(&self, key: &'k [u8]) -> &'k [u8] {
        let Some([open, close]) = self.config.hash_tag else {
            return key;
        };
        let Some(start) = memchr::memchr(open, key) else {
            return key;
        };
        match memchr::memchr(close, &key[start + 1..]) {
            Some(len) if len > 0 => &key[start + 1..start + 1 + len],
            _ => key,
        }
    }

    /// Chooses the backend for one message. `key` is the message's session key bytes, if it
    /// has one; `owner` the global id of the sending client connection; `reach` what this
    /// worker's pool knows of each backend now.
    ///
    /// With persistence, the pin table is consulted first (by [`key_hash`] of the key);
    /// the policy places what is not pinned. A key-hashing policy places a keyed message on
    /// its map; everything else is picked by `picker` among backends with room. A pinned or
    /// hashed key goes to its backend whenever that backend is up, full or not: only a
    /// backend that is down, failing health checks, ejected (or, for new keys, draining)
    /// makes it move — or fail, with `on_backend_down = "fail"`.
    pub fn route(
        &self,
        key: Option<&[u8]>,
        owner: u64,
        picker: &mut Picker,
        reach: &dyn Reach,
    ) -> Routed {
        let key = key.map(|k| self.hash_key(k));
        let now = now_ms();
        let fail = self.config.on_backend_down == OnBackendDown::Fail;
        // Usable: may carry the messages of keys it holds.
        let usable = |i: usize| self.backends[i].available(now) && reach.up(i);
        // Open: may take new keys and freely placed messages.
        let open = |i: usize| usable(i) && !self.backends[i].draining();
        let place = |picker: &mut Picker| -> Place {
            match (&self.keymap, key) {
                (Some(map), Some(k)) => match map.pick(k, &|_| true) {
                    None => Place::Nowhere,
                    Some(home) if open(home) => Place::To(home),
                    // Down, failing health checks or ejected: the key's data is there.
                    Some(home) if fail && !usable(home) => Place::HomeDown(home),
                    // Draining (or down, under repin): along the map to the next open one.
                    Some(_) => map.pick(k, &open).map_or(Place::Nowhere, Place::To),
                },
                _ => match picker.pick(&self.backends, &|i| open(i) && reach.room(i)) {
                    Some(i) => Place::To(i),
                    None if (0..self.backends.len()).any(open) => Place::Busy,
                    None => Place::Nowhere,
                },
            }
        };
        let unplaced = |p: Place| match p {
            Place::To(b) => Routed::To(b),
            Place::Busy => Routed::Busy,
            Place::HomeDown(b) => Routed::PinnedDown(Some(b)),
            Place::Nowhere => Routed::Unavailable,
        };
        let (Some(k), Some(table)) = (key, &self.sessions) else {
            return unplaced(place(picker));
        };
        let k = key_hash(k);
        let placed = std::cell::Cell::new(Place::Nowhere);
        let outcome = table.route(
            k,
            owner,
            !fail,
            |id| self.index_of(id).is_some_and(usable),
            || {
                let p = place(picker);
                placed.set(p);
                match p {
                    Place::To(i) => Some(self.backends[i].id),
                    _ => None,
                }
            },
        );
        let index = |id: u32| self.index_of(id);
        match outcome {
            PinOutcome::Hit(id) | PinOutcome::New(id) => {
                index(id).map_or(Routed::Unavailable, Routed::To)
            }
            PinOutcome::Moved { from, to } => match index(to) {
                Some(to) => Routed::Moved {
                    from: index(from),
                    to,
                },
                None => Routed::Unavailable,
            },
            PinOutcome::PinnedDown(id) => Routed::PinnedDown(index(id)),
            PinOutcome::Unavailable => unplaced(placed.get()),
        }
    }

    /// Passive outlier detection: one more consecutive failure (connect refused, reset,
    /// request timeout) of backend `i`. Ejects it when the count reaches the threshold and
    /// the cluster's ejection budget allows.
    pub fn report_failure(&self, i: usize, what: &str) {
        let Some(o) = self.config.outlier else {
            return;
        };
        let b = &self.backends[i];
        if b.count_failure() < o.consecutive_failures {
            return;
        }
        let now = now_ms();
        if b.ejected(now) {
            return;
        }
        let ejected = self.backends.iter().filter(|x| x.ejected(now)).count();
        let budget = self.backends.len() * o.max_ejected_percent as usize / 100;
        if ejected + 1 > budget {
            tracing::warn!(
                cluster = %self.config.name,
                backend = %b.name,
                ejected,
                max_ejected_percent = o.max_ejected_percent,
                "outlier not ejected: the cluster's ejection budget is spent"
            );
            return;
        }
        // The period doubles with each ejection, up to max_ejection.
        let period = ejection_period(&o, b.ejections());
        b.eject(now + period);
        tracing::warn!(
            cluster = %self.config.name,
            backend = %b.name,
            consecutive_failures = o.consecutive_failures,
            last_failure = what,
            ejected_for_ms = period,
            "backend ejected by outlier detection"
        );
    }
}

/// How long a backend ejected `before` times already is ejected now, in milliseconds:
/// `base_ejection` doubled per earlier ejection, up to `max_ejection`.
fn ejection_period(o: &crate::config::OutlierConfig, before: u32) -> u64 {
    (o.base_ejection.as_millis() as u64)
        .saturating_mul(1u64 << before.min(40))
        .min(o.max_ejection.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use std::path::Path;

    fn cluster(extra: &str, backends: &str) -> Cluster {
        cluster_with("round_robin", extra, backends)
    }

    fn cluster_with(policy: &str, extra: &str, backends: &str) -> Cluster {
        let text = format!(
            "[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\ncluster = \"c\"\n[listener.codec]\nkind = \"delimiter\"\n\
             [[cluster]]\nname = \"c\"\npolicy = \"{policy}\"\nbackends = {backends}\n{extra}"
        );
        Cluster::new(
            parse(&text, Path::new("t.toml"))
                .unwrap()
                .clusters
                .remove(0),
        )
    }

    const THREE: &str = r#"[{ address = "127.0.0.1:1", name = "a" }, { address = "127.0.0.1:2", name = "b" }, { address = "127.0.0.1:3", name = "c", drain = true }]"#;

    #[test]
    fn draining_backends_keep_pins_but_get_nothing_new() {
        let c = cluster("[cluster.persistence]\nttl = \"1m\"", THREE);
        let mut p = Picker::new(c.config.policy, 3, 0);
        for _ in 0..30 {
            assert_ne!(c.route(None, 1, &mut p, &|_: usize| true), Routed::To(2));
        }
        // A pin made before the drain is still honoured.
        let table = c.sessions.as_ref().unwrap();
        let drained_id = c.backends[2].id;
        table.route(key_hash(b"k99"), 1, true, |_| true, || Some(drained_id));
        assert_eq!(
            c.route(Some(b"k99".as_slice()), 1, &mut p, &|_: usize| true),
            Routed::To(2)
        );
    }

    #[test]
    fn on_backend_down_fail_refuses_instead_of_moving() {
        let c = cluster(
            "on_backend_down = \"fail\"\n[cluster.persistence]\nttl = \"1m\"",
            THREE,
        );
        let mut p = Picker::new(c.config.policy, 3, 0);
        let Routed::To(home) = c.route(Some(b"k7".as_slice()), 1, &mut p, &|_: usize| true) else {
            panic!("first message must be routed")
        };
        assert_eq!(
            c.route(Some(b"k7".as_slice()), 1, &mut p, &|i: usize| i != home),
            Routed::PinnedDown(Some(home))
        );
    }

    #[test]
    fn outliers_are_ejected_within_the_budget() {
        let c = cluster(
            "[cluster.outlier]\nconsecutive_failures = 3\nbase_ejection = \"1m\"\nmax_ejected_percent = 34",
            THREE,
        );
        let now = now_ms();
        c.report_failure(0, "reset");
        c.report_failure(0, "reset");
        assert!(!c.backends[0].ejected(now));
        c.report_failure(0, "reset");
        assert!(c.backends[0].ejected(now_ms()));
        // A second ejection would exceed 34% of 3 backends.
        for _ in 0..3 {
            c.report_failure(1, "refused");
        }
        assert!(!c.backends[1].ejected(now_ms()));
        let mut p = Picker::new(c.config.policy, 3, 0);
        for _ in 0..10 {
            assert_eq!(
                c.route(None, 1, &mut p, &|_: usize| true),
                Routed::To(1),
                "only b is usable"
            );
        }
    }

    #[test]
    fn the_ejection_period_doubles_per_ejection_up_to_the_maximum() {
        // The documented sequence: base_ejection, then twice the last period, up to
        // max_ejection. (It once grew 4x: the ejection count was read by ejecting.)
        let c = cluster(
            "[cluster.outlier]\nconsecutive_failures = 1\nbase_ejection = \"10s\"\nmax_ejection = \"100s\"\nmax_ejected_percent = 100",
            THREE,
        );
        let b = &c.backends[0];
        let mut periods = Vec::new();
        for _ in 0..6 {
            let before = now_ms();
            c.report_failure(0, "reset");
            let until = b.ejected_until();
            // Rounded to whole seconds: the clock moves between the two reads.
            periods.push((until - before + 500) / 1000);
            b.end_ejection();
        }
        assert_eq!(periods, vec![10, 20, 40, 80, 100, 100]);
        assert_eq!(b.ejections(), 6);
    }

    #[test]
    fn reload_keeps_backend_state_and_pins() {
        let old = cluster("[cluster.persistence]\nttl = \"1m\"", THREE);
        old.sessions.as_ref().unwrap().route(
            key_hash(b"k5"),
            1,
            true,
            |_| true,
            || Some(old.backends[1].id),
        );
        old.backends[1].on_sent(true);
        let new_cfg = cluster(
            "[cluster.persistence]\nttl = \"1m\"",
            r#"[{ address = "127.0.0.1:2", name = "b", weight = 5 }, { address = "127.0.0.1:4", name = "d" }]"#,
        )
        .config;
        let new = Cluster::evolve(new_cfg, Some(&old));
        assert!(Arc::ptr_eq(&new.backends[0], &old.backends[1]));
        assert_eq!(new.backends[0].weight(), 5);
        assert_eq!(new.backends[0].outstanding(), 1);
        let mut p = Picker::new(new.config.policy, 2, 0);
        assert_eq!(
            new.route(Some(b"k5".as_slice()), 1, &mut p, &|_: usize| true),
            Routed::To(0),
            "pin survived"
        );
    }

    const FIVE: &str = r#"[{ address = "127.0.0.1:1", name = "a" }, { address = "127.0.0.1:2", name = "b" }, { address = "127.0.0.1:3", name = "c", weight = 2 }, { address = "127.0.0.1:4", name = "d" }, { address = "127.0.0.1:5", name = "e" }]"#;

    fn key(i: usize) -> Vec<u8> {
        format!("{:x}", (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)).into_bytes()
    }

    #[test]
    fn hashing_policies_route_by_key_bytes_and_walk_past_unusable_backends() {
        for policy in ["ketama", "maglev"] {
            let c = cluster_with(policy, "on_backend_down = \"repin\"", FIVE);
            assert!(c.sessions.is_none());
            let mut p = Picker::new(c.config.policy, 5, 0);
            // The map is the library's, over the backends' names and weights.
            let named = [("a", 1), ("b", 1), ("c", 2), ("d", 1), ("e", 1)];
            let (ketama, maglev) = (Continuum::new(&named), Maglev::new(&named));
            let mut homes = [0usize; 5];
            for i in 0..500 {
                let k = key(i);
                let home = c.key_home(&k).unwrap();
                let lib = match policy {
                    "ketama" => ketama.server_for(&k),
                    _ => maglev.backend_for(&k),
                };
                assert_eq!(Some(home), lib, "{policy}");
                homes[home] += 1;
                // Every message of a key goes home, from any connection, as often as sent.
                for owner in 1..3 {
                    assert_eq!(
                        c.route(Some(&k), owner, &mut p, &|_: usize| true),
                        Routed::To(home)
                    );
                }
                // Its home unreachable: the next usable one along the map; back when it is.
                let away = c.route(Some(&k), 1, &mut p, &|b: usize| b != home);
                let Routed::To(other) = away else {
                    panic!("{policy}: {away:?}")
                };
                assert_ne!(other, home);
                assert_eq!(
                    c.route(Some(&k), 1, &mut p, &|b: usize| b != home),
                    away,
                    "stable"
                );
                assert_eq!(
                    c.route(Some(&k), 1, &mut p, &|_: usize| true),
                    Routed::To(home)
                );
            }
            assert!(homes.iter().all(|&h| h > 40), "{policy}: {homes:?}");
            // Draining or ejected backends are walked past like unreachable ones.
            c.backends[2].set_draining(true);
            c.backends[3].eject(now_ms() + 60_000);
            for i in 0..200 {
                let k = key(i);
                let got = c.route(Some(&k), 1, &mut p, &|_: usize| true);
                assert!(
                    !matches!(got, Routed::To(2) | Routed::To(3)),
                    "{policy}: {got:?}"
                );
                if ![2, 3].contains(&c.key_home(&k).unwrap()) {
                    assert_eq!(got, Routed::To(c.key_home(&k).unwrap()));
                }
            }
            c.backends[2].set_draining(false);
            c.backends[3].end_ejection();
            // Keyless messages go anywhere usable; nothing usable, nothing routed.
            let mut seen = [false; 5];
            for _ in 0..200 {
                let Routed::To(b) = c.route(None, 1, &mut p, &|b: usize| b != 0) else {
                    panic!("keyless")
                };
                seen[b] = true;
            }
            assert_eq!(seen, [false, true, true, true, true], "{policy}");
            assert_eq!(
                c.route(Some(&key(1)), 1, &mut p, &|_: usize| false),
                Routed::Unavailable
            );
        }
    }

    #[test]
    fn with_persistence_pins_apply_before_the_hash() {
        let c = cluster_with(
            "maglev",
            "on_backend_down = \"repin\"\n[cluster.persistence]\nttl = \"1m\"",
            FIVE,
        );
        let mut p = Picker::new(c.config.policy, 5, 0);
        let k = key(7);
        let home = c.key_home(&k).unwrap();
        // A new key is pinned where the hash puts it.
        assert_eq!(
            c.route(Some(&k), 1, &mut p, &|_: usize| true),
            Routed::To(home)
        );
        // A key pinned elsewhere (e.g. before the policy changed) stays there.
        let elsewhere = (home + 1) % 5;
        let k2 = key(8);
        c.sessions.as_ref().unwrap().route(
            key_hash(&k2),
            1,
            true,
            |_| true,
            || Some(c.backends[elsewhere].id),
        );
        assert_eq!(
            c.route(Some(&k2), 1, &mut p, &|_: usize| true),
            Routed::To(elsewhere)
        );
        // A pin to an unusable backend moves along the hash map (not by load).
        let Routed::Moved { from, to } = c.route(Some(&k), 1, &mut p, &|b: usize| b != home) else {
            panic!("must move")
        };
        assert_eq!(from, Some(home));
        let named = [("a", 1), ("b", 1), ("c", 2), ("d", 1), ("e", 1)];
        assert_eq!(
            Some(to),
            Maglev::new(&named).pick(&k, &|b: usize| b != home)
        );
    }

    /// Up, but with room only where `room` says.
    struct Full<F: Fn(usize) -> bool>(F);

    impl<F: Fn(usize) -> bool> Reach for Full<F> {
        fn up(&self, _: usize) -> bool {
            true
        }
        fn room(&self, i: usize) -> bool {
            (self.0)(i)
        }
    }

    #[test]
    fn a_full_backend_keeps_its_keys_and_free_messages_go_where_there_is_room() {
        for (policy, extra) in [
            ("ketama", ""),
            ("maglev", ""),
            ("least_outstanding", "[cluster.persistence]\nttl = \"1m\""),
            ("round_robin", "[cluster.persistence]\nttl = \"1m\""),
        ] {
            let c = cluster_with(policy, extra, FIVE);
            let mut p = Picker::new(c.config.policy, 5, 0);
            for i in 0..200 {
                let k = key(i);
                let Routed::To(home) = c.route(Some(&k), 1, &mut p, &|_: usize| true) else {
                    panic!("{policy}: not routed")
                };
                // Its backend full (and every other one with room): the key stays put.
                let full = Full(|b: usize| b != home);
                for _ in 0..3 {
                    assert_eq!(
                        c.route(Some(&k), 1, &mut p, &full),
                        Routed::To(home),
                        "{policy}"
                    );
                }
            }
            // A message with no key goes where there is room; nowhere has room: it waits.
            for _ in 0..50 {
                let got = c.route(None, 1, &mut p, &Full(|b: usize| b == 3));
                assert_eq!(got, Routed::To(3), "{policy}");
            }
            assert_eq!(
                c.route(None, 1, &mut p, &Full(|_: usize| false)),
                Routed::Busy
            );
        }
    }

    #[test]
    fn key_hashing_fails_a_down_servers_keys_by_default_as_twemproxy_does() {
        for policy in ["ketama", "maglev"] {
            let c = cluster_with(policy, "", FIVE);
            assert_eq!(c.config.on_backend_down, OnBackendDown::Fail, "{policy}");
            let mut p = Picker::new(c.config.policy, 5, 0);
            for i in 0..100 {
                let k = key(i);
                let home = c.key_home(&k).unwrap();
                assert_eq!(
                    c.route(Some(&k), 1, &mut p, &|b: usize| b != home),
                    Routed::PinnedDown(Some(home)),
                    "{policy}"
                );
                assert_eq!(
                    c.route(Some(&k), 1, &mut p, &|_: usize| true),
                    Routed::To(home)
                );
            }
            // Draining moves keys on, fail or not: that is what draining is for.
            c.backends[2].set_draining(true);
            for i in 0..100 {
                let k = key(i);
                let got = c.route(Some(&k), 1, &mut p, &|_: usize| true);
                assert!(matches!(got, Routed::To(b) if b != 2), "{policy}: {got:?}");
            }
        }
        let c = cluster_with("round_robin", "", FIVE);
        assert_eq!(c.config.on_backend_down, OnBackendDown::Repin);
    }

    #[test]
    fn reload_rebuilds_the_hash_map_from_the_new_backends() {
        let old = cluster_with("ketama", "", THREE);
        let new = Cluster::evolve(cluster_with("ketama", "", FIVE).config, Some(&old));
        let named = [("a", 1), ("b", 1), ("c", 2), ("d", 1), ("e", 1)];
        let lib = Continuum::new(&named);
        for i in 0..100 {
            assert_eq!(new.key_home(&key(i)), lib.server_for(&key(i)));
        }
        assert_eq!(
            cluster("", THREE).key_home(b"k"),
            None,
            "round_robin has no map"
        );
    }
}
