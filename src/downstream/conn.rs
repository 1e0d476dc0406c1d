//! One client connection's task: read → scan → route → forward, answers back out, and the
//! client's timeouts (idle, and partial-frame for slow-loris clients).

use super::reply::{Client, Requeued};
use crate::balancer::{Cluster, Picker, Routed};
use crate::budget::Charge;
use crate::codec::error_reply::{ErrorReplier, Failure};
use crate::codec::plan::{join, ConnState, Part, Plan};
use crate::codec::{CodecError, Frame, FrameSet, Key, Span};
use crate::config::{Correlation, ListenerConfig};
use crate::upstream::{Pool, PoolTarget, Req};
use crate::worker::WorkerCtx;
use bytes::{Buf, BufMut, BytesMut};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tracing::Instrument;

/// Read size for client bytes.
const READ_CHUNK: usize = 16 << 10;
/// First allocation for a client's buffer: small, so idle connections stay cheap.
const FIRST_READ: usize = 2 << 10;
/// How often a client waiting for buffer budget looks again (and asks its worker to make
/// room), should no release wake it first.
const STARVED_RETRY: std::time::Duration = std::time::Duration::from_millis(25);

/// Everything a client task of one listener needs, per worker, for one config generation.
#[derive(Debug)]
pub struct ListenerCtx {
    /// The listener's config.
    pub config: ListenerConfig,
    /// The cluster it balances over.
    pub cluster: Arc<Cluster>,
    /// This worker's connections to that cluster's backends.
    pub pool: Rc<Pool>,
    /// This worker's policy state for the cluster.
    pub picker: RefCell<Picker>,
    /// How failed requests are answered on this worker, if the protocol can.
    pub error_reply: Option<Rc<ErrorReplier>>,
    /// The worker.
    pub worker: Rc<WorkerCtx>,
}

impl ListenerCtx {
    /// Whether connections of `other` speak the same protocol, so a connection accepted
    /// under one can be served under the other.
    pub fn same_protocol(&self, other: &ListenerConfig) -> bool {
        let a = &self.config;
        a.codec == other.codec
            && a.response_codec == other.response_codec
            && a.correlation == other.correlation
            && a.limits.max_frame_size == other.limits.max_frame_size
    }
}

/// A listener's current context on one worker; replaced on reload. Client connections
/// follow the current context unless its protocol changed under them.
#[derive(Debug)]
pub struct ListenerSlot {
    current: RefCell<Rc<ListenerCtx>>,
    /// Open client connections of this listener on every worker.
    pub active: Arc<AtomicUsize>,
}

impl ListenerSlot {
    /// A slot holding `ctx`.
    pub fn new(ctx: Rc<ListenerCtx>, active: Arc<AtomicUsize>) -> Self {
        ListenerSlot {
            current: RefCell::new(ctx),
            active,
        }
    }

    /// The current context.
    pub fn current(&self) -> Rc<ListenerCtx> {
        self.current.borrow().clone()
    }

    /// Installs a reloaded context.
    pub fn replace(&self, ctx: Rc<ListenerCtx>) {
        *self.current.borrow_mut() = ctx;
    }
}

/// Why routing a frame could not proceed now.
enum Blocked {
    /// The client has `max_inflight` requests outstanding: wait for answers.
    Inflight,
    /// The chosen backends are full: wait for a backend connection to drain.
    Backend,
    /// The client asked to end the connection (e.g. QUIT): read nothing more.
    Quit,
}

/// Decrements the listener's connection count when the client task ends.
struct ConnGuard(Arc<AtomicUsize>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one accepted client connection until it closes. The caller has counted it in
/// `slot.active`.
pub async fn serve(stream: TcpStream, peer: SocketAddr, slot: Rc<ListenerSlot>) {
    let _guard = ConnGuard(slot.active.clone());
    let own = slot.current();
    let worker = own.worker.clone();
    let client = Rc::new(Client::new(
        worker.next_gid(),
        peer,
        own.config.limits.max_reply_buffer,
        own.config.correlation == Correlation::InOrder,
    ));
    client.answer_errors(own.error_reply.clone());
    worker.register(&client);
    let span = tracing::info_span!("client", listener = %own.config.name, %peer, conn = client.gid);
    let outcome = drive(stream, &client, &slot, own)
        .instrument(span.clone())
        .await;
    client.close();
    worker.unregister(client.gid);
    let _e = span.enter();
    match outcome {
        Ok(reason) => tracing::debug!(reason, "client connection closed"),
        Err(reason) => {
            worker
                .shared
                .stats
                .clients_failed
                .fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = crate::throttle::admit(&[&own_name(&slot), "close", &reason])
            {
                tracing::warn!(%reason, suppressed, "closing client connection")
            }
        }
    }
}

fn own_name(slot: &ListenerSlot) -> String {
    slot.current().config.name.clone()
}

/// Runs the connection. `Ok` is an orderly end, `Err` a reason to log loudly.
async fn drive(
    stream: TcpStream,
    client: &Rc<Client>,
    slot: &ListenerSlot,
    own: Rc<ListenerCtx>,
) -> Result<&'static str, String> {
    // The codec and the bounds are fixed for the connection's life.
    let limits = own.config.limits;
    let mut codec = own
        .config
        .codec
        .build(limits.max_frame_size)
        .map_err(|e| format!("cannot frame requests: {e}"))?;
    if let Some((reason, first)) = codec.suspended() {
        // One line per suspension, not one per refused connection.
        if first {
            tracing::warn!(%reason, "refusing new connections until the script's suspension ends");
        }
        return Ok("refused: the listener's protocol script is suspended");
    }
    let worker = own.worker.clone();
    let (mut rd, wr) = stream.into_split();
    let wr = client.attach(wr);
    let shutdown = worker.shutdown.clone();
    let mut buf = BytesMut::new();
    // The buffer's share of the process-wide budget; released when the task ends.
    let mut charge = Charge::new(&worker.shared.budget);
    let mut frames: FrameSet = Vec::new();
    let mut cursor = 0usize;
    // The codec refused the bytes after `frames`: dealt with once those are routed.
    let mut refused: Option<CodecError> = None;
    // Bytes of an oversized request still to discard (memcache: swallowed, as memcached
    // does).
    let mut skip = 0u64;
    // Why the connection closes once its answers are out (a request too large to go on).
    let mut close_after: Option<String> = None;
    let mut reading = !*shutdown.borrow();
    let mut last_active = Instant::now();
    let mut partial_since: Option<Instant> = None;
    let mut proto = ConnState {
        authenticated: own.config.password.is_none(),
    };
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
        let current = slot.current();
        let lctx = if Rc::ptr_eq(&current, &own) || current.same_protocol(&own.config) {
            current
        } else {
            own.clone()
        };
        let mut blocked = match route_requeued(client, &lctx, now)? {
            Some(b) => Some(b),
            None => route_frames(
                &mut buf,
                &frames,
                &mut cursor,
                client,
                &lctx,
                &mut proto,
                now,
            )?,
        };
        if matches!(blocked, Some(Blocked::Quit)) {
            // Answer what came before, then close; later requests are dropped.
            reading = false;
            frames.clear();
            cursor = 0;
            buf.clear();
            blocked = None;
        }
        if blocked.is_none() && cursor == frames.len() {
            frames.clear();
            cursor = 0;
            if let Some(e) = refused.take() {
                // Everything before the bad bytes is routed: answer them, or close.
                match lctx.config.codec.oversize_answer(&e) {
                    Some((answer, Some(len))) => {
                        client.reply_local(&answer);
                        skip = len;
                        discard(&mut buf, &mut skip);
                        if skip == 0 && !buf.is_empty() {
                            if let Err(e) = codec.scan(&buf, &mut frames) {
                                refused = Some(e);
                            }
                            continue;
                        }
                    }
                    Some((answer, None)) => {
                        client.reply_local(&answer);
                        reading = false;
                        buf.clear();
                        close_after = Some(format!("bad request from client: {e}"));
                    }
                    None => return Err(format!("bad request from client: {e}")),
                }
            }
        }
        // Answers the proxy gave itself, or left over when the socket was full.
        let out_pending = client.has_output() && !client.flush();
        // A failed client closes at once: waiting to flush could wait forever on a client
        // that does not read.
        if let Some(reason) = client.failure() {
            return Err(reason);
        }
        let idle =
            client.inflight() == 0 && !out_pending && frames.is_empty() && !client.has_requeued();
        if idle && !reading {
            if let Some(reason) = close_after {
                return Err(reason);
            }
            return Ok(if *shutdown.borrow() {
                "shutting down"
            } else {
                "client closed"
            });
        }
        // Timeouts: a partial frame must complete within frame_timeout; an idle client is
        // closed after idle_timeout.
        partial_since = if frames.is_empty() && !buf.is_empty() {
            Some(partial_since.unwrap_or(now))
        } else {
            None
        };
        // The idle deadline is armed even while requests are in flight (answers do not wake
        // this task); if it passes then, the task asks to be woken by answers instead.
        let deadline = match (partial_since, idle_due && !idle) {
            (Some(since), _) => Some((since + limits.frame_timeout, "frame_timeout")),
            (None, false) => Some((last_active + limits.idle_timeout, "client_idle_timeout")),
            (None, true) => None,
        };
        if let Some((at, _)) = deadline {
            if armed.is_none_or(|a| at < a) {
                timer.as_mut().reset(tokio::time::Instant::from_std(at));
                armed = Some(at);
            }
        }
        if buf.is_empty() && buf.capacity() > 4 * READ_CHUNK {
            buf = BytesMut::new(); // give a burst's memory back
            charge.release_all();
        }
        client.set_partial_bytes(if frames.is_empty() { buf.len() } else { 0 });
        let room = limits.max_buffered_bytes.saturating_sub(buf.len());
        // Growing the buffer takes budget; reading into room it has does not.
        let grow = buf.capacity() - buf.len() < 512;
        let starved = grow && worker.shared.budget.spent();
        if starved && reading && blocked.is_none() {
            worker.reclaim();
        }
        let can_read = reading && blocked.is_none() && room > 0 && !starved;
        // Answers are written by whoever delivers them; this task needs waking for them
        // only when it waits on them.
        client.set_waiting(
            blocked.is_some() || !reading || idle_due || client.has_requeued(),
            out_pending,
        );
        if can_read && grow {
            let want = if buf.capacity() == 0 {
                FIRST_READ
            } else {
                READ_CHUNK
            };
            buf.reserve(want.min(room));
            charge.grew_to(buf.capacity());
        }
        // A release between the check above and this wait is caught by the retry below.
        let freed = worker.shared.budget.freed();
        tokio::select! {
            biased;
            r = wr.writable(), if out_pending => {
                if let Err(e) = r {
                    return Err(format!("write to client failed: {e}"));
                }
            }
            _ = &mut changed => changed.set(client.changed()),
            _ = worker.capacity.notified(), if matches!(blocked, Some(Blocked::Backend)) => {}
            // Waiting for budget: woken when some is freed, or to reclaim again.
            _ = freed, if starved && reading && blocked.is_none() => {}
            _ = tokio::time::sleep(STARVED_RETRY), if starved && reading && blocked.is_none() => {}
            r = read_bounded(&mut rd, &mut buf, room), if can_read => match r {
                Ok(0) => {
                    reading = false;
                    if !buf.is_empty() {
                        return Err(format!("client closed with {} bytes of an incomplete frame", buf.len()));
                    }
                }
                Ok(_) => {
                    just_read = true;
                    discard(&mut buf, &mut skip);
                    if skip == 0 && !buf.is_empty() {
                        debug_assert!(frames.is_empty());
                        if let Err(e) = codec.scan(&buf, &mut frames) {
                            refused = Some(e);
                        }
                    }
                }
                Err(e) => return Err(format!("read from client failed: {e}")),
            },
            _ = &mut timer, if deadline.is_some() => {
                armed = None;
                let (at, which) = deadline.unwrap_or((now, ""));
                if Instant::now() < at {
                    continue; // armed for an earlier deadline that has since moved
                }
                if which == "frame_timeout" {
                    return Err(format!("a partial frame of {} bytes was not completed within frame_timeout {:?}", buf.len(), limits.frame_timeout));
                }
                if idle {
                    return Ok("client_idle_timeout");
                }
                idle_due = true;
            }
            _ = &mut stopping, if reading => reading = false,
        }
    }
}

/// Reads at most `room` more bytes into `buf`.
async fn read_bounded(
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut BytesMut,
    room: usize,
) -> std::io::Result<usize> {
    let mut limited = (&mut *buf).limit(room);
    rd.read_buf(&mut limited).await
}

/// Drops up to `skip` bytes from the head of `buf` (an oversized request being swallowed).
fn discard(buf: &mut BytesMut, skip: &mut u64) {
    let n = (*skip).min(buf.len() as u64);
    buf.advance(n as usize);
    *skip -= n;
}

/// What routing one frame did.
enum Step {
    Sent,
    Blocked(Blocked),
}

/// Routes one frame: pin or policy, then a connection of the chosen backend.
fn route_one(
    frame: &[u8],
    key: Option<Key>,
    id: Option<Span>,
    req: Req,
    client: &Rc<Client>,
    lctx: &ListenerCtx,
    now: Instant,
) -> Result<Step, String> {
    let awaits = lctx.config.correlation != Correlation::None && !req.one_way;
    if awaits && req.seq.is_none() && client.inflight() >= lctx.config.limits.max_inflight {
        return Ok(Step::Blocked(Blocked::Inflight));
    }
    let backend = match choose(frame, key, client, lctx) {
        Choice::To(b) => b,
        Choice::Wait(blocked) => return Ok(Step::Blocked(blocked)),
        // The protocol can say so: this request fails, the connection stays.
        Choice::Refuse(reason) if client.answers_errors() => {
            let mut scratch = [0; 8];
            let failure = Failure {
                id: id.map(|s| s.slice(frame)),
                key: key.map(|k| k.bytes(frame, &mut scratch)),
                reason: &reason,
            };
            match req.seq {
                Some(seq) => client.fail_one(seq, req.part, &failure),
                None if awaits => client.refuse_next(&failure),
                None => {} // no answer expected (memcache noreply): nothing to say
            }
            return Ok(Step::Sent);
        }
        Choice::Refuse(reason) => return Err(reason),
    };
    match lctx.pool.target(backend, client.gid) {
        PoolTarget::Conn(conn) => {
            conn.send(frame, id, key, client, req, now);
            Ok(Step::Sent)
        }
        // The key's backend is up but its connection is full: wait for room, never move
        // the key (the connection can also have gone down since `route` looked: wait, and
        // route again).
        PoolTarget::Full | PoolTarget::Down => Ok(Step::Blocked(Blocked::Backend)),
    }
}

/// Where a frame can go.
enum Choice {
    /// To this backend.
    To(usize),
    /// Nowhere yet: wait.
    Wait(Blocked),
    /// Nowhere: no backend can take it (or its key's backend is down and
    /// `on_backend_down = "fail"`).
    Refuse(String),
}

/// The backend for a frame with `key`: pin or policy (a moved pin is logged).
fn choose(frame: &[u8], key: Option<Key>, client: &Client, lctx: &ListenerCtx) -> Choice {
    let mut scratch = [0; 8];
    let key_bytes = key.map(|k| k.bytes(frame, &mut scratch));
    let routed = {
        let mut picker = lctx.picker.borrow_mut();
        let reach = lctx.pool.reach(client.gid);
        lctx.cluster
            .route(key_bytes, client.gid, &mut picker, &reach)
    };
    let name = |i: Option<usize>| {
        i.map_or("a removed backend", |i| {
            lctx.cluster.backends[i].name.as_str()
        })
    };
    let backend = match routed {
        Routed::To(b) => b,
        Routed::Moved { from, to } => {
            tracing::info!(
                key = %key.map(|k| k.display(frame)).unwrap_or_default(),
                from = name(from),
                to = name(Some(to)),
                "session moved off an unavailable backend"
            );
            to
        }
        Routed::PinnedDown(b) => {
            return Choice::Refuse(format!(
                "the key's backend {} is unavailable and on_backend_down = \"fail\"",
                name(b)
            ));
        }
        // Free to go anywhere, but every backend is full: wait for room.
        Routed::Busy => return Choice::Wait(Blocked::Backend),
        Routed::Unavailable => {
            return Choice::Refuse(format!(
                "no backend of cluster {} can take messages",
                lctx.cluster.config.name
            ));
        }
    };
    Choice::To(backend)
}

/// Routes requests handed back by failed backend connections, before any new ones.
fn route_requeued(
    client: &Rc<Client>,
    lctx: &ListenerCtx,
    now: Instant,
) -> Result<Option<Blocked>, String> {
    while let Some(r) = client.take_requeued() {
        let key = r.key.or_else(|| keys_of(lctx, &r));
        let req = Req {
            seq: r.seq,
            part: r.part,
            one_way: r.seq.is_none(),
        };
        match route_one(&r.frame, key, r.id, req, client, lctx, now)? {
            Step::Sent => {}
            Step::Blocked(b) => {
                client.untake_requeued(r);
                return Ok(Some(b));
            }
        }
    }
    Ok(None)
}

/// The key span of a handed-back frame (found again by the listener's codec).
fn keys_of(lctx: &ListenerCtx, r: &Requeued) -> Option<Key> {
    let mut codec = lctx
        .config
        .codec
        .build(lctx.config.limits.max_frame_size)
        .ok()?;
    let mut frames = Vec::with_capacity(1);
    codec.scan(&r.frame, &mut frames).ok()?;
    frames.first().and_then(|f| f.key)
}

/// Routes the frames from `cursor` on, consuming their bytes from `buf`. Returns why it
/// stopped early, if it did.
fn route_frames(
    buf: &mut BytesMut,
    frames: &FrameSet,
    cursor: &mut usize,
    client: &Rc<Client>,
    lctx: &ListenerCtx,
    proto: &mut ConnState,
    now: Instant,
) -> Result<Option<Blocked>, String> {
    let planned = lctx.config.codec.has_plans();
    while let Some(f) = frames.get(*cursor) {
        let len = f.len as usize;
        let step = if planned {
            carry_out(&buf[..len], f, client, lctx, proto, now)?
        } else {
            route_one(&buf[..len], f.key, f.id, Req::default(), client, lctx, now)?
        };
        match step {
            Step::Sent => {}
            Step::Blocked(b) => return Ok(Some(b)),
        }
        buf.advance(len);
        *cursor += 1;
    }
    Ok(None)
}

/// Carries out the protocol's plan for one request: forward it, answer it here, or split
/// it per key (parts that cannot be routed yet wait in the client's retry queue, so the
/// request is never planned twice).
fn carry_out(
    frame: &[u8],
    f: &Frame,
    client: &Rc<Client>,
    lctx: &ListenerCtx,
    proto: &mut ConnState,
    now: Instant,
) -> Result<Step, String> {
    if client.inflight() >= lctx.config.limits.max_inflight {
        return Ok(Step::Blocked(Blocked::Inflight));
    }
    let password = lctx.config.password.as_deref().map(str::as_bytes);
    match lctx.config.codec.plan(frame, proto, password) {
        Plan::Forward => route_one(frame, f.key, f.id, Req::default(), client, lctx, now),
        Plan::ForwardOneWay => route_one(
            frame,
            f.key,
            f.id,
            Req {
                one_way: true,
                ..Req::default()
            },
            client,
            lctx,
            now,
        ),
        Plan::Reply(answer) => {
            client.reply_local(&answer);
            Ok(Step::Sent)
        }
        Plan::Ignore => Ok(Step::Sent),
        Plan::ReplyAndClose(answer) => {
            if !answer.is_empty() {
                client.reply_local(&answer);
            }
            Ok(Step::Blocked(Blocked::Quit))
        }
        Plan::Split(parts, merge) => {
            let seq = client.begin_split(parts.len(), merge);
            for (first, members) in group_by_backend(parts, client, lctx) {
                let part = if members.len() == 1 {
                    members[0].1.clone()
                } else {
                    let reqs: Vec<&Part> = members.iter().map(|(_, p)| p).collect();
                    let joined = join(merge, &reqs);
                    client.joined(seq, first, members);
                    joined
                };
                client.queue_part(Requeued {
                    key: Some(part.key_span()),
                    frame: part.frame,
                    id: None,
                    seq: Some(seq),
                    part: Some(first),
                });
            }
            // The parts go out through the retry queue, ahead of any later request.
            match route_requeued(client, lctx, now)? {
                None => Ok(Step::Sent),
                // The frame is consumed; the parts left wait in the queue.
                Some(Blocked::Backend) | Some(Blocked::Inflight) | Some(Blocked::Quit) => {
                    Ok(Step::Sent)
                }
            }
        }
    }
}

/// Numbered parts of a split request.
type Members = Vec<(u16, Part)>;

/// The parts of a split request, numbered, in groups bound for one backend each (in the
/// order of their first part), as twemproxy sends one fragment per server. A part whose
/// backend cannot be chosen now is a group of its own (routing it proper answers why).
fn group_by_backend(parts: Vec<Part>, client: &Client, lctx: &ListenerCtx) -> Vec<(u16, Members)> {
    let mut groups: Vec<(Option<usize>, u16, Members)> = Vec::new();
    for (i, p) in parts.into_iter().enumerate() {
        let backend = match choose(&p.frame, Some(p.key_span()), client, lctx) {
            Choice::To(b) => Some(b),
            Choice::Wait(_) | Choice::Refuse(_) => None,
        };
        let i = i as u16;
        match groups
            .iter_mut()
            .find(|(b, _, _)| backend.is_some() && *b == backend)
        {
            Some((_, _, members)) => members.push((i, p)),
            None => groups.push((backend, i, vec![(i, p)])),
        }
    }
    groups
        .into_iter()
        .map(|(_, first, members)| (first, members))
        .collect()
}
