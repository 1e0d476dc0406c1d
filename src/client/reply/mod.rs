//! The reply handle of one client connection: the only way the backend side reaches a
//! client (it implements `ReplySink`). It owns the client's side of every request in
//! flight: their numbering ([`window`], which also restores request order for `in_order`
//! listeners), split requests gathering their parts ([`gather`]), the answers waiting for
//! the socket and the socket's write half ([`output`]), requests handed back to be routed
//! again, and why the client must close, if it must.

mod gather;
mod output;
mod sampled;
mod sink;
mod window;

pub(crate) use gather::Members;

use crate::access_log::{AccessLog, Sample};
use crate::metrics::ListenerCounters;
use crate::registry::Registered;
use bytes::Bytes;
use gather::Splits;
use output::Output;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use switchyard_core::{ClientFault, CloseReason, Fault, SmallBytes, Ticket};
use switchyard_proto::{Correlation, Failure, Key, Merge, Protocol, Span};
use tokio::sync::Notify;
use window::Window;

/// A request to route (again): handed back by a lost backend connection before it was
/// written, or a part of a split request waiting its turn.
#[derive(Debug, Clone)]
pub(crate) struct Requeued {
    /// The frame as the client sent it (the client's own id restored).
    pub(crate) frame: Bytes,
    /// Where its id sits, for `by_id`.
    pub(crate) id: Option<Span>,
    /// Its ticket, if it awaits an answer (it keeps its place in the client's order).
    pub(crate) ticket: Option<Ticket>,
    /// Its key, where known (else the listener's protocol finds it again).
    pub(crate) key: Option<Key>,
    /// It may reach a backend twice (a read): re-sent on probation if its connection dies.
    pub(crate) repeatable: bool,
}

/// One client connection as the backend side sees it.
pub(crate) struct Client {
    /// Process-wide connection id: worker index in the top bits, a counter below.
    pub(crate) gid: u64,
    /// The client's address (the real one, from a PROXY header, if the listener reads
    /// them).
    pub(crate) peer: SocketAddr,
    /// Its IP address hashed, for the `source` policy.
    pub(crate) source: u64,
    /// The listener's request protocol: error answers, and merging split answers.
    protocol: Arc<dyn Protocol>,
    /// Answers go out in request order (`in_order`); otherwise as they come (`by_id`).
    ordered: bool,
    /// Answers carry the proxy's ids, to be replaced by the client's own (`by_id`).
    rewrites_ids: bool,
    /// A failed request without an error answer is dropped (`on_unanswerable = "drop"`),
    /// not its client closed.
    drop_unanswerable: bool,
    /// The client's id is kept with each request: always out of order (it is restored on
    /// the answer), in order only when the error answer carries it.
    keep_ids: bool,
    max_reply_buffer: usize,
    out: Output,
    order: RefCell<Window>,
    splits: RefCell<Splits>,
    requeued: RefCell<VecDeque<Requeued>>,
    inflight: Cell<usize>,
    /// Requests of this client being re-sent on probation after their backend connection
    /// died.
    retrying: Cell<usize>,
    /// Set once: why this client must be closed.
    failed: RefCell<Option<Fault>>,
    /// Why this client must be closed once its answers are out, reading nothing more.
    finish: RefCell<Option<Fault>>,
    closed: Cell<bool>,
    notify: Notify,
    /// Bytes of the client's input that are not yet a whole frame (set by its task).
    partial: Cell<usize>,
    /// Its listener's counters on this worker.
    pub(crate) counters: Arc<ListenerCounters>,
    /// The request the access log follows, if any (at most one per client at a time).
    sample: RefCell<Option<(Arc<AccessLog>, Sample)>>,
    /// Whether `sample` holds one (read per answer, without a borrow).
    sampling: Cell<bool>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("gid", &self.gid)
            .field("peer", &self.peer)
            .field("inflight", &self.inflight.get())
            .finish()
    }
}

impl Client {
    /// A client of a listener speaking `protocol`, whose answers find their requests as
    /// `correlation` says (a failed request without an error answer dropped, if
    /// `drop_unanswerable`) and whose unread answers may grow to `max_reply_buffer` bytes.
    pub(crate) fn new(
        gid: u64,
        peer: SocketAddr,
        protocol: Arc<dyn Protocol>,
        (correlation, drop_unanswerable): (Correlation, bool),
        max_reply_buffer: usize,
        counters: Arc<ListenerCounters>,
    ) -> Self {
        let ordered = correlation == Correlation::InOrder;
        Client {
            gid,
            peer,
            source: switchyard_core::balance::source_hash(peer.ip()),
            rewrites_ids: correlation == Correlation::ById,
            drop_unanswerable: drop_unanswerable && !ordered,
            keep_ids: !ordered || protocol.error_answer_needs_id(),
            protocol,
            ordered,
            max_reply_buffer,
            out: Output::default(),
            order: RefCell::default(),
            splits: RefCell::default(),
            requeued: RefCell::default(),
            inflight: Cell::new(0),
            retrying: Cell::new(0),
            failed: RefCell::new(None),
            finish: RefCell::new(None),
            closed: Cell::new(false),
            notify: Notify::new(),
            partial: Cell::new(0),
            counters,
            sample: RefCell::new(None),
            sampling: Cell::new(false),
        }
    }

    /// Gives the handle the stream it writes answers to.
    pub(crate) fn attach(&self, writer: Rc<crate::transport::Stream>) {
        self.out.attach(writer)
    }

    /// Writes what the socket takes now; whether everything is written. A write error
    /// marks the client failed.
    pub(crate) fn flush(&self) -> bool {
        match self.out.flush(&self.counters.bytes_out) {
            Ok(done) => done,
            Err(e) => {
                self.mark_failed(ClientFault::Io(e).into());
                false
            }
        }
    }

    /// Set by the client task: whether it must be woken for every answer, and whether it
    /// is the one waiting to write.
    pub(crate) fn set_waiting(&self, on_answers: bool, on_socket: bool) {
        self.out.wake_on_answer.set(on_answers);
        self.out.write_blocked.set(on_socket);
    }

    /// Requests sent and not yet answered or failed.
    pub(crate) fn inflight(&self) -> usize {
        self.inflight.get()
    }

    /// Whether the client must send nothing now: its answers come in request order and a
    /// request it sent earlier is being re-sent on probation, which nothing newer may
    /// overtake at the backend (a `GET` retried after a later `SET` would read the write).
    pub(crate) fn held_for_retry(&self) -> bool {
        self.ordered && self.retrying.get() > 0
    }

    /// Records a request that awaits an answer; returns its place in the client's order.
    pub(crate) fn begin_request(&self) -> u64 {
        self.inflight.set(self.inflight.get() + 1);
        self.order.borrow_mut().next_seq()
    }

    fn finish_request(&self) {
        self.inflight.set(self.inflight.get().saturating_sub(1));
    }

    /// The ticket of a request about to be sent: a new one (a new place in the client's
    /// order) unless `given` (a retry, or a part of a split request). `id` and `key` are
    /// the request's id and key bytes, kept for the answer and the error answer.
    pub(crate) fn ticket(
        &self,
        given: Option<Ticket>,
        id: Option<&[u8]>,
        key: Option<&[u8]>,
    ) -> Ticket {
        if let Some(t) = given {
            return t;
        }
        Ticket {
            seq: self.begin_request(),
            part: None,
            orig_id: id.filter(|_| self.keep_ids).map(SmallBytes::new),
            key: key
                .filter(|_| self.protocol.error_answer_needs_key())
                .map(SmallBytes::new),
            end_session: None,
        }
    }

    /// Starts a request split into `parts` parts whose answers merge with `merge`;
    /// returns its sequence number.
    pub(crate) fn begin_split(&self, parts: usize, merge: Merge) -> u64 {
        let seq = self.begin_request();
        self.splits.borrow_mut().begin(seq, parts, merge);
        seq
    }

    /// Part `part` of split request `seq` is sent as one request joined from `members`
    /// (so its answer is cut per member, and a retry splits it again).
    pub(crate) fn joined(&self, seq: u64, part: u16, members: Members) {
        self.splits.borrow_mut().joined(seq, part, members);
    }

    /// Answers the next request from the proxy itself, in its place in the client's order
    /// (at once where answers need no order).
    pub(crate) fn reply_local(&self, answer: &[u8]) {
        if !self.ordered {
            self.write_unordered(answer);
            return;
        }
        let seq = self.begin_request();
        self.answer_in_order(seq, answer, true);
    }

    /// Whether a failed request without an error answer costs the client its connection:
    /// where answers go out in request order (a missing one would shift every later
    /// answer onto the wrong request), or the listener says so (`on_unanswerable =
    /// "close"`). Otherwise it is dropped, logged and counted, and the client's other
    /// sessions go on.
    fn must_close_unanswered(&self, ticket: &Ticket) -> bool {
        !self.drop_unanswerable || ticket.part.is_some()
    }

    /// A message is dropped unanswered for `fault`: counted, and logged (throttled).
    pub(crate) fn dropped(&self, fault: &Fault, what: &str) {
        let reason = CloseReason::Fault(fault.clone());
        self.counters.dropped[crate::metrics::close_index(&reason)].inc();
        if let Some(suppressed) = crate::throttle::admit(&[what, &fault.to_string()]) {
            tracing::warn!(client = %self.peer, conn = %crate::registry::conn_name(self.gid), %fault, suppressed, "dropping {what}");
        }
    }

    /// Request `ticket` failed before it was sent, or a request the proxy refuses:
    /// answered with the protocol's error answer in its place, or `Err` with the fault
    /// when the protocol has none (the client must then close). `request`: its bytes, if
    /// at hand.
    pub(crate) fn refuse(
        &self,
        ticket: &Ticket,
        fault: &Fault,
        request: Option<&[u8]>,
    ) -> Result<(), Fault> {
        match self.error_answer(ticket, fault, request) {
            Some(answer) => {
                self.deliver(ticket, &answer);
                self.notify.notify_one();
                Ok(())
            }
            None if self.must_close_unanswered(ticket) => {
                self.finish_request();
                Err(fault.clone())
            }
            None => {
                self.finish_request();
                self.dropped(fault, "a failed request that has no error answer");
                self.notify.notify_one();
                Ok(())
            }
        }
    }

    /// A message that awaits no answer (memcache `noreply`, a SIP ACK, a `none` listener's)
    /// could not be routed: dropped, counted and logged; its client, told nothing of a
    /// one-way message either way, stays connected.
    pub(crate) fn refuse_unanswered(&self, fault: &Fault) {
        self.dropped(fault, "a one-way message");
    }

    /// The protocol's error answer for `ticket`'s request, if it has one.
    fn error_answer(
        &self,
        ticket: &Ticket,
        fault: &Fault,
        request: Option<&[u8]>,
    ) -> Option<Bytes> {
        let reason = fault.to_string();
        let failure = Failure {
            id: ticket.orig_id.as_ref().map(SmallBytes::as_slice),
            key: ticket.key.as_ref().map(SmallBytes::as_slice),
            reason: &reason,
            request,
        };
        match self.protocol.error_answer(&failure) {
            Ok(answer) => answer,
            Err(e) => {
                if let Some(suppressed) = crate::throttle::admit(&[&e]) {
                    tracing::warn!(
                        suppressed,
                        "{e}; the request has no error answer (on_unanswerable applies)"
                    );
                }
                None
            }
        }
    }

    /// An answer (or error answer) for `ticket`'s request, put in its place.
    fn deliver(&self, ticket: &Ticket, answer: &[u8]) {
        match ticket.part {
            Some(part) => self.answer_part(ticket.seq, part, answer),
            None if self.ordered => self.answer_in_order(ticket.seq, answer, true),
            None => self.answer_unordered(answer),
        }
    }

    /// The answer to part `part` of split request `seq`; the merged answer goes out once
    /// every part is in.
    fn answer_part(&self, seq: u64, part: u16, frame: &[u8]) {
        let merged = self
            .splits
            .borrow_mut()
            .answer(seq, part, frame, &*self.protocol);
        if let Some(m) = merged {
            self.answer_in_order(seq, &m, true);
        }
    }

    /// An answer to request `seq` (`last`: its final one), in the client's order.
    fn answer_in_order(&self, seq: u64, frame: &[u8], last: bool) {
        if last {
            self.finish_request();
        }
        if self.gone() {
            return;
        }
        self.counters.messages_out.inc();
        self.order
            .borrow_mut()
            .deliver(seq, frame, last, &mut self.out.buf.borrow_mut());
        self.check_bound();
    }

    /// An answer of a listener whose answers need no reordering (`by_id`): out as it is.
    fn answer_unordered(&self, frame: &[u8]) {
        self.finish_request();
        self.write_unordered(frame);
    }

    /// An answer out as it is, the request left as it was (a provisional answer, or the
    /// rest of [`Self::answer_unordered`]).
    fn write_unordered(&self, frame: &[u8]) {
        if self.gone() {
            return;
        }
        self.counters.messages_out.inc();
        self.out.buf.borrow_mut().extend_from_slice(frame);
        self.check_bound();
    }

    /// The answer to a `by_id` request: `frame` with the id field at `id` replaced by the
    /// client's own id bytes; `last`: its final answer.
    fn answer_by_id(&self, frame: &[u8], id: Span, client_id: &[u8], last: bool) {
        if last {
            self.finish_request();
        }
        if self.gone() {
            return;
        }
        self.counters.messages_out.inc();
        let start = id.offset as usize;
        let end = start + id.len as usize;
        let mut out = self.out.buf.borrow_mut();
        out.extend_from_slice(&frame[..start]);
        out.extend_from_slice(client_id);
        out.extend_from_slice(&frame[end..]);
        drop(out);
        self.check_bound();
    }

    /// Queues a part of a split request to be routed (ahead of later requests).
    pub(crate) fn queue_part(&self, r: Requeued) {
        self.requeued.borrow_mut().push_back(r);
    }

    /// The oldest request waiting to be routed again, if any.
    pub(crate) fn take_requeued(&self) -> Option<Requeued> {
        self.requeued.borrow_mut().pop_front()
    }

    /// Puts a request back at the front (it could not be routed yet).
    pub(crate) fn untake_requeued(&self, r: Requeued) {
        self.requeued.borrow_mut().push_front(r);
    }

    /// Whether requests wait to be routed again.
    pub(crate) fn has_requeued(&self) -> bool {
        !self.requeued.borrow().is_empty()
    }

    /// Marks the client for closing (the first reason wins) and wakes its task.
    pub(crate) fn mark_failed(&self, fault: Fault) {
        self.failed.borrow_mut().get_or_insert(fault);
        self.notify.notify_one();
    }

    fn gone(&self) -> bool {
        self.closed.get() || self.failed.borrow().is_some()
    }

    fn check_bound(&self) {
        let held = self.out.buf.borrow().len() + self.order.borrow().held_bytes();
        if held > self.max_reply_buffer && self.failed.borrow().is_none() {
            *self.failed.borrow_mut() = Some(
                ClientFault::NotReading {
                    held,
                    max: self.max_reply_buffer,
                }
                .into(),
            );
        }
    }

    /// Why the connection must end once its answers are out, if it must (taken once).
    pub(crate) fn take_finish(&self) -> Option<Fault> {
        self.finish.borrow_mut().take()
    }

    /// Why the connection must close, if it must.
    pub(crate) fn failure(&self) -> Option<CloseReason> {
        self.failed.borrow().clone().map(CloseReason::Fault)
    }

    /// Whether answers are waiting for the socket.
    pub(crate) fn has_output(&self) -> bool {
        self.out.pending()
    }

    /// Marks the connection closed: later answers are discarded.
    pub(crate) fn close(&self) {
        self.closed.set(true);
        self.out.release();
        self.order.borrow_mut().clear();
        self.requeued.borrow_mut().clear();
        self.splits.borrow_mut().clear();
    }

    /// Resolves when an answer, a push, a failure or a finished request changes the state.
    pub(crate) fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }

    /// Set by the client task: how many buffered bytes are not yet a whole frame.
    pub(crate) fn set_partial_bytes(&self, n: usize) {
        self.partial.set(n);
    }

    /// Moves the answers ready for the socket into `into` (which must be empty).
    #[cfg(test)]
    pub(crate) fn take_output(&self, into: &mut bytes::BytesMut) {
        std::mem::swap(into, &mut self.out.buf.borrow_mut());
    }
}

impl Registered for Client {
    fn partial_bytes(&self) -> usize {
        self.partial.get()
    }

    fn close_for(&self, fault: ClientFault) {
        self.mark_failed(fault.into());
    }
}

#[cfg(test)]
mod tests;
