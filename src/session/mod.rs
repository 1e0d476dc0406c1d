//! Session persistence: pins from a session key to a backend, with an idle TTL and a hard
//! bound on entries. Shared by every worker; sharded so that no lock is global, and never
//! doing I/O, so a lookup on the hot path costs one short shard lock.
//!
//! Keys are 64-bit SipHash digests of the key bytes under a per-process random seed, so the
//! table holds no key copies and a client cannot choose colliding keys. Each pin also
//! remembers which client connection last used the key: that is where a backend's unasked
//! (push) message for the key is delivered.

mod memory;

pub use memory::{PinOutcome, SessionTable};

use std::hash::BuildHasher;
use std::sync::OnceLock;

/// Hashes session key bytes to the table's 64-bit key.
pub fn key_hash(key: &[u8]) -> u64 {
    static SEED: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    SEED.get_or_init(Default::default).hash_one(key)
}
