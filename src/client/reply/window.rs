//! A client's order: the sequence numbers its requests get, and the answers that came
//! ahead of an earlier request's, held until that one comes (an `in_order` client's
//! requests may go to different backends, which answer at their own pace).

use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;

/// The reorder window; slot 0 is sequence `base`.
#[derive(Debug, Default)]
pub(super) struct Window {
    held: VecDeque<Option<Bytes>>,
    /// Bytes held.
    held_bytes: usize,
    base: u64,
    next: u64,
}

impl Window {
    /// The next request's place in the client's order.
    pub(super) fn next_seq(&mut self) -> u64 {
        let seq = self.next;
        self.next += 1;
        seq
    }

    /// The answer to request `seq`: out at once if it is the next one due (with every
    /// answer that was waiting behind it), else held.
    #[inline]
    pub(super) fn deliver(&mut self, seq: u64, frame: &[u8], out: &mut BytesMut) {
        if seq == self.base {
            out.extend_from_slice(frame);
            self.base += 1;
            if !self.held.is_empty() {
                self.held.pop_front();
            }
            // Release answers that were waiting for this one.
            while let Some(Some(_)) = self.held.front() {
                if let Some(Some(b)) = self.held.pop_front() {
                    out.extend_from_slice(&b);
                    self.held_bytes -= b.len();
                    self.base += 1;
                }
            }
        } else if seq > self.base {
            let slot = (seq - self.base) as usize;
            if self.held.len() <= slot {
                self.held.resize(slot + 1, None);
            }
            self.held[slot] = Some(Bytes::copy_from_slice(frame));
            self.held_bytes += frame.len();
        }
    }

    /// Bytes of answers held back.
    pub(super) fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Slots of the window (for the growth tests).
    #[cfg(test)]
    pub(super) fn slots(&self) -> (usize, usize) {
        (self.held.len(), self.held.capacity())
    }

    /// Forgets what is held (the client is gone).
    pub(super) fn clear(&mut self) {
        self.held.clear();
        self.held_bytes = 0;
    }
}
