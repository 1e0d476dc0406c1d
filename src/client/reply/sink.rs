//! The client's side of the seam: how the backend side's answers, failures, hand-backs
//! and pushes land in a [`Client`] (its `ReplySink`).

use super::{Client, Requeued};
use bytes::Bytes;
use std::net::SocketAddr;
use switchyard_core::{Fault, ReplySink, Ticket};
use switchyard_proto::Span;

impl ReplySink for Client {
    fn client_id(&self) -> u64 {
        self.gid
    }

    fn peer(&self) -> SocketAddr {
        self.peer
    }

    fn is_gone(&self) -> bool {
        self.gone()
    }

    fn answer(&self, ticket: &Ticket, frame: &[u8], id_at: Option<Span>) {
        if self.sampling.get() && ticket.part.is_none() {
            self.finish_sample(ticket.seq, None);
        }
        match (&ticket.orig_id, id_at) {
            // In order, the backend had the client's own id: the answer carries it.
            (Some(orig), Some(span)) if !self.ordered && self.rewrites_ids => {
                self.answer_by_id(frame, span, orig.as_slice(), true)
            }
            _ => self.deliver(ticket, frame),
        }
    }

    fn provisional(&self, ticket: &Ticket, frame: &[u8], id_at: Option<Span>) {
        match (&ticket.orig_id, id_at) {
            // A split request's parts have one answer each.
            _ if ticket.part.is_some() => {}
            (Some(orig), Some(span)) if !self.ordered && self.rewrites_ids => {
                self.answer_by_id(frame, span, orig.as_slice(), false)
            }
            _ if self.ordered => self.answer_in_order(ticket.seq, frame, false),
            _ => self.write_unordered(frame),
        }
    }

    fn fail(&self, ticket: &Ticket, fault: &Fault, request: Option<&[u8]>) {
        if self.sampling.get() && ticket.part.is_none() {
            self.finish_sample(ticket.seq, Some(&fault.to_string()));
        }
        if self.refuse(ticket, fault, request).is_err() {
            self.mark_failed(fault.clone());
        }
    }

    fn end_after_answers(&self, fault: &Fault) {
        self.finish
            .borrow_mut()
            .get_or_insert_with(|| fault.clone());
        self.notify.notify_one();
    }

    fn retrying(&self, started: bool) {
        let n = self.retrying.get();
        self.retrying
            .set(if started { n + 1 } else { n.saturating_sub(1) });
        if !started && n == 1 {
            self.notify.notify_one(); // held requests may go now
        }
    }

    /// A joined request comes back as the parts it was joined from, each to be placed by
    /// its own key again.
    fn hand_back(
        &self,
        ticket: Option<Ticket>,
        request: Bytes,
        id_at: Option<Span>,
        repeatable: bool,
    ) {
        if self.gone() {
            return;
        }
        let members = ticket.as_ref().and_then(|t| {
            t.part
                .and_then(|part| self.splits.borrow_mut().unjoin_request(t.seq, part))
        });
        let mut q = self.requeued.borrow_mut();
        match (members, ticket) {
            (Some(members), Some(t)) => {
                for (i, p) in members {
                    q.push_back(Requeued {
                        key: Some(p.key_span()),
                        frame: p.frame,
                        id: None,
                        ticket: Some(Ticket {
                            part: Some(i),
                            ..t.clone()
                        }),
                        repeatable,
                    });
                }
            }
            (_, ticket) => q.push_back(Requeued {
                frame: request,
                id: id_at,
                ticket,
                key: None,
                repeatable,
            }),
        }
        drop(q);
        self.notify.notify_one();
    }

    fn push(&self, frame: &[u8]) -> bool {
        if self.gone() {
            return false;
        }
        self.counters.messages_out.inc();
        self.out.buf.borrow_mut().extend_from_slice(frame);
        self.check_bound();
        self.notify.notify_one();
        true
    }

    fn queue_flush(&self) -> bool {
        self.out.queue_flush()
    }

    /// Writes the answers gathered in this batch, and wakes the client task only if it
    /// has to act (output left over, a failure, or it waits on answers).
    fn flush_queued(&self) {
        self.out.dequeue_flush();
        // If the client task waits for the socket, it writes everything once it can.
        let done = self.out.write_blocked.get() || self.flush();
        if !done || self.out.wake_on_answer.get() || self.failed.borrow().is_some() {
            self.notify.notify_one();
        }
    }
}
