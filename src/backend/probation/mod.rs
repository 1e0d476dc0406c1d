//! Poison isolation. A shared backend connection that dies takes every request in flight on
//! it along; usually one of them killed it (a request the server closes on), and the rest
//! are bystanders. The requests that may be repeated (the listener's
//! `retry_on_backend_close`, and the protocol's say per request) are re-sent here, each
//! **alone** on a probation connection ([`lane`]): a request whose answer comes is
//! answered; a request that kills a fresh probation connection too is a suspect.
//!
//! Why alone, rather than bisecting the set: a bystander must reach the backend at most
//! twice, and bisection re-sends the half that dies again, three times and more; one at a
//! time on a connection of its own sends each exactly once more, and a death points at
//! exactly one request. A lane reuses its connection for the next request while it is
//! open; if a reused connection dies the verdict is unsure (the server may have closed it
//! after the previous answer), so that request goes once more alone on a fresh connection
//! instead of being suspected.
//!
//! Suspects are judged when the lanes are done (after waiting up to [`JUDGE_WAIT`] for a
//! sign of life): if the backend answered anything since the probation began, on any
//! connection of any worker, it is alive and the suspect is the poison: it fails as
//! [`ClientFault::Poison`] (its client gets the error answer and is then closed, or is
//! closed where there is none), is logged with its client's address, and is never sent
//! again. If the backend answered nothing, it may just be down, or behind something that
//! accepts and closes: the suspect fails as lost, blamed on nobody.
//!
//! Order: requests are queued one of each client in turn, and a client has at most one
//! request on the lanes at a time, so its retried requests keep their order and a garbage
//! sender's many frames cannot kill several lanes at once; once a client is a suspect, its
//! other requests on probation are not re-sent.
//!
//! Cost: nothing while no connection dies (no task, no connection, a few cells). Bounds: at
//! most [`LANES`] probation connections per shared connection at once; at most
//! `max_queued_bytes` of requests waiting (the rest fail in place); and a backend that kills
//! [`KILLS_IN_A_ROW`] fresh probation connections in a row, each with one request alone on
//! it and no answer anywhere between, closes on everything: probation stops, what waits
//! fails as lost, the backend counts one failure for outlier detection, and the
//! connection's next losses fail their requests in place for a hold-off (1 s, doubling each
//! time, to 60 s). A probation that finds the backend answering nothing holds off the same
//! way.

mod lane;

use super::conn::BackendConn;
use super::inflight::Retry;
use crate::registry::Registry;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};
use switchyard_core::{ClientFault, Fault};
use switchyard_proto::Protocols;

/// Probation connections per shared connection, at most, at once.
pub(super) const LANES: usize = 4;
/// Fresh probation connections killed in a row (each by one request alone on it, no answer
/// between) after which the backend is taken to close on every request.
pub(super) const KILLS_IN_A_ROW: u32 = 3;
/// The first hold-off after probation stopped; it doubles each time, up to [`MAX_HOLD_OFF`].
const HOLD_OFF: Duration = Duration::from_secs(1);
const MAX_HOLD_OFF: Duration = Duration::from_secs(60);
/// How long suspects wait, once the lanes are done, for the backend to answer anything
/// (showing it is alive, so they are the poison) before they fail as lost instead.
const JUDGE_WAIT: Duration = Duration::from_secs(1);

/// One shared connection's probation: what waits to be re-sent, and the storm guard.
#[derive(Debug, Default)]
pub(crate) struct Probation {
    queue: RefCell<VecDeque<Retry>>,
    queued_bytes: Cell<usize>,
    lanes: Cell<usize>,
    kills_in_a_row: Cell<u32>,
    /// The backend's answers counted at the last kill.
    answered_at_kill: Cell<u64>,
    /// Probation is off until then: it stopped, the backend closing on everything.
    held_until: Cell<Option<Instant>>,
    /// The next hold-off (zero: [`HOLD_OFF`]).
    hold_off: Cell<Duration>,
    /// Requests that killed a fresh probation connection alone, with how it ended: judged
    /// when the lanes are done.
    suspects: RefCell<Vec<(Retry, String)>>,
    /// The backend's answers counted (by every worker) when the lanes started.
    answered_at_start: Cell<u64>,
    /// Clients with a request on a lane now (at most [`LANES`]).
    busy: RefCell<Vec<u64>>,
}

impl Probation {
    /// Whether a lost connection's requests may go on probation at `now`.
    pub(super) fn open(&self, now: Instant) -> bool {
        self.held_until.get().is_none_or(|t| now >= t)
    }

    /// Queues `requests` (each already told its client it is retrying) within `max_bytes`;
    /// the rest fail with `lost`. Returns how many were queued. They are queued taking one
    /// request of each client in turn (each client's in its own order), so that a client
    /// with many requests in flight (a garbage sender's frames, say) does not make a run of
    /// deaths in a row that looks like a backend closing on everything.
    pub(super) fn admit(
        &self,
        requests: Vec<Retry>,
        (max_bytes, conn): (usize, &BackendConn),
        lost: &Fault,
    ) -> usize {
        let mut q = self.queue.borrow_mut();
        let mut taken = 0;
        for p in interleave(requests) {
            let len = p.bytes.len();
            if self.queued_bytes.get() + len > max_bytes {
                p.fail(lost, conn);
                p.sink().retrying(false);
                continue;
            }
            self.queued_bytes.set(self.queued_bytes.get() + len);
            q.push_back(p);
            taken += 1;
        }
        taken
    }

    /// Whether a request of `client` is a suspect of this probation: that client's other
    /// requests are not re-sent (it sends what the backend closes on).
    fn suspected(&self, client: u64) -> bool {
        self.suspects
            .borrow()
            .iter()
            .any(|(p, _)| p.sink().client_id() == client)
    }

    /// The oldest waiting request of a client none of whose requests is on a lane now
    /// (so one client's requests go one after another: a garbage sender's frames cannot
    /// kill several lanes at once, and a client's retried requests keep their order); the
    /// client is marked busy until [`Self::release`].
    fn next(&self) -> Option<Retry> {
        let mut q = self.queue.borrow_mut();
        let mut busy = self.busy.borrow_mut();
        let i = q
            .iter()
            .position(|p| !busy.contains(&p.sink().client_id()))?;
        let p = q.remove(i)?;
        busy.push(p.sink().client_id());
        self.queued_bytes
            .set(self.queued_bytes.get().saturating_sub(p.bytes.len()));
        Some(p)
    }

    /// A fresh probation connection died with one request alone on it; returns how many
    /// did in a row, with no answer from the backend between (on any connection of any
    /// worker: a backend that answers others is not closing on everything).
    fn killed(&self, conn: &BackendConn) -> u32 {
        let answered = conn.backend.load.answered();
        let kills = if answered == self.answered_at_kill.get() {
            self.kills_in_a_row.get() + 1
        } else {
            1
        };
        self.answered_at_kill.set(answered);
        self.kills_in_a_row.set(kills);
        kills
    }

    /// Whether `conn`'s backend answered anything, on any connection of any worker, since
    /// the lanes started.
    fn backend_answered(&self, conn: &BackendConn) -> bool {
        conn.backend.load.answered() > self.answered_at_start.get()
    }

    /// Every waiting request, busy clients' too (probation is over for them).
    fn take_all(&self) -> Vec<Retry> {
        self.queued_bytes.set(0);
        self.queue.borrow_mut().drain(..).collect()
    }

    /// Holds probation off (it stopped, or found the backend answering nothing): losses
    /// fail in place until then; the hold-off doubles each time. Returns its length.
    fn hold(&self) -> Duration {
        let hold = match self.hold_off.get() {
            d if d.is_zero() => HOLD_OFF,
            d => d,
        };
        self.held_until.set(Some(Instant::now() + hold));
        self.hold_off.set((hold * 2).min(MAX_HOLD_OFF));
        self.kills_in_a_row.set(0);
        hold
    }

    /// `client`'s request on a lane is settled.
    fn release(&self, client: u64) {
        let mut busy = self.busy.borrow_mut();
        if let Some(i) = busy.iter().position(|&c| c == client) {
            busy.swap_remove(i);
        }
    }
}

/// `requests` reordered one of each client in turn, each client's in their order.
fn interleave(requests: Vec<Retry>) -> Vec<Retry> {
    let mut index: HashMap<u64, usize> = HashMap::new();
    let mut by_client: Vec<(u64, VecDeque<Retry>)> = Vec::new();
    for p in requests {
        let id = p.sink().client_id();
        let i = *index.entry(id).or_insert_with(|| {
            by_client.push((id, VecDeque::new()));
            by_client.len() - 1
        });
        by_client[i].1.push_back(p);
    }
    let mut out = Vec::new();
    while !by_client.is_empty() {
        by_client.retain_mut(|(_, v)| {
            if let Some(p) = v.pop_front() {
                out.push(p);
            }
            !v.is_empty()
        });
    }
    out
}

/// Starts lanes for what waits on `conn`'s probation, up to [`LANES`] at once.
pub(super) fn start(
    conn: &Rc<BackendConn>,
    protocols: &Protocols,
    max_frame: usize,
    registry: &Rc<Registry>,
) {
    let p = &conn.probation;
    let want = p.queue.borrow().len().min(LANES);
    if p.lanes.get() == 0 {
        p.answered_at_start.set(conn.backend.load.answered());
    }
    while p.lanes.get() < want {
        p.lanes.set(p.lanes.get() + 1);
        tokio::task::spawn_local(lane::lane(
            conn.clone(),
            protocols.clone(),
            max_frame,
            registry.clone(),
        ));
    }
}

/// The lanes are done: each suspect killed a fresh connection alone. If the backend
/// answered anything since the lanes started (a bystander here, or any request on any
/// connection of any worker), it is alive and the suspect is the poison; if it answered
/// nothing, it may simply be down (or behind something that accepts and closes), and the
/// suspect fails as lost, blamed on nobody.
fn judge(conn: &BackendConn, registry: &Registry) {
    let suspects = std::mem::take(&mut *conn.probation.suspects.borrow_mut());
    if suspects.is_empty() {
        return;
    }
    let alive = conn.probation.backend_answered(conn);
    if !alive {
        // As good as closing on everything: the next losses fail in place for a while.
        let hold = conn.probation.hold();
        tracing::warn!(
            backend = %conn.backend.name,
            failed = suspects.len(),
            hold_off = ?hold,
            "probation found the backend answering nothing: what it re-sent fails as lost, blamed on nobody"
        );
        conn.report_failure("answers nothing");
    }
    for (p, reason) in suspects {
        if alive {
            conn.counters.poisoned.inc();
            blame(conn, &p, &reason);
        } else {
            p.fail(
                &lost(
                    conn,
                    &format!(
                        "{reason}, again when re-sent alone, and the backend answered nothing since"
                    ),
                ),
                conn,
            );
        }
        p.sink().retrying(false);
    }
    registry.flush_clients();
}

/// The fault of a request lost with its connection to `conn`'s backend.
fn lost(conn: &BackendConn, reason: &str) -> Fault {
    conn.lost(reason).into()
}

/// `p` killed a fresh probation connection alone: it is the poison.
fn blame(conn: &BackendConn, p: &Retry, reason: &str) {
    let fault = ClientFault::Poison {
        backend: conn.backend.name.clone(),
        reason: reason.to_string(),
    };
    let client = p.sink().peer().to_string();
    if let Some(suppressed) = crate::throttle::admit(&[&conn.backend.name, "poison", &client]) {
        tracing::warn!(
            backend = %conn.backend.name,
            client = %client,
            conn = p.sink().client_id(),
            reason,
            suppressed,
            "a request closed its backend connection again when sent alone: failing it, never to be sent again"
        );
    }
    let fault = fault.into();
    p.fail(&fault, conn);
    p.sink().end_after_answers(&fault);
}

/// The backend closed [`KILLS_IN_A_ROW`] fresh connections in a row, each on one request
/// alone: it closes on everything. What waits fails as lost; probation is held off.
fn stop(conn: &BackendConn, reason: &str) {
    let p = &conn.probation;
    let hold = p.hold();
    let fault = lost(
        conn,
        &format!(
            "{reason}; the backend closed {KILLS_IN_A_ROW} probation connections in a row, each on one request alone, so it closes on everything and retrying stopped"
        ),
    );
    let mut failed = 0;
    let suspects = std::mem::take(&mut *p.suspects.borrow_mut());
    for rest in suspects.into_iter().map(|(p, _)| p).chain(p.take_all()) {
        rest.fail(&fault, conn);
        rest.sink().retrying(false);
        failed += 1;
    }
    conn.counters.probations_stopped.inc();
    tracing::warn!(
        backend = %conn.backend.name,
        failed,
        hold_off = ?hold,
        "probation stopped: the backend closes on every request; losses fail in place until the hold-off ends"
    );
    conn.report_failure("closes on every request");
}
