//! One connected backend connection's pumping: reading answers and matching each to its
//! request (final or provisional), routing pushes and the backend's own requests, answering
//! what the protocol answers itself, writing requests, and timing requests out. The state
//! is a [`Pump`]; its loop ([`pump`]) only waits.

use super::conn::BackendConn;
use crate::config::QuickAck;
use crate::registry::Registry;
use crate::transport::Stream;
use bytes::{Buf, BytesMut};
use std::rc::Rc;
use std::time::{Duration, Instant};
use switchyard_core::correlate::{Answer, Expired};
use switchyard_core::{BackendFault, Fault};
use switchyard_proto::{
    CodecError, Correlation, Direction, Flags, Frame, FrameSet, Framer, IdFormat, Protocols,
};

/// Read size for answers.
const READ_CHUNK: usize = 64 << 10;

/// A gap between reads of answers, with answers due all along, that looks like the
/// server waiting for a delayed ACK (Linux delays one by 40 ms to 200 ms).
const STALL: Duration = Duration::from_millis(30);

/// Why a pump ended.
pub(super) enum Ended {
    /// Retired and idle: a clean close.
    Retired,
    /// Closed by the proxy to be replaced (an `in_order` request timed out).
    Replace(String),
    /// Lost: the backend closed it, or an I/O error, or a bad answer.
    Lost(String),
    /// The listener's answer script failed on the connection's bytes: the stream cannot be
    /// framed any more, but the backend is not at fault (no failure is reported for it).
    ScriptFailed(String),
}

/// Fails request `p` as timed out after `timeout` (its kept copy at hand for the error
/// answer): off the backend's load, counted.
fn fail_timed_out(conn: &BackendConn, p: &super::inflight::Pending, timeout: Duration) {
    let kept = conn.take_kept(p);
    conn.backend.load.on_failed();
    let fault: Fault = BackendFault::TimedOut {
        backend: conn.backend.name.clone(),
        after: timeout,
    }
    .into();
    conn.counters.on_failure(&fault);
    p.fail(&fault, kept.as_ref());
}

/// Routes a backend message that answers nothing (`f`, `frame`) to the client owning its
/// session.
pub(super) fn route_push(conn: &BackendConn, registry: &Registry, frame: &[u8], f: &Frame) {
    let cluster = conn.upstream.borrow().cluster.clone();
    let key = f
        .key
        .map(|k| cluster.session_key(k.bytes(frame, &mut [0; 8])));
    registry.route_push(&cluster, key, frame);
}

/// When the request timer must fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    /// Nothing is outstanding.
    None,
    /// Armed already for this deadline or an earlier one (it then fires early and is armed
    /// again; a request's deadline only moves later as answers come, so this is rare)
    /// come, so it is armed once, and re-armed when it fires early).
    Armed,
    /// Arm it for this instant.
    Arm(Instant),
}

/// One connected backend connection's pumping state.
struct Pump<'a> {
    conn: &'a Rc<BackendConn>,
    registry: &'a Registry,
    framer: Box<dyn Framer>,
    /// The answers' protocol (for what it answers itself).
    protocol: std::sync::Arc<dyn switchyard_proto::Protocol>,
    /// How answers carry the proxy's ids.
    answer_ids: IdFormat,
    rbuf: BytesMut,
    /// Bytes taken from the connection's write buffer, being written.
    out: BytesMut,
    frames: FrameSet,
    request_timeout: Duration,
    /// A request's timeout after a provisional answer (from the last one).
    provisional_timeout: Duration,
    /// When the request timer is armed for, if it is, and whether for a request answered
    /// provisionally.
    armed: Option<(Instant, bool)>,
    /// When the last read of answers came.
    last_read: Instant,
}

impl<'a> Pump<'a> {
    /// Takes the requests queued since the last write, if the last write is done.
    fn take_queued(&mut self) {
        if self.out.is_empty() {
            let mut s = self.conn.state.borrow_mut();
            std::mem::swap(&mut self.out, &mut s.wbuf);
            s.writing = self.out.len();
        }
    }

    /// When request `p` times out: its request timeout after it was sent, or its
    /// provisional timeout after its last provisional answer.
    fn due(&self, p: &super::inflight::Pending) -> Instant {
        p.sent
            + if p.placed.answered {
                self.provisional_timeout
            } else {
                self.request_timeout
            }
    }

    /// The request timer's next deadline: the earlier of the oldest request's awaiting its
    /// first answer and the one's whose last provisional answer is oldest. Armed once for
    /// it, and again only if an earlier one appears (a request sent while only provisionally
    /// answered ones are outstanding) or when it fires early.
    fn next_deadline(&mut self) -> Deadline {
        // Armed for a request awaiting its first answer: no deadline can come before it (a
        // newer request's is later, and so is a provisional answer's unless its timeout is
        // the shorter), so nothing needs looking at.
        if matches!(self.armed, Some((_, false)))
            && self.provisional_timeout >= self.request_timeout
            && !self.conn.state.borrow().corr.is_empty()
        {
            return Deadline::Armed;
        }
        let next = {
            let s = self.conn.state.borrow();
            let (waiting, ringing) = s.corr.oldest_each();
            match (waiting.map(|p| self.due(p)), ringing.map(|p| self.due(p))) {
                (Some(a), Some(b)) if b < a => Some((b, true)),
                (Some(a), _) => Some((a, false)),
                (None, b) => b.map(|b| (b, true)),
            }
        };
        match (next, self.armed) {
            (None, _) => {
                self.armed = None;
                Deadline::None
            }
            (Some((at, _)), Some((armed, _))) if armed <= at => Deadline::Armed,
            (Some((at, ringing)), _) => {
                self.armed = Some((at, ringing));
                Deadline::Arm(at)
            }
        }
    }

    /// Room for the next read.
    fn reserve(&mut self) {
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
            self.rbuf.reserve(READ_CHUNK);
        }
    }

    /// Answers came (`pool.quick_ack = "auto"`): if they came a delayed ACK's time after
    /// the previous read while answers were due all along, the server is holding its
    /// answers for our ACK (Nagle's algorithm on its side): ACK at once from now on.
    fn watch_for_stall(&mut self, now: Instant) {
        let gap = now.saturating_duration_since(self.last_read);
        if gap >= STALL {
            let due_since = self.conn.state.borrow().corr.oldest().map(|p| p.sent);
            if due_since.is_some_and(|sent| sent <= self.last_read) {
                self.conn.quick_ack.set(true);
                tracing::info!(
                    backend = %self.conn.backend.name,
                    slot = self.conn.slot,
                    gap = ?gap,
                    "answers stalled while more were due (the server waits for our ACKs): ACKing each read at once from now on (pool.quick_ack)"
                );
            }
        }
        self.last_read = now;
    }

    /// Answers arrived: each goes to its request's client (or as a push), then every client
    /// given answers is written to once.
    fn on_read(&mut self, now: Instant) -> Result<(), Ended> {
        if let Err(e) = self.framer.scan(&self.rbuf, &mut self.frames) {
            self.conn.counters.codec_errors[crate::metrics::codec_index(&e)].inc();
            return Err(match e {
                CodecError::Script(e) => {
                    Ended::ScriptFailed(format!("the answer script failed: {e}"))
                }
                e => Ended::Lost(format!("bad answer from backend: {e}")),
            });
        }
        let was_full = !self.conn.has_room();
        let mut frames = std::mem::take(&mut self.frames);
        for f in frames.drain(..) {
            let len = f.len as usize;
            self.on_answer(&self.rbuf[..len], &f, now);
            self.rbuf.advance(len);
        }
        self.frames = frames;
        self.registry.flush_clients();
        if self.rbuf.is_empty() && self.rbuf.capacity() > 4 * READ_CHUNK {
            self.rbuf = BytesMut::with_capacity(READ_CHUNK); // give a large answer's memory back
        }
        if was_full && self.conn.has_room() {
            self.registry.capacity.notify_waiters();
        }
        Ok(())
    }

    /// One backend message: the answer to a request (final or provisional), a request of
    /// the backend's own or a push (to the session's owner), or one the protocol handles
    /// itself (a keep-alive).
    fn on_answer(&self, frame: &[u8], f: &Frame, now: Instant) {
        let conn = self.conn;
        if f.flags.has(Flags::LOCAL | Flags::DROP) {
            self.locally(frame, f);
            return;
        }
        if f.flags.has(Flags::REQUEST) {
            conn.counters.on_answer(frame.len(), None);
            route_push(conn, self.registry, frame, f);
            return;
        }
        let id = match conn.state.borrow().corr.mode() {
            Correlation::ById => {
                f.id.and_then(|s| switchyard_proto::parse_proxy_id(self.answer_ids, s.slice(frame)))
            }
            Correlation::ByIdAsSent => f.id.map(|s| {
                let mut scratch = [0; 8];
                let key = f.key.map(|k| k.bytes(frame, &mut scratch));
                switchyard_core::correlate::transaction_id(key, s.slice(frame))
            }),
            _ => None,
        };
        if f.flags.has(Flags::PROVISIONAL) {
            self.on_provisional(frame, f, id, now);
            return;
        }
        let answer = conn.state.borrow_mut().corr.answer(id);
        match answer {
            Answer::Matched(p) => {
                conn.forget(&p);
                if p.placed.answered {
                    conn.counters.on_further_answer(frame.len());
                    conn.backend.load.on_final_answer();
                } else {
                    let latency = now.saturating_duration_since(p.sent);
                    conn.counters.on_answer(frame.len(), Some(latency));
                    conn.backend.on_answer(latency);
                }
                p.sink.answer(&p.ticket, frame, f.id);
                if p.ticket.end_session.is_some() {
                    conn.done(&p.ticket);
                } else if f.flags.has(Flags::ENDS_SESSION) {
                    self.end_session(frame, f);
                }
                self.registry.defer_flush(&p.sink);
            }
            Answer::Late => {
                conn.counters.on_answer(frame.len(), None);
                tracing::debug!(backend = %conn.backend.name, "dropping the late answer of a timed-out request");
            }
            Answer::Unmatched => {
                conn.counters.on_answer(frame.len(), None);
                route_push(conn, self.registry, frame, f);
            }
        }
    }

    /// A provisional answer (SIP's 1xx): to its request's client, the request left waiting
    /// for its final answer, its timeout started again.
    #[cold]
    fn on_provisional(&self, frame: &[u8], f: &Frame, id: Option<u64>, now: Instant) {
        let conn = self.conn;
        let found = {
            let mut s = conn.state.borrow_mut();
            match s.corr.provisional(id) {
                Answer::Matched(p) => {
                    let first = !std::mem::replace(&mut p.placed.answered, true);
                    let latency = now.saturating_duration_since(p.sent);
                    p.sent = now;
                    Some((p.sink.clone(), p.ticket.clone(), first.then_some(latency)))
                }
                Answer::Late => None,
                Answer::Unmatched => {
                    drop(s);
                    conn.counters.on_answer(frame.len(), None);
                    route_push(conn, self.registry, frame, f);
                    return;
                }
            }
        };
        let Some((sink, ticket, first)) = found else {
            conn.counters.on_answer(frame.len(), None);
            return;
        };
        match first {
            Some(latency) => {
                conn.counters.on_answer(frame.len(), Some(latency));
                conn.backend.on_provisional(latency);
            }
            None => conn.counters.on_further_answer(frame.len()),
        }
        sink.provisional(&ticket, frame, f.id);
        self.registry.defer_flush(&sink);
    }

    /// The session of this final answer (found by the answer's own key) ended: the answer
    /// was marked `ENDS_SESSION`.
    #[cold]
    fn end_session(&self, frame: &[u8], f: &Frame) {
        if let Some(k) = f.key {
            let cluster = self.conn.upstream.borrow().cluster.clone();
            cluster.end_session(cluster.session_key(k.bytes(frame, &mut [0; 8])));
        }
    }

    /// A backend frame the protocol handles itself: a `LOCAL` one (a keep-alive ping)
    /// answered on this connection with the protocol's `local_answer`, a `DROP` one
    /// forgotten.
    #[cold]
    fn locally(&self, frame: &[u8], f: &Frame) {
        self.conn.counters.on_answer(frame.len(), None);
        if f.flags.has(Flags::DROP) {
            return;
        }
        match self.protocol.local_answer(frame) {
            Ok(Some(answer)) => self.conn.reply_local(&answer),
            Ok(None) => {}
            Err(e) => {
                if let Some(suppressed) = crate::throttle::admit(&[&self.conn.backend.name, &e]) {
                    tracing::warn!(backend = %self.conn.backend.name, suppressed, "{e}; not answering the backend's message");
                }
            }
        }
    }

    /// `n` bytes reached the socket.
    fn on_written(&mut self, n: usize) {
        let was_full = !self.conn.has_room();
        self.out.advance(n);
        self.conn.wrote(n);
        if was_full && self.conn.has_room() {
            self.registry.capacity.notify_waiters();
        }
    }

    /// The request timer fired: fails the requests older than the timeout; an `in_order`
    /// connection that cannot skip an answer must be replaced.
    fn on_deadline(&mut self) -> Result<(), Ended> {
        self.armed = None;
        let conn = self.conn;
        let timeout = self.request_timeout;
        let now = Instant::now();
        let is_old = |p: &super::inflight::Pending| now >= self.due(p);
        loop {
            let expired = conn.state.borrow_mut().corr.oldest_expired(is_old);
            match expired {
                None => return Ok(()),
                Some(Expired::Request(p)) if p.placed.answered => {
                    // The backend answered provisionally, so it is alive: the final answer
                    // (a phone that was never picked up) is not the backend's failure.
                    let after = self.provisional_timeout;
                    if let Some(suppressed) =
                        crate::throttle::admit(&[&conn.backend.name, "no final answer"])
                    {
                        tracing::warn!(backend = %conn.backend.name, timeout = ?after, suppressed, "no final answer within provisional_timeout of the last provisional one; failing the request");
                    }
                    fail_timed_out(conn, &p, after);
                }
                Some(Expired::Request(p)) => {
                    conn.report_failure("request timeout");
                    if let Some(suppressed) =
                        crate::throttle::admit(&[&conn.backend.name, "request timed out"])
                    {
                        tracing::warn!(backend = %conn.backend.name, timeout = ?timeout, suppressed, "request timed out; failing it");
                    }
                    fail_timed_out(conn, &p, timeout);
                }
                Some(Expired::ConnectionLost) => {
                    // An in_order connection cannot skip an answer: close and replace it.
                    // The request that timed out fails; those behind it settle as on any
                    // loss (re-sent on probation where they may be).
                    let oldest = conn.state.borrow_mut().corr.answer(None);
                    if let Answer::Matched(p) = oldest {
                        fail_timed_out(conn, &p, timeout);
                    }
                    self.registry.flush_clients();
                    return Err(Ended::Replace(format!(
                        "request timed out after {timeout:?}; an in_order connection cannot skip an answer, replacing it"
                    )));
                }
            }
        }
    }
}

/// Moves bytes until the connection ends; returns why, and the bytes the writer had taken
/// but not written.
pub(super) async fn pump(
    conn: &Rc<BackendConn>,
    stream: Stream,
    protocols: &Protocols,
    max_frame: usize,
    registry: &Registry,
    ((request_timeout, provisional_timeout), quick_ack): ((Duration, Duration), QuickAck),
) -> (Ended, BytesMut) {
    match quick_ack {
        QuickAck::Always => conn.quick_ack.set(true),
        QuickAck::Never => conn.quick_ack.set(false),
        QuickAck::Auto => {}
    }
    let framer = match protocols.answers.framer(Direction::Answers, max_frame) {
        Ok(f) => f,
        Err(e) => {
            return (
                Ended::Lost(format!("cannot frame answers: {e}")),
                BytesMut::new(),
            )
        }
    };
    let mut p = Pump {
        conn,
        registry,
        framer,
        protocol: protocols.answers.clone(),
        answer_ids: protocols.answers.capabilities().id_format,
        rbuf: BytesMut::with_capacity(READ_CHUNK),
        out: BytesMut::new(),
        frames: FrameSet::new(),
        request_timeout,
        provisional_timeout,
        armed: None,
        last_read: Instant::now(),
    };
    let timer = tokio::time::sleep(request_timeout);
    tokio::pin!(timer);
    // One wake-up registration for new requests, kept across iterations.
    let queued = conn.notify.notified();
    tokio::pin!(queued);
    loop {
        p.take_queued();
        if p.out.is_empty() && conn.idle_and_retired() {
            return (Ended::Retired, p.out);
        }
        let deadline = p.next_deadline();
        if let Deadline::Arm(at) = deadline {
            timer.as_mut().reset(tokio::time::Instant::from_std(at));
        }
        p.reserve();
        let step = tokio::select! {
            biased;
            r = stream.read(&mut p.rbuf, usize::MAX) => match r {
                Ok(0) => Err(Ended::Lost("backend closed the connection".into())),
                Ok(_) => {
                    let now = Instant::now();
                    if quick_ack == QuickAck::Auto && !conn.quick_ack.get() {
                        p.watch_for_stall(now);
                    }
                    if conn.quick_ack.get() && !conn.state.borrow().corr.is_empty() {
                        // More answers are due: ACK these at once, or a server with Nagle's
                        // algorithm on (nsd) holds its next answers for the ACK our kernel
                        // delays (~40 ms).
                        let _ = socket2::SockRef::from(stream.tcp()).set_quickack(true);
                    }
                    p.on_read(now)
                }
                Err(e) => Err(Ended::Lost(format!("read failed: {e}"))),
            },
            r = stream.write(&p.out), if !p.out.is_empty() || stream.pending() => match r {
                Ok(n) => {
                    p.on_written(n);
                    Ok(())
                }
                Err(e) => Err(Ended::Lost(format!("write failed: {e}"))),
            },
            _ = &mut timer, if deadline != Deadline::None => p.on_deadline(),
            _ = &mut queued, if p.out.is_empty() => {
                queued.set(conn.notify.notified());
                Ok(())
            }
        };
        if let Err(ended) = step {
            return (ended, p.out);
        }
    }
}
