//! Session persistence: pins from a session key to a backend, with an idle TTL and a hard
//! bound on entries, shared by every worker. [`SessionStore`] is the seam a store plugs into
//! (`store = "memory"` in the config: [`SessionTable`], sharded so that no lock is global,
//! never doing I/O, so a lookup on the hot path costs one short shard lock).
//!
//! Keys are 64-bit SipHash digests of the key bytes under a per-process random seed, so a
//! store holds no key copies and a client cannot choose colliding keys. Each pin also
//! remembers which client connection owns the key's session (claimed by the client that
//! sends it): that is where a backend's unasked (push) message for the key is delivered.

mod memory;

pub use memory::{Ledger, PinInfo, PinOutcome, SessionTable};

use std::hash::BuildHasher;
use std::sync::OnceLock;
use std::time::Duration;

/// Hashes session key bytes to the stores' 64-bit key.
pub fn key_hash(key: &[u8]) -> u64 {
    static SEED: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    SEED.get_or_init(Default::default).hash_one(key)
}

/// Where pins live. Every worker shares one store per cluster; each method is one visit.
pub trait SessionStore: Send + Sync + std::fmt::Debug {
    /// One message's visit at `now_ms` ([`crate::clock`] milliseconds, read by the caller
    /// once for many messages): the live pin of `key` if `usable` accepts its backend
    /// (refreshing it), else a pin to what `pick` returns (if anything), in one atomic step
    /// so that two workers routing a new key at once agree. With `repin` false a pin to an
    /// unusable backend is kept and reported ([`PinOutcome::PinnedDown`]).
    fn route(
        &self,
        key: u64,
        now_ms: u64,
        repin: bool,
        usable: &dyn Fn(u32) -> bool,
        pick: &mut dyn FnMut() -> Option<u32>,
    ) -> PinOutcome;
    /// Records `owner` (a client connection's global id) as the owner of `key`'s session.
    fn claim(&self, key: u64, owner: u64);
    /// The client connection owning `key`'s session, if its pin is live.
    fn owner_of(&self, key: u64) -> Option<u64>;
    /// The backend `key` is pinned to, if the pin is live.
    fn backend_of(&self, key: u64) -> Option<u32>;
    /// Forgets expired pins; returns how many. Called about once a second, off the data path.
    fn purge_expired(&self) -> usize;
    /// Pins held.
    fn len(&self) -> usize;
    /// Whether no pins are held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Applies reloaded bounds.
    fn set_limits(&self, ttl: Duration, max_entries: usize);
    /// What the live pin of `key` says (for operators; off the data path).
    fn lookup(&self, key: u64) -> Option<PinInfo>;
    /// Pins dropped so far because the store was full.
    fn evicted(&self) -> usize;
    /// Pins dropped so far because they were idle past the TTL.
    fn expired(&self) -> usize;
    /// Forgets `key`'s pin because its session ended (a call's BYE was answered); returns
    /// the backend it was pinned to.
    fn release(&self, key: u64) -> Option<u32>;
    /// Pins released so far because their session ended.
    fn released(&self) -> usize;
    /// Where the store counts each backend's pins (the `least_sessions` policy reads the
    /// counts): a backend id → counter map the cluster sets on every reload.
    fn ledger(&self) -> &Ledger;
}

impl SessionStore for SessionTable {
    fn route(
        &self,
        key: u64,
        now_ms: u64,
        repin: bool,
        usable: &dyn Fn(u32) -> bool,
        pick: &mut dyn FnMut() -> Option<u32>,
    ) -> PinOutcome {
        SessionTable::route(self, key, now_ms, repin, usable, pick)
    }
    fn claim(&self, key: u64, owner: u64) {
        SessionTable::claim(self, key, owner)
    }
    fn owner_of(&self, key: u64) -> Option<u64> {
        SessionTable::owner_of(self, key)
    }
    fn backend_of(&self, key: u64) -> Option<u32> {
        SessionTable::backend_of(self, key)
    }
    fn purge_expired(&self) -> usize {
        SessionTable::purge_expired(self)
    }
    fn len(&self) -> usize {
        SessionTable::len(self)
    }
    fn lookup(&self, key: u64) -> Option<PinInfo> {
        SessionTable::lookup(self, key)
    }
    fn evicted(&self) -> usize {
        SessionTable::evicted(self)
    }
    fn expired(&self) -> usize {
        SessionTable::expired(self)
    }
    fn set_limits(&self, ttl: Duration, max_entries: usize) {
        SessionTable::set_limits(self, ttl, max_entries)
    }
    fn release(&self, key: u64) -> Option<u32> {
        SessionTable::release(self, key)
    }
    fn released(&self) -> usize {
        SessionTable::released(self)
    }
    fn ledger(&self) -> &Ledger {
        &self.ledger
    }
}
