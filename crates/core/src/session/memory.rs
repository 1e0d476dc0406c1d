//! The in-memory session table: 64 shards, each a mutex over a hash map of pins.

use crate::clock::now_ms;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

const SHARDS: usize = 64;
/// Entries examined when a full shard must evict one (approximate LRU, as Redis does).
const EVICTION_SAMPLE: usize = 16;

/// Keys are already SipHash digests; hashing them again would only cost time.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Map = HashMap<u64, Pin, BuildHasherDefault<IdentityHasher>>;

#[derive(Debug, Clone, Copy)]
struct Pin {
    backend: u32,
    /// Messages routed by this pin (saturating).
    hits: u32,
    /// Global id of the client connection that last sent this key (0: none).
    owner: u64,
    /// When it was last used, in [`crate::clock`] milliseconds.
    last_used: u64,
    /// When the key was pinned to its backend (moved: when it moved).
    since: u64,
}

/// What a store knows of one key's pin, for operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinInfo {
    /// The backend's id.
    pub backend: u32,
    /// The client connection that owns the session (0: none).
    pub owner: u64,
    /// Milliseconds since the key was pinned to this backend.
    pub age_ms: u64,
    /// Milliseconds since a message last used the pin.
    pub idle_ms: u64,
    /// Messages the pin routed (the first one included).
    pub hits: u32,
}

/// What [`SessionTable::route`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinOutcome {
    /// The key was pinned to a usable backend, which is returned, with the client
    /// connection that owns the key's session (0: none).
    Hit(u32, u64),
    /// The key had no live pin; a backend was chosen and pinned.
    New(u32),
    /// The key was pinned to an unusable backend; it was moved to the returned one.
    Moved {
        /// The backend the key was pinned to.
        from: u32,
        /// The backend it is pinned to now.
        to: u32,
    },
    /// The key is pinned to an unusable backend and moving it is not allowed.
    PinnedDown(u32),
    /// No backend could be chosen; nothing was pinned.
    Unavailable,
}

/// Where a store counts each backend's pins: the backends' own counters (their
/// `Load::sessions`), by backend id, for the `least_sessions` policy. A pin to a backend
/// without a counter here is not counted.
#[derive(Debug, Default)]
pub struct Ledger {
    counters: RwLock<HashMap<u32, Arc<AtomicU64>>>,
}

impl Ledger {
    /// Counts into these counters from now on (the cluster's backends after a reload).
    pub fn set(&self, counters: impl IntoIterator<Item = (u32, Arc<AtomicU64>)>) {
        *self.counters.write().unwrap_or_else(|p| p.into_inner()) = counters.into_iter().collect();
    }

    /// One pin more (`up`) or fewer on `backend`.
    #[inline]
    fn count(&self, backend: u32, up: bool) {
        let map = self.counters.read().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(&backend) {
            if up {
                c.fetch_add(1, Ordering::Relaxed);
            } else {
                let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            }
        }
    }
}

/// A sharded, bounded, TTL'd map of key → backend pins.
pub struct SessionTable {
    shards: Box<[Mutex<Map>]>,
    ttl_ms: AtomicU64,
    per_shard: AtomicUsize,
    len: AtomicUsize,
    evicted: AtomicUsize,
    expired: AtomicUsize,
    released: AtomicUsize,
    /// Pins per backend, for the policies.
    pub(crate) ledger: Ledger,
}

impl std::fmt::Debug for SessionTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionTable")
            .field("len", &self.len())
            .field("ttl", &self.ttl())
            .finish()
    }
}

impl SessionTable {
    /// A table forgetting pins idle for `ttl` and holding at most `max_entries`.
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        let shards = (0..SHARDS).map(|_| Mutex::new(Map::default())).collect();
        SessionTable {
            shards,
            ttl_ms: AtomicU64::new((ttl.as_millis() as u64).max(1)),
            per_shard: AtomicUsize::new(max_entries.div_ceil(SHARDS).max(1)),
            len: AtomicUsize::new(0),
            evicted: AtomicUsize::new(0),
            expired: AtomicUsize::new(0),
            released: AtomicUsize::new(0),
            ledger: Ledger::default(),
        }
    }

    /// Applies reloaded bounds; pins already held are kept (a smaller bound evicts as new
    /// keys arrive).
    pub fn set_limits(&self, ttl: Duration, max_entries: usize) {
        self.ttl_ms
            .store((ttl.as_millis() as u64).max(1), Ordering::Relaxed);
        self.per_shard
            .store(max_entries.div_ceil(SHARDS).max(1), Ordering::Relaxed);
    }

    fn ttl_ms(&self) -> u64 {
        self.ttl_ms.load(Ordering::Relaxed)
    }

    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, Map> {
        // The map hashes with the low and the top bits; pick the shard by the middle ones.
        let i = ((key >> 32) as usize) % SHARDS;
        // A panic while holding a shard cannot leave a pin half-written; keep serving.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Looks `key` up at `now` ([`crate::clock`] milliseconds, read by the caller once for
    /// many messages) and returns its backend if the pin is live and `usable` accepts it
    /// (refreshing the pin); otherwise calls `pick` for a backend and pins the key to it.
    /// With `repin` false, a key pinned to an unusable backend is not moved
    /// ([`PinOutcome::PinnedDown`]). One shard lock for the lookup, the pick and the pin, so
    /// two workers routing a new key at once agree; no allocation on a hit.
    pub fn route(
        &self,
        key: u64,
        now: u64,
        repin: bool,
        usable: impl Fn(u32) -> bool,
        pick: impl FnOnce() -> Option<u32>,
    ) -> PinOutcome {
        let ttl = self.ttl_ms();
        let mut map = self.shard(key);
        let mut moved_from = None;
        if let Some(pin) = map.get_mut(&key) {
            if now.saturating_sub(pin.last_used) < ttl {
                if usable(pin.backend) {
                    pin.last_used = now;
                    pin.hits = pin.hits.saturating_add(1);
                    return PinOutcome::Hit(pin.backend, pin.owner);
                }
                if !repin {
                    return PinOutcome::PinnedDown(pin.backend);
                }
                moved_from = Some(pin.backend);
            }
        }
        let Some(backend) = pick() else {
            return PinOutcome::Unavailable;
        };
        // A moved pin keeps its owner: the session continues on its new backend.
        let owner = map.get(&key).map_or(0, |p| p.owner);
        let pin = Pin {
            backend,
            hits: 1,
            owner,
            last_used: now,
            since: now,
        };
        self.ledger.count(backend, true);
        match map.insert(key, pin) {
            // Moved, or an expired pin not purged yet: its backend holds it no more.
            Some(old) => self.ledger.count(old.backend, false),
            None => {
                self.len.fetch_add(1, Ordering::Relaxed);
                if map.len() > self.per_shard.load(Ordering::Relaxed) {
                    self.evict_one(&mut map, key, now);
                }
            }
        }
        match moved_from {
            Some(from) => PinOutcome::Moved { from, to: backend },
            None => PinOutcome::New(backend),
        }
    }

    /// Drops one entry other than `keep`: an expired one if the sample has it, else the one
    /// idle longest in the sample.
    fn evict_one(&self, map: &mut Map, keep: u64, now: u64) {
        let victim = map
            .iter()
            .filter(|(k, _)| **k != keep)
            .take(EVICTION_SAMPLE)
            .max_by_key(|(_, p)| now.saturating_sub(p.last_used))
            .map(|(k, _)| *k);
        if let Some(p) = victim.and_then(|k| map.remove(&k)) {
            self.ledger.count(p.backend, false);
            self.len.fetch_sub(1, Ordering::Relaxed);
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Forgets `key`'s pin (its session ended); returns the backend it was pinned to.
    pub fn release(&self, key: u64) -> Option<u32> {
        let pin = self.shard(key).remove(&key)?;
        self.ledger.count(pin.backend, false);
        self.len.fetch_sub(1, Ordering::Relaxed);
        self.released.fetch_add(1, Ordering::Relaxed);
        Some(pin.backend)
    }

    /// Pins released because their session ended.
    pub fn released(&self) -> usize {
        self.released.load(Ordering::Relaxed)
    }

    /// Records the client connection `owner` as the one that owns `key`'s session (where a
    /// backend's unasked messages for the key go), if the key is pinned.
    pub fn claim(&self, key: u64, owner: u64) {
        if let Some(pin) = self.shard(key).get_mut(&key) {
            pin.owner = owner;
        }
    }

    /// The backend `key` is pinned to, if the pin is live.
    pub fn backend_of(&self, key: u64) -> Option<u32> {
        let now = now_ms();
        let map = self.shard(key);
        map.get(&key)
            .filter(|p| now.saturating_sub(p.last_used) < self.ttl_ms())
            .map(|p| p.backend)
    }

    /// What the live pin of `key` says, if there is one.
    pub fn lookup(&self, key: u64) -> Option<PinInfo> {
        let now = now_ms();
        let map = self.shard(key);
        map.get(&key)
            .filter(|p| now.saturating_sub(p.last_used) < self.ttl_ms())
            .map(|p| PinInfo {
                backend: p.backend,
                owner: p.owner,
                age_ms: now.saturating_sub(p.since),
                idle_ms: now.saturating_sub(p.last_used),
                hits: p.hits,
            })
    }

    /// The client connection that last sent `key`, if the pin is live.
    pub fn owner_of(&self, key: u64) -> Option<u64> {
        let now = now_ms();
        let map = self.shard(key);
        map.get(&key)
            .filter(|p| p.owner != 0 && now.saturating_sub(p.last_used) < self.ttl_ms())
            .map(|p| p.owner)
    }

    /// Removes expired pins from every shard; returns how many. Called periodically off
    /// the hot path.
    pub fn purge_expired(&self) -> usize {
        let now = now_ms();
        let ttl = self.ttl_ms();
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
            map.retain(|_, p| {
                let live = now.saturating_sub(p.last_used) < ttl;
                if !live {
                    self.ledger.count(p.backend, false);
                    removed += 1;
                }
                live
            });
        }
        self.len.fetch_sub(removed, Ordering::Relaxed);
        self.expired.fetch_add(removed, Ordering::Relaxed);
        removed
    }

    /// Pins currently held (expired ones included until purged).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether no pins are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pins evicted because the table was full.
    pub fn evicted(&self) -> usize {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Pins purged because they were idle past the TTL.
    pub fn expired(&self) -> usize {
        self.expired.load(Ordering::Relaxed)
    }

    /// The idle TTL.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::key_hash;

    #[test]
    fn pins_stick_and_move_off_unusable_backends() {
        let t = SessionTable::new(Duration::from_secs(60), 1000);
        let k = key_hash(b"alice");
        assert_eq!(
            t.route(k, now_ms(), true, |_| true, || Some(2)),
            PinOutcome::New(2)
        );
        t.claim(k, 7);
        assert_eq!(
            t.route(k, now_ms(), true, |_| true, || Some(0)),
            PinOutcome::Hit(2, 7)
        );
        assert_eq!(t.owner_of(k), Some(7));
        assert_eq!(
            t.route(k, now_ms(), true, |b| b != 2, || Some(1)),
            PinOutcome::Moved { from: 2, to: 1 }
        );
        assert_eq!(t.backend_of(k), Some(1));
        assert_eq!(t.owner_of(k), Some(7), "a moved session keeps its owner");
        t.claim(k, 8);
        assert_eq!(t.owner_of(k), Some(8));
        // on_backend_down = "fail": the pin stays, the message is refused.
        assert_eq!(
            t.route(k, now_ms(), false, |b| b != 1, || Some(0)),
            PinOutcome::PinnedDown(1)
        );
        assert_eq!(t.backend_of(k), Some(1));
        assert_eq!(
            t.route(key_hash(b"bob"), now_ms(), true, |_| false, || None),
            PinOutcome::Unavailable
        );
        // Claiming a key nobody pinned pins nothing.
        t.claim(key_hash(b"nobody"), 3);
        assert_eq!(t.owner_of(key_hash(b"nobody")), None);
        assert_eq!(t.len(), 1);
    }

    /// Each backend's count of pins follows every way a pin comes and goes: new, moved,
    /// replaced after expiring, released, evicted, purged.
    #[test]
    fn the_ledger_counts_each_backends_pins() {
        let t = SessionTable::new(Duration::from_millis(30), 64 * 4);
        let c: Vec<Arc<AtomicU64>> = (0..3).map(|_| Arc::default()).collect();
        t.ledger.set((0..3).map(|i| (i as u32, c[i].clone())));
        let n = |i: usize| c[i].load(Ordering::Relaxed);
        let (a, b) = (key_hash(b"a"), key_hash(b"b"));
        t.route(a, now_ms(), true, |_| true, || Some(0));
        t.route(b, now_ms(), true, |_| true, || Some(0));
        assert_eq!((n(0), n(1)), (2, 0));
        t.route(a, now_ms(), true, |x| x != 0, || Some(1));
        assert_eq!((n(0), n(1)), (1, 1), "moved");
        assert_eq!(t.release(a), Some(1));
        assert_eq!((t.release(a), n(1), t.released(), t.len()), (None, 0, 1, 1));
        // b expires; routed again it is pinned anew, not counted twice.
        std::thread::sleep(Duration::from_millis(40));
        t.route(b, now_ms(), true, |_| true, || Some(2));
        assert_eq!((n(0), n(2)), (0, 1), "an expired pin replaced");
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(t.purge_expired(), 1);
        assert_eq!(n(2), 0, "purged");
        for i in 0..5_000u64 {
            t.route(
                key_hash(&i.to_le_bytes()),
                now_ms(),
                true,
                |_| true,
                || Some(1),
            );
        }
        assert_eq!(n(1) as usize, t.len(), "evictions counted");
    }

    #[test]
    fn idle_pins_expire() {
        let t = SessionTable::new(Duration::from_millis(20), 1000);
        let k = key_hash(b"k");
        t.route(k, now_ms(), true, |_| true, || Some(0));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(t.backend_of(k), None);
        assert_eq!(
            t.route(k, now_ms(), true, |_| true, || Some(1)),
            PinOutcome::New(1)
        );
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(t.purge_expired(), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn never_grows_past_its_bound() {
        let max = 640;
        let t = SessionTable::new(Duration::from_secs(60), max);
        for i in 0..20_000u64 {
            t.route(
                key_hash(&i.to_le_bytes()),
                now_ms(),
                true,
                |_| true,
                || Some(0),
            );
            assert!(t.len() <= max, "{} > {max}", t.len());
        }
        assert!(t.evicted() >= 20_000 - max);
        // The newest key always survives its own insertion.
        assert_eq!(t.backend_of(key_hash(&19_999u64.to_le_bytes())), Some(0));
    }

    #[test]
    fn shared_across_threads() {
        let t = std::sync::Arc::new(SessionTable::new(Duration::from_secs(60), 100_000));
        let handles: Vec<_> = (0..4)
            .map(|w| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000u64 {
                        let k = key_hash(&i.to_le_bytes());
                        let got = t.route(k, now_ms(), true, |_| true, || Some((i % 3) as u32));
                        t.claim(k, w);
                        let b = match got {
                            PinOutcome::Hit(b, _) | PinOutcome::New(b) => b,
                            other => panic!("{other:?}"),
                        };
                        assert_eq!(b, (i % 3) as u32);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(t.len(), 5_000);
    }
}
