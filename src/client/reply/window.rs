//! A client's order: the sequence numbers its requests get, and the answers that came
//! ahead of an earlier request's, held until that one comes (an `in_order` client's
//! requests may go to different backends, which answer at their own pace). A request may
//! have provisional answers before its final one: they go out in its place too, and only
//! the final one lets the next request's answers out.

use bytes::BytesMut;
use std::collections::VecDeque;

/// The answers held for one request that is not the next due.
#[derive(Debug, Default, Clone)]
struct Slot {
    /// Its answers so far (provisional ones, then the final one), in arrival order.
    bytes: Vec<u8>,
    /// Whether the final answer is among them.
    done: bool,
}

/// The reorder window; slot 0 is sequence `base`.
#[derive(Debug, Default)]
pub(super) struct Window {
    held: VecDeque<Slot>,
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

    /// An answer to request `seq` (`last`: its final one): out at once if `seq` is the
    /// next one due (after a final one, with every answer that was waiting behind it), else
    /// held. The slot of the request due holds nothing: its answers go straight out.
    #[inline]
    pub(super) fn deliver(&mut self, seq: u64, frame: &[u8], last: bool, out: &mut BytesMut) {
        if seq == self.base {
            out.extend_from_slice(frame);
            if !last {
                return;
            }
            self.base += 1;
            if !self.held.is_empty() {
                self.held.pop_front();
            }
            // Release answers that were waiting for this one; the next request due sends
            // what it has, and the rest waits behind it if it is not done.
            while let Some(front) = self.held.front_mut() {
                let bytes = std::mem::take(&mut front.bytes);
                self.held_bytes -= bytes.len();
                out.extend_from_slice(&bytes);
                if !front.done {
                    break;
                }
                self.held.pop_front();
                self.base += 1;
            }
        } else if seq > self.base {
            let slot = (seq - self.base) as usize;
            if self.held.len() <= slot {
                self.held.resize(slot + 1, Slot::default());
            }
            let s = &mut self.held[slot];
            if s.bytes.is_empty() {
                s.bytes = frame.to_vec(); // one allocation of the answer's size
            } else {
                s.bytes.extend_from_slice(frame);
            }
            s.done |= last;
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
