//! What one backend connection keeps per message while it is in flight: the requests
//! awaiting answers (their client's [`ReplySink`] and [`Ticket`], when they were sent, and
//! where they sit in the connection's byte stream; a [`Kept`] copy of their bytes, beside
//! them, where they may be re-sent or their error answer repeats them) and the one-way
//! messages not yet fully written. When the connection is lost, those never written are
//! handed back to their clients to be routed again, those written that may be re-sent go on
//! probation ([`super::probation`]), and the rest fail.

use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;
use switchyard_core::correlate::IdMap;
use switchyard_core::{BackendFault, Fault, ReplySink, Ticket};
use switchyard_proto::Span;

/// Where a queued message sits in the connection's byte stream, so one that was never
/// written can be handed back; and, for a request, whether it has had a provisional answer
/// (kept here, in what would be padding: a request's books stay within 128 bytes, which
/// the compiler moves without a `memcpy` call).
#[derive(Debug)]
pub(super) struct Placed {
    /// Stream offset of its first byte.
    pub(super) start: u64,
    /// Its length as written (with the proxy's id).
    pub(super) len: u32,
    /// Where the id sits in the written frame (by_id); empty: none.
    id: Span,
    /// The request had a provisional answer (its latency was counted then).
    pub(super) answered: bool,
}

impl Placed {
    /// A message at stream offset `start`, `len` bytes, its id (if any) at `id_at`.
    pub(super) fn new(start: u64, len: u32, id_at: Option<Span>) -> Self {
        Placed {
            start,
            len,
            id: id_at.unwrap_or(Span { offset: 0, len: 0 }),
            answered: false,
        }
    }

    /// Where the proxy's id sits in the written frame (by_id).
    pub(super) fn id_at(&self) -> Option<Span> {
        (self.id.len > 0).then_some(self.id)
    }

    /// Records where the proxy's id was written (a proxy id is never empty).
    pub(super) fn set_id_at(&mut self, at: Span) {
        self.id = at;
    }
}

/// A request awaiting its answer.
pub(super) struct Pending {
    pub(super) sink: Rc<dyn ReplySink>,
    pub(super) ticket: Ticket,
    /// When it was queued, or got its last provisional answer (its timeout runs from it).
    pub(super) sent: Instant,
    pub(super) placed: Placed,
}

impl Pending {
    /// Fails it with `fault`; `kept`: its bytes, if kept, for the error answer.
    pub(super) fn fail(&self, fault: &Fault, kept: Option<&Kept>) {
        self.sink.fail(&self.ticket, fault, kept.map(|k| &*k.bytes));
    }
}

/// A copy of a request in flight, as written (the proxy's id in it), kept beside its
/// [`Pending`] (by stream offset) where it may be re-sent or the protocol's error answer
/// repeats it; within the connection's bound on kept bytes. Kept apart so that listeners
/// that keep nothing carry nothing per request.
#[derive(Debug)]
pub(super) struct Kept {
    pub(super) bytes: Vec<u8>,
    /// Whether it may be re-sent on probation if the connection dies after writing it.
    pub(super) retry: bool,
}

/// Spare copy buffers a `by_id` connection keeps for reuse, at most.
const SPARE_BUFFERS: usize = 64;
/// The largest spare buffer kept (a bigger request's is freed once answered).
const SPARE_CAPACITY: usize = 2048;

/// One connection's kept copies, by the stream offset of their request's first byte. Under
/// `in_order` answers come in request order, so the copies sit in one buffer in that order
/// and leave it from the front (no allocation per request); under `by_id` they come in any
/// order, so each is a buffer of its own (reused from answered ones) in a map. Empty, and costing one check per answer, on
/// listeners that keep nothing.
#[derive(Debug, Default)]
pub(super) struct KeptStore {
    by_offset: IdMap<Kept>,
    /// `by_id`: buffers of answered copies, for the next ones (no allocation per request
    /// once warm): at most [`SPARE_BUFFERS`], none over [`SPARE_CAPACITY`] bytes.
    spare: Vec<Vec<u8>>,
    /// `in_order`: (stream offset, length, retry) of each copy in `fifo_bytes`, in order.
    fifo: VecDeque<(u64, u32, bool)>,
    /// The copies, from `fifo_head` on.
    fifo_bytes: Vec<u8>,
    fifo_head: usize,
    /// Bytes kept in all.
    bytes: usize,
}

impl KeptStore {
    /// Bytes kept in all.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Keeps a copy of `request`, written at stream offset `start`; `in_order`: its answer
    /// comes after those of every copy kept before.
    pub(super) fn keep(&mut self, in_order: bool, start: u64, request: &[u8], retry: bool) {
        self.bytes += request.len();
        if in_order {
            self.fifo.push_back((start, request.len() as u32, retry));
            if self.fifo_head > 0 && self.fifo_head * 2 >= self.fifo_bytes.len() {
                // Most of the buffer is released: move what is left to the front.
                self.fifo_bytes.drain(..self.fifo_head);
                self.fifo_head = 0;
            }
            self.fifo_bytes.extend_from_slice(request);
        } else {
            let mut bytes = self.spare.pop().unwrap_or_default();
            bytes.extend_from_slice(request);
            self.by_offset.insert(start, Kept { bytes, retry });
        }
    }

    /// The copy of the request at `start`, if kept, leaves the store: returned with
    /// `copy_out` (for an error answer or a re-send), dropped otherwise (it was answered).
    pub(super) fn release(&mut self, start: u64, copy_out: bool) -> Option<Kept> {
        if self.bytes == 0 {
            return None;
        }
        if let Some(&(at, len, retry)) = self.fifo.front() {
            if at == start {
                self.fifo.pop_front();
                self.bytes -= len as usize;
                let (from, to) = (self.fifo_head, self.fifo_head + len as usize);
                let kept = copy_out.then(|| Kept {
                    bytes: self.fifo_bytes[from..to].to_vec(),
                    retry,
                });
                self.fifo_head = to;
                if self.fifo.is_empty() {
                    self.fifo_head = 0;
                    self.fifo_bytes.clear();
                    if self.fifo_bytes.capacity() > 256 << 10 {
                        self.fifo_bytes = Vec::new(); // a burst's memory back
                    }
                }
                return kept;
            }
        }
        let k = self.by_offset.remove(&start)?;
        self.bytes -= k.bytes.len();
        if copy_out {
            return Some(k);
        }
        let mut spare = k.bytes;
        if self.spare.len() < SPARE_BUFFERS && spare.capacity() <= SPARE_CAPACITY {
            spare.clear();
            self.spare.push(spare);
        }
        None
    }
}

// A request's books are moved with plain stores only up to this size.
const _: () = assert!(std::mem::size_of::<Pending>() <= 128);

/// A request of a dead connection, to be re-sent alone: its books and its bytes.
#[derive(Debug)]
pub(super) struct Retry {
    pub(super) pending: Pending,
    pub(super) bytes: Vec<u8>,
}

impl Retry {
    /// Fails it with `fault`, its bytes at hand for the error answer; counted in
    /// `conn`'s counters (a poison request is counted as such by the probation instead).
    pub(super) fn fail(&self, fault: &Fault, conn: &super::BackendConn) {
        conn.counters.on_failure(fault);
        let p = &self.pending;
        p.sink.fail(&p.ticket, fault, Some(&self.bytes));
    }

    /// Its client.
    pub(super) fn sink(&self) -> &Rc<dyn ReplySink> {
        &self.pending.sink
    }
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("ticket", &self.ticket)
            .field("placed", &self.placed)
            .finish()
    }
}

/// A one-way message not yet fully written.
pub(super) struct OneWay {
    pub(super) sink: Rc<dyn ReplySink>,
    pub(super) placed: Placed,
    /// The session it ends once written (`ENDS_SESSION`).
    pub(super) ends: Option<std::num::NonZeroU64>,
}

impl std::fmt::Debug for OneWay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OneWay")
            .field("placed", &self.placed)
            .finish()
    }
}

/// The bytes a lost connection had not written: its stream from offset `written` on.
pub(super) struct Unwritten {
    pub(super) tail: Bytes,
    pub(super) written: u64,
}

impl Unwritten {
    /// The bytes of the message at `p`, if none of it was written.
    fn cut(&self, p: &Placed) -> Option<Bytes> {
        let from = p.start.checked_sub(self.written)? as usize;
        let to = from + p.len as usize;
        self.tail.get(from..to).map(|_| self.tail.slice(from..to))
    }
}

/// What a lost connection did with what was in flight.
#[derive(Debug, Default)]
pub(super) struct Settled {
    pub(super) failed: usize,
    /// One-way messages lost with the connection: written (the backend may or may not have
    /// read them), or unwritten where nothing is routed again.
    pub(super) oneway_lost: usize,
    /// Never written: handed back to be routed again.
    pub(super) retried: usize,
    /// Written, and safe to re-send: for the probation, oldest first.
    pub(super) probation: Vec<Retry>,
}

/// Hands back what was never written (if `retry`), gives what was written and may be
/// re-sent to the probation (if `probation`), and fails the rest with `lost`; tells
/// `on_failed` of each request that leaves the backend's books. A failed request or a lost
/// one-way message ends no session (`ENDS_SESSION`): its pin stays, so the session's later
/// messages still fail where it lived rather than reach a backend that never saw it.
pub(super) fn settle(
    pending: Vec<(Pending, Option<Kept>)>,
    oneway: Vec<OneWay>,
    unwritten: &Unwritten,
    (retry, probation): (bool, bool),
    lost: &BackendFault,
    on_failed: &dyn Fn(),
) -> Settled {
    let mut s = Settled::default();
    let fault = lost.clone().into();
    for (p, kept) in pending {
        on_failed();
        match (unwritten.cut(&p.placed), kept) {
            (Some(bytes), kept) if retry => {
                s.retried += 1;
                let (frame, id) = restore_id(bytes, &p);
                let repeatable = kept.is_some_and(|k| k.retry);
                p.sink.hand_back(Some(p.ticket), frame, id, repeatable);
            }
            // Written (some of it, at least): the backend may have seen it.
            (None, Some(k)) if probation && k.retry && !p.sink.is_gone() => {
                p.sink.retrying(true);
                s.probation.push(Retry {
                    pending: p,
                    bytes: k.bytes,
                });
            }
            (_, kept) => {
                s.failed += 1;
                p.fail(&fault, kept.as_ref());
            }
        }
    }
    for o in oneway {
        match unwritten.cut(&o.placed).filter(|_| retry) {
            Some(frame) => {
                s.retried += 1;
                o.sink.hand_back(None, frame, None, false);
            }
            None => s.oneway_lost += 1,
        }
    }
    s
}

/// A frame handed back for retry, with the client's own id where the proxy's was.
fn restore_id(bytes: Bytes, p: &Pending) -> (Bytes, Option<Span>) {
    match (&p.ticket.orig_id, p.placed.id_at()) {
        (Some(orig), Some(at)) => {
            let start = at.offset as usize;
            let end = start + at.len as usize;
            let mut f = BytesMut::with_capacity(bytes.len());
            f.extend_from_slice(&bytes[..start]);
            f.extend_from_slice(orig.as_slice());
            f.extend_from_slice(&bytes[end..]);
            let span = Span {
                offset: at.offset,
                len: orig.as_slice().len() as u32,
            };
            (f.freeze(), Some(span))
        }
        _ => (bytes, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_copies_leave_from_the_front_and_account_their_bytes() {
        let mut k = KeptStore::default();
        k.keep(true, 0, b"first", true);
        k.keep(true, 10, b"third", false); // the request at 5 kept nothing
        assert_eq!(k.bytes(), 10);
        assert!(k.release(0, false).is_none(), "dropped: it was answered");
        assert!(k.release(5, true).is_none(), "nothing kept at 5");
        let third = k.release(10, true).unwrap();
        assert_eq!((&third.bytes[..], third.retry), (&b"third"[..], false));
        assert_eq!(k.bytes(), 0);
        assert!(k.fifo.is_empty() && k.fifo_bytes.is_empty() && k.fifo_head == 0);
    }

    #[test]
    fn in_order_buffer_is_reused_not_grown_with_messages_served() {
        let mut k = KeptStore::default();
        let mut outstanding = VecDeque::new();
        for i in 0..100_000u64 {
            k.keep(true, i * 16, b"0123456789abcdef", true);
            outstanding.push_back(i * 16);
            if i % 4 == 3 {
                // Answers come in order, three at a time: some are always outstanding.
                for _ in 0..3 {
                    k.release(outstanding.pop_front().unwrap(), false);
                }
            }
            assert!(
                k.fifo_bytes.len() <= 2 * 16 * (outstanding.len() + 4),
                "the buffer holds about what is outstanding"
            );
        }
        assert_eq!(k.bytes(), 16 * outstanding.len());
    }

    #[test]
    fn by_id_copies_come_out_in_any_order_and_their_buffers_are_reused() {
        let mut k = KeptStore::default();
        for start in 0..10u64 {
            k.keep(false, start * 100, &[start as u8; 40], true);
        }
        let five = k.release(500, true).unwrap();
        assert_eq!(five.bytes, vec![5u8; 40]);
        for start in [9u64, 0, 3] {
            assert!(k.release(start * 100, false).is_none());
        }
        assert_eq!(k.spare.len(), 3, "answered copies' buffers kept for reuse");
        k.keep(false, 2_000, b"again", false);
        assert_eq!(k.spare.len(), 2);
        assert_eq!(k.bytes(), 6 * 40 + 5);
        for _ in 0..(SPARE_BUFFERS + 10) {
            k.keep(false, 9_999, &[1; 8], true);
            k.release(9_999, false);
        }
        assert!(k.spare.len() <= SPARE_BUFFERS);
        k.keep(false, 7, &vec![0; SPARE_CAPACITY + 1], true);
        let before = k.spare.len();
        k.release(7, false);
        assert_eq!(k.spare.len(), before, "a large buffer is freed, not kept");
    }
}
