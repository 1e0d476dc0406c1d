//! What one backend connection keeps per message while it is in flight: the requests
//! awaiting answers (their client's [`ReplySink`] and [`Ticket`], when they were sent, and
//! where they sit in the connection's byte stream) and the one-way messages not yet fully
//! written. When the connection is lost, those never written are handed back to their
//! clients to be routed again, and the rest fail.

use bytes::{Bytes, BytesMut};
use std::rc::Rc;
use std::time::Instant;
use switchyard_core::{BackendFault, ReplySink, Ticket};
use switchyard_proto::Span;

/// Where a queued message sits in the connection's byte stream, so one that was never
/// written can be handed back.
#[derive(Debug)]
pub(super) struct Placed {
    /// Stream offset of its first byte.
    pub(super) start: u64,
    /// Its length as written (with the proxy's id).
    pub(super) len: u32,
    /// Where the id sits in the written frame (by_id).
    pub(super) id_at: Option<Span>,
}

/// A request awaiting its answer.
pub(super) struct Pending {
    pub(super) sink: Rc<dyn ReplySink>,
    pub(super) ticket: Ticket,
    pub(super) sent: Instant,
    pub(super) placed: Placed,
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
    pub(super) retried: usize,
}

/// Hands back what was never written (if `retry`) and fails the rest with `lost`; tells
/// `on_failed` of each request that leaves the backend's books.
pub(super) fn settle(
    pending: Vec<Pending>,
    oneway: Vec<OneWay>,
    unwritten: &Unwritten,
    retry: bool,
    lost: &BackendFault,
    on_failed: &dyn Fn(),
) -> Settled {
    let mut s = Settled::default();
    let fault = lost.clone().into();
    for p in pending {
        on_failed();
        match unwritten.cut(&p.placed).filter(|_| retry) {
            Some(bytes) => {
                s.retried += 1;
                let (frame, id) = restore_id(bytes, &p);
                p.sink.hand_back(Some(p.ticket), frame, id);
            }
            None => {
                s.failed += 1;
                p.sink.fail(&p.ticket, &fault);
            }
        }
    }
    for o in oneway {
        if let Some(frame) = unwritten.cut(&o.placed).filter(|_| retry) {
            s.retried += 1;
            o.sink.hand_back(None, frame, None);
        }
    }
    s
}

/// A frame handed back for retry, with the client's own id where the proxy's was.
fn restore_id(bytes: Bytes, p: &Pending) -> (Bytes, Option<Span>) {
    match (&p.ticket.orig_id, p.placed.id_at) {
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
