//! Routing one message, in named steps: the key is hashed once ([`Cluster::session_key`]);
//! the **pin** is looked up (`Now::pin`; for a new key, recorded in the same store visit,
//! so that two workers routing a new key at once agree); what has no live pin is
//! **placed** (`Now::place`) — by the key-hashing map, or picked by the policy among
//! backends with room; the outcome is a [`Route`] value the caller carries to the send.
//! Push ownership is a separate step ([`Route::claim`]) the caller takes for the client
//! that sent the message.
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
    #[inline]
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
    /// It answers a backend's request, and its session has no live pin: no backend asked.
    NoSession,
}

impl Routed {
    /// The backend it goes to, if it goes somewhere.
    #[inline]
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

impl Place {
    /// The outcome for a message placed without a live pin.
    fn routed(self, session: Option<u64>) -> Routed {
        match self {
            Place::To(backend) => Routed::To(Route {
                backend,
                how: How::Placed,
                session,
                owner: 0,
            }),
            Place::Busy => Routed::Busy,
            Place::HomeDown(b) => Routed::PinnedDown(Some(b)),
            Place::Nowhere => Routed::Unavailable,
        }
    }
}

impl Cluster {
    /// Routes one message. `key` is its session key bytes, if it has one; `picker` this
    /// worker's policy state; `reach` what this worker's pool knows of each backend now.
    pub fn route(&self, key: Option<&[u8]>, picker: &mut dyn Policy, reach: &dyn Reach) -> Routed {
        self.route_at(key, picker, reach, now_ms())
    }

    /// [`Cluster::route`] at a time the caller read already, in [`crate::clock`]
    /// milliseconds (see [`crate::clock::ms_at`]).
    pub fn route_at(
        &self,
        key: Option<&[u8]>,
        picker: &mut dyn Policy,
        reach: &dyn Reach,
        ms: u64,
    ) -> Routed {
        let key = key.map(|k| self.hash_key(k));
        let fail = self.settings.on_backend_down == OnBackendDown::Fail;
        let now = Now::at(self, reach, ms, fail);
        match (key, &self.sessions) {
            (Some(k), Some(_)) => now.pin(k, picker),
            _ => now.place(key, picker).routed(None),
        }
    }

    /// Routes a client's answer to a request a backend sent (a SIP 200 to a server's BYE):
    /// to the backend its session (`key`) is pinned to, never placed anew. Clusters without
    /// persistence place it as any message (a key-hashing policy finds the same backend).
    pub fn route_answer(
        &self,
        key: Option<&[u8]>,
        picker: &mut dyn Policy,
        reach: &dyn Reach,
        ms: u64,
    ) -> Routed {
        let Some(store) = &self.sessions else {
            return self.route_at(key, picker, reach, ms);
        };
        // Without a key no session can be found: no backend is waiting for it.
        let Some(k) = key else {
            return Routed::NoSession;
        };
        let session = self.session_key(k);
        let Some(i) = store.backend_of(session).and_then(|id| self.index_of(id)) else {
            return Routed::NoSession;
        };
        if !Now::at(self, reach, ms, true).usable(i) {
            return Routed::PinnedDown(Some(i));
        }
        Routed::To(Route {
            backend: i,
            how: How::Pinned,
            session: Some(session),
            owner: 0,
        })
    }

    /// Routes a one-way request (a codec's `ONE_WAY`: SIP's ACK): to its session's live pin
    /// as any message, but a key without one is placed without pinning it, so that a
    /// message nothing answers never leaves a pin behind (the ACK of a call that failed,
    /// whose pin ended with its final answer).
    pub fn route_one_way(
        &self,
        key: Option<&[u8]>,
        picker: &mut dyn Policy,
        reach: &dyn Reach,
        ms: u64,
    ) -> Routed {
        if let (Some(store), Some(k)) = (&self.sessions, key) {
            if store.backend_of(self.session_key(k)).is_none() {
                let fail = self.settings.on_backend_down == OnBackendDown::Fail;
                let k = self.hash_key(k);
                return Now::at(self, reach, ms, fail)
                    .place(Some(k), picker)
                    .routed(None);
            }
        }
        self.route_at(key, picker, reach, ms)
    }
}

/// The cluster as one message sees it: its backends' state now.
struct Now<'a> {
    cluster: &'a Cluster,
    reach: &'a dyn Reach,
    ms: u64,
    /// `on_backend_down = "fail"`.
    fail: bool,
}

impl<'a> Now<'a> {
    /// `cluster` as `reach` sees it at `ms`; `fail`: `on_backend_down = "fail"`.
    fn at(cluster: &'a Cluster, reach: &'a dyn Reach, ms: u64, fail: bool) -> Self {
        Now {
            cluster,
            reach,
            ms,
            fail,
        }
    }

    /// Usable: may carry the messages of keys it holds.
    fn usable(&self, i: usize) -> bool {
        self.cluster.backends[i].available(self.ms) && self.reach.up(i)
    }

    /// Open: may take new keys and freely placed messages.
    fn open(&self, i: usize) -> bool {
        self.usable(i) && !self.cluster.backends[i].draining()
    }

    /// Step **place**: where a message without a live pin goes: its hashed key's home (or
    /// the next open backend along the map), else the policy's pick among open backends
    /// with room.
    fn place(&self, key: Option<&[u8]>, picker: &mut dyn Policy) -> Place {
        let c = self.cluster;
        match (&c.keymap, key) {
            (Some(map), Some(k)) => match map.place(k, &|_| true) {
                None => Place::Nowhere,
                Some(home) if self.open(home) => Place::To(home),
                // Down, failing health checks or ejected: the key's data is there.
                Some(home) if self.fail && !self.usable(home) => Place::HomeDown(home),
                // Draining (or down, under repin): along the map to the next open one.
                Some(_) => map
                    .place(k, &|i| self.open(i))
                    .map_or(Place::Nowhere, Place::To),
            },
            _ => match picker.pick(&c.backends, &|i| self.open(i) && self.reach.room(i)) {
                Some(i) => Place::To(i),
                None if (0..c.backends.len()).any(|i| self.open(i)) => Place::Busy,
                None => Place::Nowhere,
            },
        }
    }

    /// Step **pin**: the key's live pin, or — in the same store visit, so that two workers
    /// routing a new key at once agree — the place found for it, recorded as its pin.
    fn pin(&self, k: &[u8], picker: &mut dyn Policy) -> Routed {
        let c = self.cluster;
        let store = c
            .sessions
            .as_ref()
            .expect("pin is called for clusters that pin");
        let session = crate::session::key_hash(k);
        let mut placed = Place::Nowhere;
        let outcome = store.route(
            session,
            self.ms,
            !self.fail,
            &|id| c.index_of(id).is_some_and(|i| self.usable(i)),
            &mut || {
                placed = self.place(Some(k), picker);
                match placed {
                    Place::To(i) => Some(c.backends[i].id),
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
            PinOutcome::Hit(id, owner) => route(c.index_of(id), How::Pinned, owner),
            PinOutcome::New(id) => route(c.index_of(id), How::Placed, 0),
            PinOutcome::Moved { from, to } => route(
                c.index_of(to),
                How::Moved {
                    from: c.index_of(from),
                },
                0,
            ),
            PinOutcome::PinnedDown(id) => Routed::PinnedDown(c.index_of(id)),
            PinOutcome::Unavailable => placed.routed(Some(session)),
        }
    }
}
