//! Write-back: a client's answers waiting for its socket, and the stream they go out on.
//! Whoever delivers answers writes them straight out, once per batch (the backend task,
//! after each read of its backend); the client task takes over only when the socket is
//! full, and is woken for answers only when it waits on them.

use crate::metrics::Counter;
use crate::transport::Stream;
use bytes::{Buf, BytesMut};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// Most output buffer kept once everything is written.
const KEEP_OUTPUT: usize = 256 << 10;

/// A client's output.
#[derive(Debug, Default)]
pub(super) struct Output {
    pub(super) buf: RefCell<BytesMut>,
    /// The client's stream; `None` before [`Output::attach`] and after close.
    writer: RefCell<Option<Rc<Stream>>>,
    /// On the registry's list of clients to flush.
    flush_queued: Cell<bool>,
    /// The client task waits on answers (not only on its socket): wake it for each.
    pub(super) wake_on_answer: Cell<bool>,
    /// The client task waits for the socket to take more: leave the writing to it.
    pub(super) write_blocked: Cell<bool>,
}

impl Output {
    /// The stream to write to (the client task reads from and waits on it too).
    pub(super) fn attach(&self, writer: Rc<Stream>) {
        *self.writer.borrow_mut() = Some(writer);
    }

    /// Writes what the socket takes now: `Ok(true)` if all is written, `Ok(false)` if the
    /// socket is full, `Err` if it failed.
    /// `written` counts the bytes written.
    pub(super) fn flush(&self, written: &Counter) -> Result<bool, String> {
        let Some(w) = self.writer.borrow().clone() else {
            return Ok(self.buf.borrow().is_empty());
        };
        let mut buf = self.buf.borrow_mut();
        while !buf.is_empty() {
            match w.try_write(&buf) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    written.add(n as u64);
                    buf.advance(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(format!("write to client failed: {e}")),
            }
        }
        // With TLS, the last bytes may still wait in its buffer.
        match w.try_flush() {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            Err(e) => return Err(format!("write to client failed: {e}")),
        }
        // Give a burst's memory back: an idle connection keeps a small buffer, whatever it
        // once carried.
        if buf.capacity() > KEEP_OUTPUT {
            *buf = BytesMut::new();
        }
        Ok(true)
    }

    /// Marks the client for a flush at the end of the current batch; `true` if it was not.
    pub(super) fn queue_flush(&self) -> bool {
        !self.flush_queued.replace(true)
    }

    /// The batch's flush is being done.
    pub(super) fn dequeue_flush(&self) {
        self.flush_queued.set(false);
    }

    /// Whether answers are waiting to be written (in the buffer, or in TLS's).
    pub(super) fn pending(&self) -> bool {
        !self.buf.borrow().is_empty() || self.writer.borrow().as_ref().is_some_and(|w| w.pending())
    }

    /// Drops what is waiting and the stream (its socket closes once the client task's
    /// handle goes too), with TLS's goodbye if the socket takes it now.
    pub(super) fn release(&self) {
        *self.buf.borrow_mut() = BytesMut::new();
        if let Some(w) = self.writer.borrow_mut().take() {
            w.close_notify();
        }
    }
}
