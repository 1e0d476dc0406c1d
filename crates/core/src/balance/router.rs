//! Routing one message, in named steps: the key is hashed once ([`Cluster::session_key`]);
//! the **pin** is looked up (and, for a new key, recorded in the same store visit, so that
//! two workers routing a new key at once agree); what has no live pin is **placed** — by
//! the key-hashing map, or picked by the policy among backends with room; the outcome is a
//! [`Route`] value the caller carries to the send. Push ownership is a separate step
//! ([`Route::claim`]) the caller takes for the client that sent the message.
//!
//! A pinned or hashed key goes to its backend whenever that backend is up, full or not:
//! only a backend that is down, failing health checks, ejected (or, for new keys,
//! draining) makes it move — or fail, with `on_backend_down = "fail"`.

use super::cluster::Cluster;
use super::policy::Policy;
use crate::clock::now_ms;
use crate::session::PinOutcome;
use crate::settings::OnBackendDown;

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

/// How a route's backend was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// The key's live pin.
    Pinned,
    /// Placed by the policy (and pinned, with persistence).
    Placed,
    /// The key was pinned to an unusable backend (index, if still in the cluster) and is
    /// pinned to the new one now.
    Moved {
        /// The old backend, if it is still in the cluster.
        from: Option<usize>,
    },
}

/// Where one message goes, decided once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The backend (index in the cluster).
    pub backend: usize,
    /// How it was found.
    pub how: How,
    /// The message's session key in the store, when the cluster pins keys.
    pub session: Option<u64>,
    /// The client connection that owns the session now (0: none), as the pin said.
    pub owner: u64,
}

impl Route {
    /// Push ownership: makes `client` the owner of the route's session, if it is not
    /// already (so the common case costs no store visit).
    pub fn claim(&self, cluster: &Cluster, client: u64) {
        if let Some(key) = self.session.filter(|_| self.owner != client) {
            cluster.claim(key, client);
        }
    }
}

/// The outcome of routing one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// To this route's backend.
    To(Route),
    /// Its key's backend (pinned, or where the hash places it) is unusable and
    /// `on_backend_down = "fail"`.
    PinnedDown(Option<usize>),
    /// Free to go anywhere, but every backend that could take it is full right now: wait.
    Busy,
    /// No backend can take it.
    Unavailable,
}

impl Routed {
    /// The backend it goes to, if it goes somewhere.
    pub fn backend(&self) -> Option<usize> {
        match self {
            Routed::To(r) => Some(r.backend),
            _ => None,
        }
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
    /// Routes one message. `key` is its session key bytes, if it has one; `picker` this
    /// worker's policy state; `reach` what this worker's pool knows of each backend now.
    pub fn route(&self, key: Option<&[u8]>, picker: &mut dyn Policy, reach: &dyn Reach) -> Routed {
        let key = key.map(|k| self.hash_key(k));
        let now = now_ms();
        let fail = self.settings.on_backend_down == OnBackendDown::Fail;
        // Usable: may carry the messages of keys it holds.
        let usable = |i: usize| self.backends[i].available(now) && reach.up(i);
        // Open: may take new keys and freely placed messages.
        let open = |i: usize| usable(i) && !self.backends[i].draining();
        let mut place = || -> Place {
            match (&self.keymap, key) {
                (Some(map), Some(k)) => match map.place(k, &|_| true) {
                    None => Place::Nowhere,
                    Some(home) if open(home) => Place::To(home),
                    // Down, failing health checks or ejected: the key's data is there.
                    Some(home) if fail && !usable(home) => Place::HomeDown(home),
                    // Draining (or down, under repin): along the map to the next open one.
                    Some(_) => map.place(k, &open).map_or(Place::Nowhere, Place::To),
                },
                _ => match picker.pick(&self.backends, &|i| open(i) && reach.room(i)) {
                    Some(i) => Place::To(i),
                    None if (0..self.backends.len()).any(open) => Place::Busy,
                    None => Place::Nowhere,
                },
            }
        };
        let unplaced = |p: Place, session: Option<u64>| match p {
            Place::To(backend) => Routed::To(Route {
                backend,
                how: How::Placed,
                session,
                owner: 0,
            }),
            Place::Busy => Routed::Busy,
            Place::HomeDown(b) => Routed::PinnedDown(Some(b)),
            Place::Nowhere => Routed::Unavailable,
        };
        let (Some(k), Some(store)) = (key, &self.sessions) else {
            return unplaced(place(), None);
        };
        let session = crate::session::key_hash(k);
        let mut placed = Place::Nowhere;
        let outcome = store.route(
            session,
            !fail,
            &|id| self.index_of(id).is_some_and(usable),
            &mut || {
                placed = place();
                match placed {
                    Place::To(i) => Some(self.backends[i].id),
                    _ => None,
                }
            },
        );
        let route = |backend: Option<usize>, how: How, owner: u64| {
            backend.map_or(Routed::Unavailable, |backend| {
                Routed::To(Route {
                    backend,
                    how,
                    session: Some(session),
                    owner,
                })
            })
        };
        match outcome {
            PinOutcome::Hit(id, owner) => route(self.index_of(id), How::Pinned, owner),
            PinOutcome::New(id) => route(self.index_of(id), How::Placed, 0),
            PinOutcome::Moved { from, to } => route(
                self.index_of(to),
                How::Moved {
                    from: self.index_of(from),
                },
                0,
            ),
            PinOutcome::PinnedDown(id) => Routed::PinnedDown(self.index_of(id)),
            PinOutcome::Unavailable => unplaced(placed, Some(session)),
        }
    }
}
