//! One client connection's task: read → scan → route → forward, answers back out; the
//! client's timeouts (idle, and partial-frame for slow-loris clients); its input buffer's
//! share of the process's buffer budget. It returns why the connection ended, as a
//! [`CloseReason`], and logs it once.
//!
//! Size: about 500 lines, about 80 of them comments; the state struct, its steps and the
//! loop that drives them are one concern, kept in one file (routing, replies and listener
//! state are already apart).

use super::listener::{ListenerCtx, ListenerSlot};
use super::reply::Client;
use super::route::{Blocked, Router};
use crate::budget::Charge;
use crate::config::ClientLimits;
use crate::metrics::ListenerCounters;
use crate::registry::{Registered, Registry};
use crate::transport::Stream;
use bytes::{Buf, BytesMut};
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_core::{ClientFault, CloseReason, Fault, ReplySink};
use switchyard_proto::{CodecError, ConnState, Direction, FrameSet, Framer, Oversize, Protocol};
use tracing::Instrument;

/// Read size for client bytes.
const READ_CHUNK: usize = 16 << 10;
/// First allocation for a client's buffer: small, so idle connections stay cheap.
const FIRST_READ: usize = 2 << 10;
/// How often a client waiting for buffer budget looks again (and asks its worker to make
/// room), should no release wake it first.
const STARVED_RETRY: Duration = Duration::from_millis(25);

/// Serves one accepted client connection until it closes, its PROXY header and TLS
/// handshake done (`peer` is the real client).
pub(crate) async fn serve(stream: Stream, peer: SocketAddr, slot: Rc<ListenerSlot>) {
    let own = slot.current();
    let registry = own.registry.clone();
    let config = &own.config;
    let client = Rc::new(Client::new(
        registry.next_gid(),
        peer,
        config.protocols.requests.clone(),
        (config.correlation(), config.drop_unanswerable),
        config.limits.max_reply_buffer,
        own.counters.clone(),
    ));
    own.counters.opened.inc();
    let handle: Rc<dyn Registered> = client.clone();
    registry.register(client.gid, Rc::downgrade(&handle) as Weak<dyn Registered>);
    drop(handle);
    let span = tracing::info_span!("client", listener = %config.name, %peer, conn = %crate::registry::conn_name(client.gid));
    let reason = drive(stream, &client, &slot, own.clone())
        .instrument(span.clone())
        .await;
    client.close();
    registry.unregister(client.gid);
    client.counters.on_close(&reason);
    let _e = span.enter();
    let CloseReason::Fault(fault) = reason else {
        tracing::debug!(%reason, "client connection closed");
        return;
    };
    let text = fault.to_string();
    if let Some(suppressed) = crate::throttle::admit(&[&config.name, "close", &text]) {
        let party = fault.party();
        if fault.is_internal() {
            tracing::error!(fault = %party, reason = %text, suppressed, "closing client connection");
        } else {
            tracing::warn!(fault = %party, reason = %text, suppressed, "closing client connection");
        }
    }
}

/// A client's input: the bytes read and not yet routed, the frames the framer found in
/// them, and what the framer refused.
struct Input<'b> {
    buf: BytesMut,
    /// The listener's counters, for the requests framed.
    counters: &'b ListenerCounters,
    /// The buffer's share of the process-wide budget; released when the task ends.
    charge: Charge<'b>,
    frames: FrameSet,
    /// Frames before this one are routed (and their bytes consumed).
    cursor: usize,
    /// The framer refused the bytes after `frames`: dealt with once those are routed.
    refused: Option<CodecError>,
    /// Bytes of an oversized request still to discard (memcache: swallowed, as memcached
    /// does).
    skip: u64,
}

impl Input<'_> {
    /// Discards what is to be skipped, then frames what is buffered (if nothing is framed
    /// yet). Returns whether it framed anything new.
    fn scan(&mut self, framer: &mut dyn Framer) -> bool {
        let n = self.skip.min(self.buf.len() as u64);
        self.buf.advance(n as usize);
        self.skip -= n;
        if self.skip > 0 || self.buf.is_empty() {
            return false;
        }
        debug_assert!(self.frames.is_empty());
        if let Err(e) = framer.scan(&self.buf, &mut self.frames) {
            self.refused = Some(e);
        }
        self.counters.messages_in.add(self.frames.len() as u64);
        true
    }

    /// Whether every frame found is routed.
    fn routed(&self) -> bool {
        self.cursor == self.frames.len()
    }

    fn clear_frames(&mut self) {
        self.frames.clear();
        self.cursor = 0;
    }

    /// Bytes that are not yet a whole frame.
    fn partial(&self) -> usize {
        if self.frames.is_empty() {
            self.buf.len()
        } else {
            0
        }
    }
}

/// The deadline the connection's timer is armed for.
#[derive(Debug, Clone, Copy)]
enum Deadline {
    /// A partial frame must be complete by then (`frame_timeout`).
    Frame(Instant),
    /// The client is idle past then (`client_idle_timeout`).
    Idle(Instant),
}

impl Deadline {
    fn at(self) -> Instant {
        match self {
            Deadline::Frame(t) | Deadline::Idle(t) => t,
        }
    }
}

/// How the task may read next.
#[derive(Debug, Clone, Copy)]
struct Reading {
    /// Bytes the input buffer may still take (`max_buffered_bytes`).
    room: usize,
    /// Whether to read now.
    now: bool,
    /// The buffer must grow and the process's budget is spent: wait for budget.
    starved: bool,
}

/// One client connection's state: its input, the protocol's state for it, where it is in
/// its life (reading, quitting, closing after its answers) and its timers.
struct ClientConn<'a> {
    client: &'a Rc<Client>,
    /// The same handle, as the backend side holds it.
    sink: Rc<dyn ReplySink>,
    slot: &'a ListenerSlot,
    /// The listener's context the connection was accepted under.
    own: Rc<ListenerCtx>,
    registry: &'a Registry,
    /// The protocol and the bounds are fixed for the connection's life.
    protocol: Arc<dyn Protocol>,
    limits: ClientLimits,
    framer: Box<dyn Framer>,
    input: Input<'a>,
    /// What the client told the protocol so far (AUTH): the protocol's to read and keep.
    proto: ConnState,
    reading: bool,
    /// The client asked to end (QUIT).
    quit: bool,
    /// Why the connection closes once its answers are out (a request too large to go on).
    close_after: Option<Fault>,
    just_read: bool,
    last_active: Instant,
    partial_since: Option<Instant>,
    /// The idle deadline passed while requests were in flight: close once they are answered.
    idle_due: bool,
}

impl ClientConn<'_> {
    /// A read happened since the last pass: the client is active as of `now`.
    fn touch(&mut self, now: Instant) {
        if std::mem::take(&mut self.just_read) {
            self.last_active = now;
            self.idle_due = false;
        }
    }

    /// Routes what can go now: requests handed back first, then the frames read. Returns
    /// why routing waits, if it does.
    fn route(&mut self, now: Instant) -> Result<Option<Blocked>, CloseReason> {
        loop {
            // Follow reloads, unless the protocol changed under this connection.
            let lctx = self.slot.follow(&self.own);
            let router = Router {
                client: self.client,
                sink: &self.sink,
                lctx: &lctx,
                now,
                ms: switchyard_core::clock::ms_at(now),
            };
            let input = &mut self.input;
            let blocked = match router.requeued()? {
                None => router.frames(
                    &mut input.buf,
                    &input.frames,
                    &mut input.cursor,
                    &mut self.proto,
                )?,
                blocked => blocked,
            };
            if blocked == Some(Blocked::Quit) {
                // Answer what came before, then close; later requests are dropped.
                self.reading = false;
                self.quit = true;
                self.input.clear_frames();
                self.input.buf.clear();
                return Ok(None);
            }
            if blocked.is_some() || !self.input.routed() {
                return Ok(blocked);
            }
            self.input.clear_frames();
            // Everything before the bad bytes is routed: answer them, or close.
            let Some(e) = self.input.refused.take() else {
                return Ok(None);
            };
            if !self.on_refused(e)? {
                return Ok(None);
            }
        }
    }

    /// The framer refused the bytes at the head of the input: the protocol's oversize
    /// answer, then skip them or close; or close at once. Returns whether skipping found
    /// new frames to route.
    fn on_refused(&mut self, e: CodecError) -> Result<bool, CloseReason> {
        self.client.counters.codec_errors[crate::metrics::codec_index(&e)].inc();
        match self.protocol.oversize_answer(&e) {
            Some(Oversize {
                answer,
                skip: Some(len),
            }) => {
                self.client.reply_local(&answer);
                self.input.skip = len;
                Ok(self.input.scan(&mut *self.framer))
            }
            Some(Oversize { answer, skip: None }) => {
                self.client.reply_local(&answer);
                self.reading = false;
                self.input.buf.clear();
                self.close_after = Some(ClientFault::BadRequest(e).into());
                Ok(false)
            }
            // A script that fails is the script's fault, not the client's.
            None => Err(match e {
                CodecError::Script(m) => Fault::Script(m).into(),
                e => ClientFault::BadRequest(e).into(),
            }),
        }
    }

    /// The backend side asked the client to end once answered (its request closed a
    /// backend connection): read nothing more, drop what is unread.
    fn finish_if_asked(&mut self) {
        if let Some(fault) = self.client.take_finish() {
            self.reading = false;
            self.input.clear_frames();
            self.input.buf.clear();
            self.input.refused = None;
            self.close_after.get_or_insert(fault);
        }
    }

    /// Whether nothing is in flight, waiting or unwritten.
    fn idle(&self, out_pending: bool) -> bool {
        self.client.inflight() == 0
            && !out_pending
            && self.input.frames.is_empty()
            && !self.client.has_requeued()
    }

    /// Why the connection ends now, if it does: a failure (at once: waiting to flush could
    /// wait forever on a client that does not read), or idle with reading over.
    fn end(&mut self, idle: bool) -> Option<CloseReason> {
        if let Some(reason) = self.client.failure() {
            return Some(reason);
        }
        if !idle || self.reading {
            return None;
        }
        Some(match self.close_after.take() {
            Some(fault) => fault.into(),
            None if self.quit => CloseReason::Quit,
            None if *self.registry.shutdown.borrow() => CloseReason::ShuttingDown,
            None => CloseReason::ClientClosed,
        })
    }

    /// The next deadline: a partial frame must complete within `frame_timeout`; an idle
    /// client is closed after `client_idle_timeout`. The idle deadline is armed even while
    /// requests are in flight (answers do not wake the task); once it has passed, the task
    /// is woken by answers instead and there is no deadline.
    fn next_deadline(&mut self, now: Instant, idle: bool) -> Option<Deadline> {
        self.partial_since = if self.input.frames.is_empty() && !self.input.buf.is_empty() {
            Some(self.partial_since.unwrap_or(now))
        } else {
            None
        };
        match (self.partial_since, self.idle_due && !idle) {
            (Some(since), _) => Some(Deadline::Frame(since + self.limits.frame_timeout)),
            (None, false) => Some(Deadline::Idle(self.last_active + self.limits.idle_timeout)),
            (None, true) => None,
        }
    }

    /// The timer fired for `deadline`.
    fn on_deadline(&mut self, deadline: Deadline, idle: bool) -> Result<(), CloseReason> {
        match deadline {
            Deadline::Frame(_) => Err(ClientFault::SlowFrame {
                bytes: self.input.buf.len(),
                timeout: self.limits.frame_timeout,
            }
            .into()),
            Deadline::Idle(_) if idle => Err(CloseReason::Idle),
            Deadline::Idle(_) => {
                self.idle_due = true;
                Ok(())
            }
        }
    }

    /// Whether and how much to read next, given why routing waits; grows the buffer (and
    /// its charge on the budget) when it reads.
    fn reading(&mut self, blocked: Option<Blocked>) -> Reading {
        let input = &mut self.input;
        if input.buf.is_empty() && input.buf.capacity() > 4 * READ_CHUNK {
            input.buf = BytesMut::new(); // give a burst's memory back
            input.charge.release_all();
        }
        self.client.set_partial_bytes(input.partial());
        let room = self
            .limits
            .max_buffered_bytes
            .saturating_sub(input.buf.len());
        // Growing the buffer takes budget; reading into room it has does not.
        let grow = input.buf.capacity() - input.buf.len() < 512;
        let may = self.reading && blocked.is_none();
        let starved = may && grow && self.registry.shared.budget.spent();
        if starved {
            self.registry.reclaim();
        }
        let now = may && room > 0 && !starved;
        if now && grow {
            let want = if input.buf.capacity() == 0 {
                FIRST_READ
            } else {
                READ_CHUNK
            };
            input.buf.reserve(want.min(room));
            input.charge.grew_to(input.buf.capacity());
        }
        Reading { room, now, starved }
    }

    /// A read returned `n` bytes (0: the client closed its side).
    fn on_read(&mut self, n: usize) -> Result<(), CloseReason> {
        if n == 0 {
            self.reading = false;
            if !self.input.buf.is_empty() {
                return Err(ClientFault::ClosedMidFrame(self.input.buf.len()).into());
            }
            return Ok(());
        }
        self.just_read = true;
        self.client.counters.bytes_in.add(n as u64);
        self.input.scan(&mut *self.framer);
        Ok(())
    }
}

/// Runs the connection until it ends; says why.
async fn drive(
    stream: Stream,
    client: &Rc<Client>,
    slot: &ListenerSlot,
    own: Rc<ListenerCtx>,
) -> CloseReason {
    let limits = own.config.limits;
    let protocol = own.config.protocols.requests.clone();
    let framer = match protocol.framer(Direction::Requests, limits.max_frame_size) {
        Ok(f) => f,
        Err(e) => return Fault::Config(format!("cannot frame requests: {e}")).into(),
    };
    if let Some((reason, first)) = framer.suspended() {
        // One line per suspension, not one per refused connection.
        if first {
            tracing::warn!(%reason, "refusing new connections until the script's suspension ends");
        }
        return CloseReason::ScriptSuspended;
    }
    let registry = own.registry.clone();
    let stream = Rc::new(stream);
    client.attach(stream.clone());
    let mut c = ClientConn {
        client,
        sink: client.clone(),
        slot,
        own,
        registry: &registry,
        protocol,
        limits,
        framer,
        input: Input {
            buf: BytesMut::new(),
            counters: &client.counters,
            charge: Charge::new(&registry.shared.budget),
            frames: Vec::new(),
            cursor: 0,
            refused: None,
            skip: 0,
        },
        proto: ConnState::default(),
        reading: !*registry.shutdown.borrow(),
        quit: false,
        close_after: None,
        just_read: false,
        last_active: Instant::now(),
        partial_since: None,
        idle_due: false,
    };
    let timer = tokio::time::sleep(limits.idle_timeout);
    tokio::pin!(timer);
    // The timer is re-armed only when a deadline comes earlier than the armed one; when it
    // fires early (the client was active since), the loop re-arms it: no timer work per
    // message.
    let mut armed: Option<Instant> = None;
    // One wake-up registration for the reply handle, and one for shutdown, kept across
    // iterations.
    let changed = client.changed();
    tokio::pin!(changed);
    let mut stop = registry.shutdown.clone();
    let stopping = stop.changed();
    tokio::pin!(stopping);
    loop {
        let now = Instant::now(); // one clock read per pass
        c.touch(now);
        c.finish_if_asked();
        let blocked = match c.route(now) {
            Ok(b) => b,
            Err(reason) => return reason,
        };
        // Answers the proxy gave itself, or left over when the socket was full.
        let out_pending = client.has_output() && !client.flush();
        let idle = c.idle(out_pending);
        if let Some(reason) = c.end(idle) {
            return reason;
        }
        let deadline = c.next_deadline(now, idle);
        if let Some(at) = deadline
            .map(Deadline::at)
            .filter(|&at| armed.is_none_or(|a| at < a))
        {
            timer.as_mut().reset(tokio::time::Instant::from_std(at));
            armed = Some(at);
        }
        let read = c.reading(blocked);
        // Answers are written by whoever delivers them; this task needs waking for them
        // only when it waits on them.
        client.set_waiting(
            blocked.is_some() || !c.reading || c.idle_due || client.has_requeued(),
            out_pending,
        );
        // A release between the check above and this wait is caught by the retry below.
        let freed = registry.shared.budget.freed();
        let step = tokio::select! {
            biased;
            r = stream.writable(), if out_pending => {
                r.map_err(|e| ClientFault::Io(format!("write to client failed: {e}")).into())
            }
            _ = &mut changed => {
                changed.set(client.changed());
                Ok(())
            }
            _ = registry.capacity.notified(), if blocked == Some(Blocked::Backend) => Ok(()),
            // Waiting for budget: woken when some is freed, or to reclaim again.
            _ = freed, if read.starved => Ok(()),
            _ = tokio::time::sleep(STARVED_RETRY), if read.starved => Ok(()),
            r = stream.read(&mut c.input.buf, read.room), if read.now => match r {
                Ok(n) => c.on_read(n),
                Err(e) => Err(ClientFault::Io(format!("read from client failed: {e}")).into()),
            },
            _ = &mut timer, if deadline.is_some() => {
                armed = None;
                match deadline {
                    // Armed for an earlier deadline that has since moved: re-armed above.
                    Some(d) if Instant::now() >= d.at() => c.on_deadline(d, idle),
                    _ => Ok(()),
                }
            }
            _ = &mut stopping, if c.reading => {
                c.reading = false;
                Ok(())
            }
        };
        if let Err(reason) = step {
            return reason;
        }
    }
}
