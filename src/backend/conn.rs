//! One shared connection to one backend, as the client side uses it: a write buffer many
//! clients' requests are copied into (with the proxy's id spliced in for `by_id`), the
//! correlator of what awaits answers, and the one-way messages not yet written. Its task
//! ([`super::task`]) moves the bytes.

use super::inflight::{Kept, KeptStore, OneWay, Pending, Placed, Settled, Unwritten};
use super::probation::Probation;
use super::upstream::Upstream;
use crate::metrics::BackendCounters;
use bytes::BytesMut;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;
use switchyard_core::correlate::Correlator;
use switchyard_core::{Backend, BackendFault, ClientFault, Fault, ReplySink, Ticket};
use switchyard_proto::{Correlation, IdFormat, Span};
use tokio::sync::Notify;

/// Whether the connection takes messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    /// Connecting, first or right after losing an established connection: messages may
    /// queue (if the attempt fails they are handed back for another backend).
    Connecting,
    Connected,
    /// A connect failed; takes no messages until a reconnect succeeds.
    Down,
}

/// How a request's answer will find it on the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MsgId {
    /// In order, or not at all.
    None,
    /// `by_id`: the id field here, replaced by the proxy's own.
    Rewrite(Span),
    /// `by_id_as_sent`: the request's transaction id (its id as sent, with its key), and
    /// where the id sits (so a hand-back keeps it).
    AsSent(u64, Span),
}

/// How one message is sent, besides its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sending {
    /// It may be re-sent on probation if the connection dies after writing it.
    pub(crate) retry: bool,
    /// The session a one-way message ends once it is written (`ENDS_SESSION`).
    pub(crate) ends: Option<std::num::NonZeroU64>,
}

/// The connection's books.
#[derive(Debug)]
pub(super) struct State {
    pub(super) status: Status,
    pub(super) wbuf: BytesMut,
    /// Bytes taken from `wbuf` by the writer and not yet written.
    pub(super) writing: usize,
    /// Bytes ever queued on this connection: the stream offset of the next queued byte.
    queued_total: u64,
    /// Stream offset up to which bytes reached the socket.
    written_total: u64,
    pub(super) corr: Correlator<Pending>,
    oneway: VecDeque<OneWay>,
    /// Copies of requests in flight kept for a re-send or an error answer (at most
    /// `max_queued` bytes; empty on listeners that keep none).
    kept: KeptStore,
}

/// A shared backend connection.
#[derive(Debug)]
pub(crate) struct BackendConn {
    /// The backend's shared state.
    pub(crate) backend: Arc<Backend>,
    /// Which of the backend's pooled connections this is.
    pub(crate) slot: usize,
    correlation: Correlation,
    /// How the proxy writes its ids into requests.
    id_format: IdFormat,
    /// Bound on the bytes queued and not yet written, and on those kept for re-sending.
    max_queued: usize,
    /// The protocol's error answers repeat the request: keep every request's bytes.
    keep_requests: bool,
    pub(super) state: RefCell<State>,
    /// Requests re-sent one at a time after this connection died with them in flight.
    pub(super) probation: Probation,
    pub(super) notify: Notify,
    pub(super) retired: Cell<bool>,
    /// Reads of answers are ACKed at once (`pool.quick_ack`: set from the start, or once
    /// answers stalled; kept across reconnects).
    pub(super) quick_ack: Cell<bool>,
    /// The cluster as of the last reload.
    pub(super) upstream: RefCell<Upstream>,
    /// This worker's counters for the backend.
    pub(crate) counters: Arc<BackendCounters>,
}

impl BackendConn {
    /// A connection (not yet connected) to `backend`; requests are written as
    /// `correlation` and `id_format` say, at most `max_queued` bytes waiting.
    pub(super) fn new(
        backend: Arc<Backend>,
        slot: usize,
        (correlation, keep_requests): (Correlation, bool),
        (id_format, id_space): (IdFormat, u64),
        upstream: Upstream,
        counters: Arc<BackendCounters>,
    ) -> Self {
        BackendConn {
            counters,
            backend,
            slot,
            correlation,
            id_format,
            keep_requests,
            probation: Probation::default(),
            max_queued: upstream.config.pool.max_queued_bytes,
            state: RefCell::new(State {
                status: Status::Connecting,
                wbuf: BytesMut::new(),
                writing: 0,
                queued_total: 0,
                written_total: 0,
                corr: Correlator::new(correlation, id_space),
                oneway: VecDeque::new(),
                kept: KeptStore::default(),
            }),
            notify: Notify::new(),
            retired: Cell::new(false),
            quick_ack: Cell::new(false),
            upstream: RefCell::new(upstream),
        }
    }

    /// Whether the connection is connected, or on its first attempt, and not retired.
    pub(crate) fn accepts_messages(&self) -> bool {
        !self.retired.get() && self.state.borrow().status != Status::Down
    }

    /// Whether another message fits: queued bytes under the bound, and a free proxy id.
    pub(crate) fn has_room(&self) -> bool {
        let s = self.state.borrow();
        s.wbuf.len() + s.writing < self.max_queued && s.corr.has_room()
    }

    /// Request bytes queued and not yet written.
    pub(crate) fn queued(&self) -> usize {
        let s = self.state.borrow();
        s.wbuf.len() + s.writing
    }

    /// Requests awaiting answers on this connection.
    #[cfg(test)]
    pub(crate) fn outstanding(&self) -> usize {
        self.state.borrow().corr.len()
    }

    /// Sizes of what the connection keeps per message: the correlator's collections and the
    /// one-way messages not yet written (for the growth tests).
    #[cfg(test)]
    pub(crate) fn footprint(&self) -> (switchyard_core::correlate::Footprint, usize) {
        let s = self.state.borrow();
        (s.corr.footprint(), s.oneway.len())
    }

    /// Takes no new messages; the task closes the connection once nothing is outstanding.
    pub(crate) fn retire(&self) {
        self.retired.set(true);
        self.notify.notify_one();
    }

    /// Points the connection at a reloaded cluster.
    pub(crate) fn set_upstream(&self, upstream: Upstream) {
        *self.upstream.borrow_mut() = upstream;
    }

    /// Queues one request `frame` of the client `sink`, read at `now` (one clock read per
    /// batch of frames). With a `ticket` an answer is awaited (the client side made it);
    /// without one the message is one-way. `id` is how its answer will find it; `how`,
    /// whether it may be re-sent and what a one-way message ends. Whether it was taken: a
    /// `by_id_as_sent` duplicate is not (it is failed). The caller has checked
    /// [`Self::has_room`].
    pub(crate) fn send(
        &self,
        frame: &[u8],
        id: MsgId,
        ticket: Option<Ticket>,
        how: Sending,
        sink: &Rc<dyn ReplySink>,
        now: Instant,
    ) -> bool {
        let retry = how.retry;
        let mut s = self.state.borrow_mut();
        let start = s.queued_total;
        let len_before = s.wbuf.len();
        // A copy is kept of what may be re-sent, or what the error answer repeats, within
        // the bound: past it, requests go without (not retried; a plainer error answer).
        let keep = ticket.is_some()
            && (retry || self.keep_requests)
            && s.kept.bytes() + frame.len() <= self.max_queued;
        let pending = |ticket: Ticket, len: u32| Pending {
            sink: sink.clone(),
            ticket,
            sent: now,
            placed: Placed::new(start, len, None),
        };
        let awaits = match (ticket, self.correlation, id) {
            (Some(ticket), Correlation::InOrder, _) => {
                if let Err(p) = s.corr.register(pending(ticket, frame.len() as u32)) {
                    drop(s);
                    let internal = Fault::Internal("an in_order request was not recorded".into());
                    p.fail(&internal, None);
                    return false;
                }
                s.wbuf.extend_from_slice(frame);
                true
            }
            (Some(ticket), Correlation::ByIdAsSent, MsgId::AsSent(tx, span)) => {
                let mut p = pending(ticket, frame.len() as u32);
                p.placed.set_id_at(span);
                if let Err(p) = s.corr.register_as(p, tx) {
                    // The same id is awaiting its answer here: this client's error, never
                    // the other request's answer.
                    drop(s);
                    p.sink
                        .fail(&p.ticket, &ClientFault::DuplicateId.into(), Some(frame));
                    return false;
                }
                s.wbuf.extend_from_slice(frame);
                true
            }
            (Some(ticket), Correlation::ById, MsgId::Rewrite(span)) => {
                let start_at = span.offset as usize;
                let end_at = start_at + span.len as usize;
                let pid = match s.corr.register(pending(ticket, 0)) {
                    Ok(pid) => pid,
                    Err(p) => {
                        // The caller checked has_room(); keep the books straight anyway.
                        drop(s);
                        p.fail(&BackendFault::NoFreeId.into(), None);
                        return false;
                    }
                };
                s.wbuf.extend_from_slice(&frame[..start_at]);
                switchyard_proto::write_proxy_id(
                    self.id_format,
                    pid,
                    span.len as usize,
                    &mut s.wbuf,
                );
                let id_len = s.wbuf.len() - len_before - start_at;
                s.wbuf.extend_from_slice(&frame[end_at..]);
                let len = (s.wbuf.len() - len_before) as u32;
                if let Some(p) = s.corr.get_mut(pid) {
                    p.placed.len = len;
                    p.placed.set_id_at(Span {
                        offset: span.offset,
                        len: id_len as u32,
                    });
                }
                true
            }
            (ticket, _, _) => {
                if let Some(t) = ticket {
                    // An answer was asked of a message that cannot get one (`none`, or a
                    // `by_id` request without an id): a bug on the client side's part.
                    sink.fail(
                        &t,
                        &Fault::Internal(
                            "a request that can get no answer was sent as awaiting one".into(),
                        ),
                        Some(frame),
                    );
                }
                s.wbuf.extend_from_slice(frame);
                s.oneway.push_back(OneWay {
                    sink: sink.clone(),
                    placed: Placed::new(start, frame.len() as u32, None),
                    ends: how.ends,
                });
                false
            }
        };
        if keep && awaits {
            let in_order = self.correlation == Correlation::InOrder;
            let State { wbuf, kept, .. } = &mut *s;
            kept.keep(in_order, start, &wbuf[len_before..], retry);
        }
        s.queued_total += (s.wbuf.len() - len_before) as u64;
        drop(s);
        self.counters.on_request(frame.len());
        self.backend.load.on_sent(awaits);
        self.notify.notify_one();
        true
    }

    /// The request of `ticket` got its final answer: the session it ends, if it ends one,
    /// ends. (A request that fails ends nothing: the session keeps its pin, so its later
    /// messages still fail where it lived rather than reach a backend that never saw it.)
    pub(super) fn done(&self, ticket: &Ticket) {
        if let Some(k) = ticket.end_session {
            self.end_session(k.get());
        }
    }

    /// Session `key` (a store key) ended.
    pub(super) fn end_session(&self, key: u64) {
        self.upstream.borrow().cluster.end_session(key);
    }

    /// Queues bytes the proxy itself answers the backend with (a keep-alive's pong): no
    /// answer is awaited, nothing is handed back if the connection dies.
    pub(super) fn reply_local(&self, bytes: &[u8]) {
        let mut s = self.state.borrow_mut();
        s.wbuf.extend_from_slice(bytes);
        s.queued_total += bytes.len() as u64;
        drop(s);
        self.notify.notify_one();
    }

    /// A request was answered: its kept copy, if any, is dropped.
    #[inline]
    pub(super) fn forget(&self, p: &Pending) {
        let mut s = self.state.borrow_mut();
        if s.kept.bytes() > 0 {
            s.kept.release(p.placed.start, false);
        }
    }

    /// A request failed in place (timed out): its kept copy, if any, for its error answer.
    pub(super) fn take_kept(&self, p: &Pending) -> Option<Kept> {
        self.state.borrow_mut().kept.release(p.placed.start, true)
    }

    /// Records that `n` more bytes reached the socket; forgets one-way messages fully sent.
    pub(super) fn wrote(&self, n: usize) {
        let mut s = self.state.borrow_mut();
        s.written_total += n as u64;
        s.writing = s.writing.saturating_sub(n);
        let written = s.written_total;
        let mut ended = None;
        while s
            .oneway
            .front()
            .is_some_and(|o| o.placed.start + u64::from(o.placed.len) <= written)
        {
            if let Some(k) = s.oneway.pop_front().and_then(|o| o.ends) {
                // Rare (a client's answer ending its session): at most a few per write.
                ended.get_or_insert_with(Vec::new).push(k);
            }
        }
        drop(s);
        for k in ended.into_iter().flatten() {
            self.end_session(k.get());
        }
    }

    /// The connection is gone: requests never written go back to their clients to be
    /// routed again (if `retry`), requests written that may be re-sent are given back for
    /// probation (if `probation`), every other outstanding request fails with `lost`.
    /// `unwritten` holds the bytes from the write offset on that the writer had taken.
    pub(super) fn settle_in_flight(
        &self,
        lost: &BackendFault,
        unwritten: BytesMut,
        retry: (bool, bool),
    ) -> Settled {
        let (pending, oneway, rest) = {
            let mut s = self.state.borrow_mut();
            let mut tail = unwritten;
            tail.extend_from_slice(&s.wbuf);
            s.wbuf.clear();
            s.writing = 0;
            let written = s.written_total;
            debug_assert_eq!(written + tail.len() as u64, s.queued_total);
            s.written_total = s.queued_total;
            let mut kept = std::mem::take(&mut s.kept);
            (
                s.corr
                    .drain()
                    .into_iter()
                    .map(|p| {
                        let k = kept.release(p.placed.start, true);
                        (p, k)
                    })
                    .collect::<Vec<_>>(),
                std::mem::take(&mut s.oneway)
                    .into_iter()
                    .collect::<Vec<_>>(),
                Unwritten {
                    tail: tail.freeze(),
                    written,
                },
            )
        };
        super::inflight::settle(pending, oneway, &rest, retry, lost, &|| {
            self.backend.load.on_failed()
        })
    }

    pub(super) fn set_status(&self, status: Status) {
        self.state.borrow_mut().status = status;
    }

    /// The fault of a request lost with this connection: the backend's name and why.
    pub(super) fn lost(&self, reason: &str) -> BackendFault {
        BackendFault::Lost {
            backend: self.backend.name.clone(),
            reason: reason.to_string(),
        }
    }

    /// Passive health: one more failure of this backend.
    pub(super) fn report_failure(&self, what: &str) {
        let cluster = self.upstream.borrow().cluster.clone();
        if let Some(i) = cluster.index_of(self.backend.id) {
            cluster.report_failure(i, what);
        }
    }

    /// Retired, and nothing left to write or to wait for: the task may end.
    pub(super) fn idle_and_retired(&self) -> bool {
        let s = self.state.borrow();
        self.retired.get() && s.corr.is_empty() && s.wbuf.is_empty() && s.writing == 0
    }
}
