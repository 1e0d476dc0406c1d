//! One client connection's task: read → scan → route → forward, answers back out; the
//! client's timeouts (idle, and partial-frame for slow-loris clients); its input buffer's
//! share of the process's buffer budget. It returns why the connection ended, as a
//! [`CloseReason`], and logs it once.

use super::listener::{ListenerCtx, ListenerSlot};
use super::reply::Client;
use super::route::{Blocked, Router};
use crate::budget::Charge;
use crate::registry::Registered;
use bytes::{Buf, BufMut, BytesMut};
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_core::{ClientFault, CloseReason, Fault, ReplySink};
use switchyard_proto::{CodecError, ConnState, Correlation, Direction, FrameSet, Framer, Oversize};
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tracing::Instrument;

/// Read size for client bytes.
const READ_CHUNK: usize = 16 << 10;
/// First allocation for a client's buffer: small, so idle connections stay cheap.
const FIRST_READ: usize = 2 << 10;
/// How often a client waiting for buffer budget looks again (and asks its worker to make
/// room), should no release wake it first.
const STARVED_RETRY: Duration = Duration::from_millis(25);

/// Decrements the listener's connection count when the client task ends.
struct ConnGuard(Arc<AtomicUsize>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one accepted client connection until it closes. The caller has counted it in
/// `slot.active`.
pub(crate) async fn serve(stream: TcpStream, peer: SocketAddr, slot: Rc<ListenerSlot>) {
    let _guard = ConnGuard(slot.active.clone());
    let own = slot.current();
    let registry = own.registry.clone();
    let config = &own.config;
    let client = Rc::new(Client::new(
        registry.next_gid(),
        peer,
        config.protocols.requests.clone(),
        config.correlation() == Correlation::InOrder,
        config.limits.max_reply_buffer,
    ));
    let handle: Rc<dyn Registered> = client.clone();
    registry.register(client.gid, Rc::downgrade(&handle) as Weak<dyn Registered>);
    drop(handle);
    let span = tracing::info_span!("client", listener = %config.name, %peer, conn = client.gid);
    let reason = drive(stream, &client, &slot, own.clone())
        .instrument(span.clone())
        .await;
    client.close();
    registry.unregister(client.gid);
    let _e = span.enter();
    let CloseReason::Fault(fault) = reason else {
        tracing::debug!(%reason, "client connection closed");
        return;
    };
    registry
        .shared
        .stats
        .clients_failed
        .fetch_add(1, Ordering::Relaxed);
    let text = fault.to_string();
    if let Some(suppressed) = crate::throttle::admit(&[&config.name, "close", &text]) {
        if fault.is_internal() {
            tracing::error!(reason = %text, suppressed, "closing client connection");
        } else {
            tracing::warn!(reason = %text, suppressed, "closing client connection");
        }
    }
}

/// A client's input: the bytes read and not yet routed, the frames the framer found in
/// them, and what the framer refused.
struct Input<'b> {
    buf: BytesMut,
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

/// Runs the connection until it ends; says why.
async fn drive(
    stream: TcpStream,
    client: &Rc<Client>,
    slot: &ListenerSlot,
    own: Rc<ListenerCtx>,
) -> CloseReason {
    // The protocol and the bounds are fixed for the connection's life.
    let limits = own.config.limits;
    let protocol = own.config.protocols.requests.clone();
    let mut framer = match protocol.framer(Direction::Requests, limits.max_frame_size) {
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
    let budget = &registry.shared.budget;
    let (mut rd, wr) = stream.into_split();
    let wr = client.attach(wr);
    let sink: Rc<dyn ReplySink> = client.clone();
    let shutdown = registry.shutdown.clone();
    let mut input = Input {
        buf: BytesMut::new(),
        charge: Charge::new(budget),
        frames: Vec::new(),
        cursor: 0,
        refused: None,
        skip: 0,
    };
    // Why the connection closes once its answers are out (a request too large to go on).
    let mut close_after: Option<Fault> = None;
    let mut reading = !*shutdown.borrow();
    let mut quit = false;
    let mut last_active = Instant::now();
    let mut partial_since: Option<Instant> = None;
    // What the client told the protocol so far (AUTH): the protocol's to read and keep.
    let mut proto = ConnState::default();
    let timer = tokio::time::sleep(limits.idle_timeout);
    tokio::pin!(timer);
    // The timer is re-armed only when a deadline comes earlier than the armed one; when it
    // fires early (the client was active since), the loop re-arms it: no timer work per
    // message.
    let mut armed: Option<Instant> = None;
    let mut just_read = false;
    // The idle deadline passed while requests were in flight: close once they are answered.
    let mut idle_due = false;
    // One wake-up registration for the client's reply handle, kept across iterations.
    let changed = client.changed();
    tokio::pin!(changed);
    let mut stop = shutdown.clone();
    let stopping = stop.changed();
    tokio::pin!(stopping);
    loop {
        // One clock read per iteration.
        let now = Instant::now();
        if just_read {
            last_active = now;
            just_read = false;
            idle_due = false;
        }
        // Follow reloads, unless the protocol changed under this connection.
        let lctx = slot.follow(&own);
        let router = Router {
            client,
            sink: &sink,
            lctx: &lctx,
            now,
        };
        let routed = match router.requeued() {
            Ok(None) => router.frames(&mut input.buf, &input.frames, &mut input.cursor, &mut proto),
            other => other,
        };
        let mut blocked = match routed {
            Ok(b) => b,
            Err(fault) => return fault.into(),
        };
        if blocked == Some(Blocked::Quit) {
            // Answer what came before, then close; later requests are dropped.
            reading = false;
            quit = true;
            input.clear_frames();
            input.buf.clear();
            blocked = None;
        }
        if blocked.is_none() && input.routed() {
            input.clear_frames();
            if let Some(e) = input.refused.take() {
                // Everything before the bad bytes is routed: answer them, or close.
                match protocol.oversize_answer(&e) {
                    Some(Oversize {
                        answer,
                        skip: Some(len),
                    }) => {
                        client.reply_local(&answer);
                        input.skip = len;
                        if input.scan(&mut *framer) {
                            continue;
                        }
                    }
                    Some(Oversize { answer, skip: None }) => {
                        client.reply_local(&answer);
                        reading = false;
                        input.buf.clear();
                        close_after = Some(ClientFault::BadRequest(e).into());
                    }
                    None => return ClientFault::BadRequest(e).into(),
                }
            }
        }
        // Answers the proxy gave itself, or left over when the socket was full.
        let out_pending = client.has_output() && !client.flush();
        // A failed client closes at once: waiting to flush could wait forever on a client
        // that does not read.
        if let Some(reason) = client.failure() {
            return reason;
        }
        let idle = client.inflight() == 0
            && !out_pending
            && input.frames.is_empty()
            && !client.has_requeued();
        if idle && !reading {
            return match close_after {
                Some(fault) => fault.into(),
                None if quit => CloseReason::Quit,
                None if *shutdown.borrow() => CloseReason::ShuttingDown,
                None => CloseReason::ClientClosed,
            };
        }
        // Timeouts: a partial frame must complete within frame_timeout; an idle client is
        // closed after idle_timeout.
        partial_since = if input.frames.is_empty() && !input.buf.is_empty() {
            Some(partial_since.unwrap_or(now))
        } else {
            None
        };
        // The idle deadline is armed even while requests are in flight (answers do not wake
        // this task); if it passes then, the task asks to be woken by answers instead.
        let deadline = match (partial_since, idle_due && !idle) {
            (Some(since), _) => Some(Deadline::Frame(since + limits.frame_timeout)),
            (None, false) => Some(Deadline::Idle(last_active + limits.idle_timeout)),
            (None, true) => None,
        };
        if let Some(d) = deadline {
            if armed.is_none_or(|a| d.at() < a) {
                timer.as_mut().reset(tokio::time::Instant::from_std(d.at()));
                armed = Some(d.at());
            }
        }
        if input.buf.is_empty() && input.buf.capacity() > 4 * READ_CHUNK {
            input.buf = BytesMut::new(); // give a burst's memory back
            input.charge.release_all();
        }
        client.set_partial_bytes(input.partial());
        let room = limits.max_buffered_bytes.saturating_sub(input.buf.len());
        // Growing the buffer takes budget; reading into room it has does not.
        let grow = input.buf.capacity() - input.buf.len() < 512;
        let starved = grow && budget.spent();
        let may_read = reading && blocked.is_none();
        if starved && may_read {
            registry.reclaim();
        }
        let can_read = may_read && room > 0 && !starved;
        // Answers are written by whoever delivers them; this task needs waking for them
        // only when it waits on them.
        client.set_waiting(
            blocked.is_some() || !reading || idle_due || client.has_requeued(),
            out_pending,
        );
        if can_read && grow {
            let want = if input.buf.capacity() == 0 {
                FIRST_READ
            } else {
                READ_CHUNK
            };
            input.buf.reserve(want.min(room));
            input.charge.grew_to(input.buf.capacity());
        }
        // A release between the check above and this wait is caught by the retry below.
        let freed = budget.freed();
        tokio::select! {
            biased;
            r = wr.writable(), if out_pending => {
                if let Err(e) = r {
                    return ClientFault::Io(format!("write to client failed: {e}")).into();
                }
            }
            _ = &mut changed => changed.set(client.changed()),
            _ = registry.capacity.notified(), if blocked == Some(Blocked::Backend) => {}
            // Waiting for budget: woken when some is freed, or to reclaim again.
            _ = freed, if starved && may_read => {}
            _ = tokio::time::sleep(STARVED_RETRY), if starved && may_read => {}
            r = read_bounded(&mut rd, &mut input.buf, room), if can_read => match r {
                Ok(0) => {
                    reading = false;
                    if !input.buf.is_empty() {
                        return ClientFault::ClosedMidFrame(input.buf.len()).into();
                    }
                }
                Ok(_) => {
                    just_read = true;
                    input.scan(&mut *framer);
                }
                Err(e) => return ClientFault::Io(format!("read from client failed: {e}")).into(),
            },
            _ = &mut timer, if deadline.is_some() => {
                armed = None;
                let Some(d) = deadline else { continue };
                if Instant::now() < d.at() {
                    continue; // armed for an earlier deadline that has since moved
                }
                match d {
                    Deadline::Frame(_) => {
                        return ClientFault::SlowFrame {
                            bytes: input.buf.len(),
                            timeout: limits.frame_timeout,
                        }
                        .into();
                    }
                    Deadline::Idle(_) if idle => return CloseReason::Idle,
                    Deadline::Idle(_) => idle_due = true,
                }
            }
            _ = &mut stopping, if reading => reading = false,
        }
    }
}

/// Reads at most `room` more bytes into `buf`.
async fn read_bounded(
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    room: usize,
) -> std::io::Result<usize> {
    let mut limited = (&mut *buf).limit(room);
    rd.read_buf(&mut limited).await
}
