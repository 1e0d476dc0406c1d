//! Membership: a cluster's backends, in config order, with the session store and the key
//! map of its policy. Shared by every worker and replaced as a whole on reload; backends
//! that stay (same name and address) carry their state and id over, and so does the
//! session store. The cluster owns no connections: whether this worker can reach a
//! backend right now is the caller's to say (see [`super::Reach`]).

use super::backend::Backend;
use super::keymap::{self, KeyMap};
use crate::session::{key_hash, SessionStore, SessionTable};
use crate::settings::BalanceSettings;
use std::sync::Arc;

/// A cluster, shared by every worker.
#[derive(Debug)]
pub struct Cluster {
    /// Its settings.
    pub settings: BalanceSettings,
    /// Backends, in config order.
    pub backends: Vec<Arc<Backend>>,
    /// Key pins (by backend id), when the cluster has persistence.
    pub sessions: Option<Arc<dyn SessionStore>>,
    /// The key → backend map of a key-hashing policy, over `backends` by index.
    pub(crate) keymap: Option<Box<dyn KeyMap>>,
}

impl Cluster {
    /// A cluster with fresh load state and an empty session store.
    pub fn new(settings: BalanceSettings) -> Self {
        Self::evolve(settings, None)
    }

    /// A cluster for `settings` that keeps what `previous` (same name) knew: backends with
    /// the same name and address keep their state and id (so their pins stay valid), and
    /// the session store is kept if the cluster still has persistence.
    pub fn evolve(settings: BalanceSettings, previous: Option<&Cluster>) -> Self {
        let backends: Vec<Arc<Backend>> = settings
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
            settings
                .persistence
                .map(|p| match previous.and_then(|c| c.sessions.clone()) {
                    Some(t) => {
                        t.set_limits(p.ttl, p.max_entries);
                        t
                    }
                    None => {
                        // A new store counts every backend's pins from zero.
                        for b in backends.iter() {
                            b.load
                                .sessions_counter()
                                .store(0, std::sync::atomic::Ordering::Relaxed);
                        }
                        Arc::new(SessionTable::new(p.ttl, p.max_entries)) as Arc<dyn SessionStore>
                    }
                });
        if let Some(s) = &sessions {
            s.ledger()
                .set(backends.iter().map(|b| (b.id, b.load.sessions_counter())));
        }
        Cluster {
            keymap: keymap::build(&settings),
            settings,
            backends,
            sessions,
        }
    }

    /// The backend (index) a key-hashing policy (`ketama`, `maglev`) sends `key` to with
    /// every backend usable; `None` under the other policies.
    pub fn key_home(&self, key: &[u8]) -> Option<usize> {
        self.keymap.as_ref()?.place(key, &|_| true)
    }

    /// The index of the backend with `id`, if it is in this cluster.
    pub fn index_of(&self, id: u32) -> Option<usize> {
        self.backends.iter().position(|b| b.id == id)
    }

    /// The part of `key` that places and pins it: with a `hash_tag`, the bytes between the
    /// first opening tag byte and the first closing one after it, if there are any (as
    /// twemproxy does); otherwise the whole key.
    pub fn hash_key<'k>(&self, key: &'k [u8]) -> &'k [u8] {
        let Some([open, close]) = self.settings.hash_tag else {
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

    /// The session store's key for a message's key bytes (its hash tag applied): the one
    /// function requests and pushes are both keyed by.
    pub fn session_key(&self, key: &[u8]) -> u64 {
        key_hash(self.hash_key(key))
    }

    /// The session `key` (from [`Self::session_key`]) ended: its pin is released, and its
    /// backend's session count drops. Whether there was one.
    pub fn end_session(&self, key: u64) -> bool {
        self.sessions
            .as_ref()
            .is_some_and(|s| s.release(key).is_some())
    }

    /// Records the client connection `owner` as the owner of the session `key` (from
    /// [`Self::session_key`]): where the backends' unasked messages for it go.
    pub fn claim(&self, key: u64, owner: u64) {
        if let Some(s) = &self.sessions {
            s.claim(key, owner);
        }
    }
}
