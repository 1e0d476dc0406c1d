//! The reply handle of one client connection: the only way the upstream side reaches a
//! client. Answers are copied into a bounded output buffer; for `in_order` listeners a
//! reorder window restores the client's request order even when its requests went to
//! different backends. The handle owns the socket's write half: the upstream task that
//! delivered answers writes them straight out once per read of its backend (no wake-up of
//! the client task per answer); the client task takes over only when the socket is full,
//! or when it waits on answers (blocked, draining, or due to close as idle).

use crate::codec::error_reply::{ErrorReplier, Failure};
use crate::codec::plan::{merge, unjoin, Merge, Part};
use crate::codec::{Key, Span};
use bytes::{Buf, Bytes, BytesMut};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;

/// Most output buffer kept once everything is written.
const KEEP_OUTPUT: usize = 256 << 10;

/// A request that never reached its backend, handed back to be routed again.
#[derive(Debug, Clone)]
pub struct Requeued {
    /// The frame as the client sent it (the client's own id restored).
    pub frame: Bytes,
    /// Where its id sits, for `by_id`.
    pub id: Option<Span>,
    /// Its sequence number, if it awaits an answer (it keeps its place in the client's
    /// order).
    pub seq: Option<u64>,
    /// Which part of a split request it is.
    pub part: Option<u16>,
    /// Its key, where known (else the listener's codec finds it again).
    pub key: Option<Key>,
}

/// The answers of a split request gathering until all its parts are in.
#[derive(Debug)]
struct Gathering {
    kind: Merge,
    parts: Vec<Option<Bytes>>,
    missing: usize,
    /// Parts sent joined as one request, by the part number it was sent as: the parts it
    /// stands for (number and request).
    joined: HashMap<u16, Vec<(u16, Part)>>,
}

/// One client connection as seen from the upstream side.
#[derive(Debug)]
pub struct Client {
    /// Process-wide connection id: worker index in the top bits, a counter below.
    pub gid: u64,
    /// The client's address.
    pub peer: SocketAddr,
    max_reply_buffer: usize,
    state: RefCell<ReplyState>,
    inflight: Cell<usize>,
    notify: Notify,
    /// The socket's write half; `None` before [`Client::attach`] and after close.
    writer: RefCell<Option<Rc<OwnedWriteHalf>>>,
    /// On the worker's list of clients to flush.
    flush_queued: Cell<bool>,
    /// The client task waits on answers (not only on its socket): wake it for each.
    wake_on_answer: Cell<bool>,
    /// The client task waits for the socket to take more: leave the writing to it.
    write_blocked: Cell<bool>,
    /// How the protocol answers a failed request; `None`: the client is closed instead.
    error_reply: RefCell<Option<Rc<ErrorReplier>>>,
    /// Answers go out in request order (`in_order`); otherwise as they come (`by_id`).
    ordered: bool,
    /// Bytes of the client's input that are not yet a whole frame (set by its task).
    partial: Cell<usize>,
}

#[derive(Debug, Default)]
struct ReplyState {
    out: BytesMut,
    /// Answers that arrived ahead of an earlier request's; slot 0 is sequence `base`.
    reorder: VecDeque<Option<Bytes>>,
    /// Bytes held in `reorder`.
    reorder_bytes: usize,
    base: u64,
    next_seq: u64,
    /// Requests handed back by a failed backend connection before they were written.
    requeued: VecDeque<Requeued>,
    /// Split requests waiting for parts, by sequence number.
    gathering: HashMap<u64, Gathering>,
    /// Set once: why this client must be closed.
    failed: Option<String>,
    closed: bool,
}

impl Client {
    /// A client whose unread answers may grow to `max_reply_buffer` bytes; `ordered`: its
    /// answers go out in request order.
    pub fn new(gid: u64, peer: SocketAddr, max_reply_buffer: usize, ordered: bool) -> Self {
        Client {
            gid,
            peer,
            max_reply_buffer,
            state: RefCell::new(ReplyState::default()),
            inflight: Cell::new(0),
            notify: Notify::new(),
            writer: RefCell::new(None),
            flush_queued: Cell::new(false),
            wake_on_answer: Cell::new(false),
            write_blocked: Cell::new(false),
            error_reply: RefCell::new(None),
            ordered,
            partial: Cell::new(0),
        }
    }

    /// Bytes of the client's input that are not yet a whole frame.
    pub fn partial_bytes(&self) -> usize {
        self.partial.get()
    }

    /// Set by the client task: how many buffered bytes are not yet a whole frame.
    pub fn set_partial_bytes(&self, n: usize) {
        self.partial.set(n);
    }

    /// Failed requests are answered by `how` (the connection stays open) instead of
    /// closing the client.
    pub fn answer_errors(&self, how: Option<Rc<ErrorReplier>>) {
        *self.error_reply.borrow_mut() = how;
    }

    /// Whether failed requests are answered rather than closing the client.
    pub fn answers_errors(&self) -> bool {
        self.error_reply.borrow().is_some()
    }

    /// Request `seq` (part `part` of it, if split) failed: answered with the protocol's
    /// error answer in its place, or, where the protocol has none, the client is closed.
    pub fn fail_one(&self, seq: u64, part: Option<u16>, failure: &Failure<'_>) {
        let how = self.error_reply.borrow().clone();
        let Some(answer) = how.and_then(|h| h.answer(failure)) else {
            self.fail_request(failure.reason);
            return;
        };
        match part {
            Some(part) => self.answer_part(seq, part, &answer),
            None if self.ordered => self.answer_in_order(seq, &answer),
            None => self.answer_unordered(&answer),
        }
        self.notify.notify_one();
    }

    /// The next request failed before it was sent: answered with the protocol's error
    /// answer in its place (see [`Self::fail_one`]).
    pub fn refuse_next(&self, failure: &Failure<'_>) {
        let seq = self.begin_request();
        self.fail_one(seq, None, failure);
    }

    /// Gives the handle the socket it writes answers to; returns it, for the client task
    /// to wait on.
    pub fn attach(&self, writer: OwnedWriteHalf) -> Rc<OwnedWriteHalf> {
        let writer = Rc::new(writer);
        *self.writer.borrow_mut() = Some(writer.clone());
        writer
    }

    /// Writes what the socket takes now. Returns whether the output is all written; a
    /// write error marks the client failed.
    pub fn flush(&self) -> bool {
        let Some(w) = self.writer.borrow().clone() else {
            return !self.has_output();
        };
        let mut s = self.state.borrow_mut();
        while !s.out.is_empty() {
            match w.try_write(&s.out) {
                Ok(0) => return false,
                Ok(n) => s.out.advance(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    if s.failed.is_none() {
                        s.failed = Some(format!("write to client failed: {e}"));
                    }
                    return false;
                }
            }
        }
        // Give a burst's memory back: an idle connection keeps a small buffer, whatever it
        // once carried.
        if s.out.capacity() > KEEP_OUTPUT {
            s.out = BytesMut::new();
        }
        true
    }

    /// Marks the client for a flush at the end of the current batch of answers. Returns
    /// `true` if the caller must put it on its flush list (it was not on one).
    pub fn queue_flush(&self) -> bool {
        !self.flush_queued.replace(true)
    }

    /// The deferred flush: writes the answers gathered in this batch, and wakes the client
    /// task only if it has to act (output left over, a failure, or it waits on answers).
    pub fn flush_queued(&self) {
        self.flush_queued.set(false);
        // If the client task waits for the socket, it writes everything once it can.
        let done = self.write_blocked.get() || self.flush();
        if !done || self.wake_on_answer.get() || self.state.borrow().failed.is_some() {
            self.notify.notify_one();
        }
    }

    /// Set by the client task: whether it must be woken for every answer, and whether it
    /// is the one waiting to write.
    pub fn set_waiting(&self, on_answers: bool, on_socket: bool) {
        self.wake_on_answer.set(on_answers);
        self.write_blocked.set(on_socket);
    }

    /// Requests sent and not yet answered or failed.
    pub fn inflight(&self) -> usize {
        self.inflight.get()
    }

    /// Records a request that awaits an answer; returns its sequence number.
    pub fn begin_request(&self) -> u64 {
        self.inflight.set(self.inflight.get() + 1);
        let mut s = self.state.borrow_mut();
        let seq = s.next_seq;
        s.next_seq += 1;
        seq
    }

    fn finish_request(&self) {
        self.inflight.set(self.inflight.get().saturating_sub(1));
    }

    /// Starts a request split into `parts` parts whose answers merge with `kind`; returns
    /// its sequence number.
    pub fn begin_split(&self, parts: usize, kind: Merge) -> u64 {
        let seq = self.begin_request();
        self.state.borrow_mut().gathering.insert(
            seq,
            Gathering {
                kind,
                parts: vec![None; parts],
                missing: parts,
                joined: HashMap::new(),
            },
        );
        seq
    }

    /// Records that part `part` of split request `seq` is sent as one request joined from
    /// `members` (so its answer is cut per member, and a retry splits it again).
    pub fn joined(&self, seq: u64, part: u16, members: Vec<(u16, Part)>) {
        if let Some(g) = self.state.borrow_mut().gathering.get_mut(&seq) {
            g.joined.insert(part, members);
        }
    }

    /// The answer to part `part` of split request `seq`; the merged answer goes out once
    /// every part is in.
    pub fn answer_part(&self, seq: u64, part: u16, frame: &[u8]) {
        let merged = {
            let mut s = self.state.borrow_mut();
            let Some(g) = s.gathering.get_mut(&seq) else {
                return;
            };
            let answers = match g.joined.remove(&part) {
                Some(members) => {
                    let reqs: Vec<&Part> = members.iter().map(|(_, p)| p).collect();
                    let cut = unjoin(g.kind, frame, &reqs);
                    members.iter().map(|(i, _)| *i).zip(cut).collect()
                }
                None => vec![(part, Bytes::copy_from_slice(frame))],
            };
            for (i, answer) in answers {
                if let Some(slot) = g.parts.get_mut(i as usize) {
                    if slot.is_none() {
                        *slot = Some(answer);
                        g.missing -= 1;
                    }
                }
            }
            if g.missing > 0 {
                return;
            }
            let g = s.gathering.remove(&seq);
            g.map(|g| merge(g.kind, &g.parts.into_iter().flatten().collect::<Vec<_>>()))
        };
        if let Some(m) = merged {
            self.answer_in_order(seq, &m);
        }
    }

    /// Answers the next request from the proxy itself, in its place in the client's order.
    pub fn reply_local(&self, answer: &[u8]) {
        let seq = self.begin_request();
        self.answer_in_order(seq, answer);
    }

    /// The answer to request `seq` of an `in_order` listener. The deliverer queues the
    /// flush ([`crate::worker::WorkerCtx::defer_flush`]).
    pub fn answer_in_order(&self, seq: u64, frame: &[u8]) {
        self.finish_request();
        let mut s = self.state.borrow_mut();
        if s.closed || s.failed.is_some() {
            return;
        }
        if seq == s.base {
            s.out.extend_from_slice(frame);
            s.base += 1;
            if !s.reorder.is_empty() {
                s.reorder.pop_front();
            }
            // Release answers that were waiting for this one.
            while let Some(Some(_)) = s.reorder.front() {
                if let Some(Some(b)) = s.reorder.pop_front() {
                    s.out.extend_from_slice(&b);
                    s.reorder_bytes -= b.len();
                    s.base += 1;
                }
            }
        } else if seq > s.base {
            let slot = (seq - s.base) as usize;
            if s.reorder.len() <= slot {
                s.reorder.resize(slot + 1, None);
            }
            s.reorder[slot] = Some(Bytes::copy_from_slice(frame));
            s.reorder_bytes += frame.len();
        }
        self.check_bound(&mut s);
    }

    /// The answer to a `by_id` request: `frame` with the id field at `id` replaced by the
    /// client's own id bytes. The deliverer queues the flush.
    pub fn answer_by_id(&self, frame: &[u8], id: Span, client_id: &[u8]) {
        self.finish_request();
        let mut s = self.state.borrow_mut();
        if s.closed || s.failed.is_some() {
            return;
        }
        let start = id.offset as usize;
        let end = start + id.len as usize;
        s.out.extend_from_slice(&frame[..start]);
        s.out.extend_from_slice(client_id);
        s.out.extend_from_slice(&frame[end..]);
        self.check_bound(&mut s);
    }

    /// An answer of a listener whose answers need no reordering (`by_id`): out as it is.
    fn answer_unordered(&self, frame: &[u8]) {
        self.finish_request();
        let mut s = self.state.borrow_mut();
        if s.closed || s.failed.is_some() {
            return;
        }
        s.out.extend_from_slice(frame);
        self.check_bound(&mut s);
    }

    /// A message a backend sent unasked, for the session this client owns.
    pub fn push(&self, frame: &[u8]) -> bool {
        let mut s = self.state.borrow_mut();
        if s.closed || s.failed.is_some() {
            return false;
        }
        s.out.extend_from_slice(frame);
        self.check_bound(&mut s);
        drop(s);
        self.notify.notify_one();
        true
    }

    /// Queues a part of a split request to be routed (ahead of later requests).
    pub fn queue_part(&self, r: Requeued) {
        self.state.borrow_mut().requeued.push_back(r);
    }

    /// Hands back a request that was never written, to be routed again. A joined request
    /// comes back as the parts it was joined from, each to be placed by its own key again.
    pub fn requeue(&self, r: Requeued) {
        let mut s = self.state.borrow_mut();
        if s.closed || s.failed.is_some() {
            return;
        }
        let members = match (r.seq, r.part) {
            (Some(seq), Some(part)) => s
                .gathering
                .get_mut(&seq)
                .and_then(|g| g.joined.remove(&part)),
            _ => None,
        };
        match members {
            Some(members) => {
                for (i, p) in members {
                    s.requeued.push_back(Requeued {
                        key: Some(p.key_span()),
                        frame: p.frame,
                        id: None,
                        seq: r.seq,
                        part: Some(i),
                    });
                }
            }
            None => s.requeued.push_back(r),
        }
        drop(s);
        self.notify.notify_one();
    }

    /// The oldest handed-back request, if any.
    pub fn take_requeued(&self) -> Option<Requeued> {
        self.state.borrow_mut().requeued.pop_front()
    }

    /// Puts a handed-back request back at the front (it could not be routed yet).
    pub fn untake_requeued(&self, r: Requeued) {
        self.state.borrow_mut().requeued.push_front(r);
    }

    /// Whether handed-back requests wait to be routed.
    pub fn has_requeued(&self) -> bool {
        !self.state.borrow().requeued.is_empty()
    }

    /// A request of this client will never be answered; the connection must close.
    pub fn fail_request(&self, reason: &str) {
        self.finish_request();
        self.fail(reason);
    }

    /// Marks the client for closing with `reason` (the first reason wins).
    pub fn fail(&self, reason: &str) {
        let mut s = self.state.borrow_mut();
        if s.failed.is_none() {
            s.failed = Some(reason.to_string());
        }
        drop(s);
        self.notify.notify_one();
    }

    fn check_bound(&self, s: &mut ReplyState) {
        let held = s.out.len() + s.reorder_bytes;
        if held > self.max_reply_buffer && s.failed.is_none() {
            s.failed = Some(format!(
                "client is not reading its answers: {held} bytes waiting exceed max_reply_buffer {}",
                self.max_reply_buffer
            ));
        }
    }

    /// Moves the answers ready for the socket into `into` (which must be empty).
    #[cfg(test)]
    pub fn take_output(&self, into: &mut BytesMut) {
        let mut s = self.state.borrow_mut();
        std::mem::swap(into, &mut s.out);
    }

    /// Why the connection must close, if it must.
    pub fn failure(&self) -> Option<String> {
        self.state.borrow().failed.clone()
    }

    /// Whether answers are waiting to be taken.
    pub fn has_output(&self) -> bool {
        !self.state.borrow().out.is_empty()
    }

    /// Marks the connection closed: later answers are discarded.
    pub fn close(&self) {
        let mut s = self.state.borrow_mut();
        s.closed = true;
        s.out = BytesMut::new();
        s.reorder.clear();
        s.reorder_bytes = 0;
        s.requeued.clear();
        s.gathering.clear();
        drop(s);
        // Drops the write half (its socket closes once the client task's read half goes).
        self.writer.borrow_mut().take();
    }

    /// Resolves when an answer, a push, a failure or a finished request changes the state.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(bound: usize) -> Client {
        Client::new(1, "127.0.0.1:1".parse().unwrap(), bound, true)
    }

    fn output(c: &Client) -> Vec<u8> {
        let mut b = BytesMut::new();
        c.take_output(&mut b);
        b.to_vec()
    }

    #[test]
    fn in_order_answers_are_restored_to_request_order() {
        let c = client(1 << 20);
        let seqs: Vec<u64> = (0..4).map(|_| c.begin_request()).collect();
        c.answer_in_order(seqs[2], b"C");
        c.answer_in_order(seqs[1], b"B");
        assert_eq!(output(&c), b"");
        c.answer_in_order(seqs[0], b"A");
        assert_eq!(output(&c), b"ABC");
        c.answer_in_order(seqs[3], b"D");
        assert_eq!(output(&c), b"D");
        assert_eq!(c.inflight(), 0);
    }

    fn get(key: &str) -> Part {
        Part {
            frame: Bytes::from(format!("get {key}\r\n")),
            key: (4, key.len()),
            args_at: 4,
            argc: 1,
        }
    }

    #[test]
    fn a_joined_part_is_answered_per_member_and_handed_back_split() {
        use crate::codec::plan::join;
        let c = client(1 << 20);
        let seq = c.begin_split(3, Merge::MemcacheValues);
        let members = vec![(0u16, get("a")), (2u16, get("c"))];
        let joined = join(Merge::MemcacheValues, &[&members[0].1, &members[1].1]);
        assert_eq!(joined.frame, Bytes::from_static(b"get a c\r\n"));
        c.joined(seq, 0, members.clone());
        // Handed back unwritten: it comes back as its two parts, keyed by their own keys.
        c.requeue(Requeued {
            frame: joined.frame.clone(),
            id: None,
            seq: Some(seq),
            part: Some(0),
            key: None,
        });
        let back: Vec<Requeued> = std::iter::from_fn(|| c.take_requeued()).collect();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].frame, members[0].1.frame);
        assert_eq!(back[1].part, Some(2));
        assert_eq!(back[1].frame, members[1].1.frame);
        // Sent joined again; its answer fills both members' places, part 1 its own.
        c.joined(seq, 0, members);
        c.answer_part(seq, 0, b"VALUE c 0 1\r\nz\r\nEND\r\n");
        assert_eq!(output(&c), b"");
        c.answer_part(seq, 1, b"VALUE b 0 1\r\ny\r\nEND\r\n");
        assert_eq!(
            output(&c),
            b"VALUE b 0 1\r\ny\r\nVALUE c 0 1\r\nz\r\nEND\r\n"
        );
        assert_eq!(c.inflight(), 0);
    }

    #[test]
    fn by_id_error_answers_go_out_as_they_come_and_hold_nothing() {
        // A by_id client's failed requests are answered straight out: the reorder window,
        // whose base only in_order answers move, must not grow with every failure.
        let c = Client::new(1, "127.0.0.1:1".parse().unwrap(), 1 << 20, false);
        c.answer_errors(Some(Rc::new(ErrorReplier::Memcache)));
        for _ in 0..10_000 {
            let seq = c.begin_request();
            let f = Failure {
                id: Some(b"7"),
                key: None,
                reason: "gone",
            };
            c.fail_one(seq, None, &f);
            assert_eq!(output(&c), b"SERVER_ERROR gone\r\n");
        }
        assert_eq!(c.inflight(), 0);
        assert!(c.state.borrow().reorder.is_empty());
        assert_eq!(c.state.borrow().reorder.capacity(), 0);
    }

    #[test]
    fn by_id_restores_the_client_id() {
        let c = client(1 << 20);
        c.begin_request();
        let frame = b"hdr\x00\x00\x00\x07tail";
        c.answer_by_id(frame, Span { offset: 3, len: 4 }, b"\xAA\xBB\xCC\xDD");
        assert_eq!(output(&c), b"hdr\xAA\xBB\xCC\xDDtail");
    }

    #[test]
    fn a_client_that_does_not_read_is_failed() {
        let c = client(8);
        assert!(c.push(b"12345"));
        assert!(c.failure().is_none());
        c.push(b"6789");
        assert!(c.failure().unwrap().contains("max_reply_buffer 8"));
        assert!(!c.push(b"x"));
    }

    #[test]
    fn answers_held_for_reordering_count_against_the_bound() {
        let c = client(8);
        let first = c.begin_request();
        let second = c.begin_request();
        c.answer_in_order(second, b"0123456789");
        assert!(c.failure().is_some(), "held answers must be bounded too");
        c.answer_in_order(first, b"x");
        assert_eq!(output(&c), b"");
    }
}
