//! The narrow interface between the two halves of the proxy: the backend side knows a
//! client only as a [`ReplySink`], and each request only by the [`Ticket`] the client side
//! made for it before sending (which client, its place in the client's order, which part of
//! a split request, and the client's own id). Answers, failures and requests handed back
//! unwritten all go through it, keyed by the ticket.

use crate::error::Fault;
use bytes::Bytes;
use std::net::SocketAddr;
use switchyard_proto::Span;

/// A few bytes kept with a request in flight (an id, a key): inline up to 16 bytes (every
/// binary id, most text ids and keys), no allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmallBytes {
    /// Up to 16 bytes.
    Inline(u8, [u8; 16]),
    /// Longer ones.
    Heap(Box<[u8]>),
}

impl SmallBytes {
    /// A copy of `bytes`.
    pub fn new(bytes: &[u8]) -> Self {
        if bytes.len() <= 16 {
            let mut a = [0u8; 16];
            a[..bytes.len()].copy_from_slice(bytes);
            SmallBytes::Inline(bytes.len() as u8, a)
        } else {
            SmallBytes::Heap(bytes.into())
        }
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            SmallBytes::Inline(n, a) => &a[..*n as usize],
            SmallBytes::Heap(b) => b,
        }
    }
}

/// One request awaiting an answer, as the client side numbered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// The request's place in the client's order.
    pub seq: u64,
    /// Which part of a split request it is.
    pub part: Option<u16>,
    /// The client's own id (`by_id`), restored on the answer.
    pub orig_id: Option<SmallBytes>,
    /// The request's key, kept when the listener's error answer names it.
    pub key: Option<SmallBytes>,
    /// The session (its store key) the request ends (the codec marked it `ENDS_SESSION`):
    /// its pin is released at the request's final answer.
    pub end_session: Option<std::num::NonZeroU64>,
}

/// A client connection, as the backend side sees it.
pub trait ReplySink {
    /// The client connection's global id.
    fn client_id(&self) -> u64;
    /// The client's address, for logs.
    fn peer(&self) -> SocketAddr;
    /// Whether the connection is closed or closing: answers for it are discarded.
    fn is_gone(&self) -> bool;
    /// The answer to the request of `ticket`: `frame`, whose id field at `id_at` (under
    /// `by_id`) is the proxy's and becomes the client's own.
    fn answer(&self, ticket: &Ticket, frame: &[u8], id_at: Option<Span>);
    /// A provisional answer to the request of `ticket` (SIP's 1xx): delivered like an
    /// answer, but the request still awaits its final one.
    fn provisional(&self, ticket: &Ticket, frame: &[u8], id_at: Option<Span>);
    /// The request of `ticket` failed: answered with the protocol's error answer in its
    /// place, or the client closed. `request` is the request's bytes, where the backend
    /// side kept them (for an error answer that repeats part of its request).
    fn fail(&self, ticket: &Ticket, fault: &Fault, request: Option<&[u8]>);
    /// A request of this client was written to a backend connection that died, and is
    /// being re-sent on probation (`true`), or its probation is over (`false`, after its
    /// answer or failure was delivered). While any is, a client whose answers come in
    /// order sends nothing newer, so nothing it sent later can overtake the retry.
    fn retrying(&self, started: bool);
    /// The client must not send more: it reads nothing further, receives the answers to
    /// what it sent, and is closed for `fault` (its request closed a backend connection).
    fn end_after_answers(&self, fault: &Fault);
    /// The request of `ticket` (or a one-way message, without one) was never written:
    /// route it again. `request` has the client's own id back in place, at `id_at`;
    /// `repeatable`: it may still be re-sent on probation once written (it was sent so).
    fn hand_back(
        &self,
        ticket: Option<Ticket>,
        request: Bytes,
        id_at: Option<Span>,
        repeatable: bool,
    );
    /// A message a backend sent unasked, for the session this client owns; `false` if the
    /// client is gone.
    fn push(&self, frame: &[u8]) -> bool;
    /// Answers came in this batch: queue the client for one write at the batch's end.
    /// Returns `true` if it was not queued yet.
    fn queue_flush(&self) -> bool;
    /// The batch's end: write what the answers brought.
    fn flush_queued(&self);
}
