//! One shared connection to one backend: a write buffer many clients' requests are copied
//! into, the correlator of what awaits answers, and the task that connects (with back-off),
//! writes, reads answers, times requests out, and — when the connection dies — hands
//! requests that were never written back to their clients for another try, and fails the
//! rest at once.

use super::correlate::{Answer, Correlator, Expired};
use crate::balancer::{Backend, Cluster};
use crate::codec::{self, Frame, IdFormat, Span};
use crate::config::{Correlation, ListenerConfig, PoolConfig};
use crate::downstream::{Client, Requeued};
use crate::worker::WorkerCtx;
use bytes::{Buf, Bytes, BytesMut};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// Read size for answers.
const READ_CHUNK: usize = 64 << 10;

/// A few bytes kept with a request in flight: the client's own id of a `by_id` request,
/// restored on its answer, or its key, for an error answer that names it.
#[derive(Debug, Clone)]
pub enum OrigId {
    /// Ids up to 16 bytes (all binary ids, most text ids): no allocation.
    Inline(u8, [u8; 16]),
    /// Longer text ids.
    Heap(Box<[u8]>),
}

impl OrigId {
    fn new(bytes: &[u8]) -> Self {
        if bytes.len() <= 16 {
            let mut a = [0u8; 16];
            a[..bytes.len()].copy_from_slice(bytes);
            OrigId::Inline(bytes.len() as u8, a)
        } else {
            OrigId::Heap(bytes.into())
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            OrigId::Inline(n, a) => &a[..*n as usize],
            OrigId::Heap(b) => b,
        }
    }
}

/// Where a queued frame sits in the connection's byte stream, so a frame that was never
/// written can be handed back to its client.
#[derive(Debug)]
struct Placed {
    /// Stream offset of its first byte.
    start: u64,
    /// Its length as written (with the proxy's id).
    len: u32,
    /// Where the id sits in the written frame (by_id).
    id_at: Option<Span>,
}

#[derive(Debug)]
struct Pending {
    client: Rc<Client>,
    seq: u64,
    /// Which part of a split request it is.
    part: Option<u16>,
    orig: Option<OrigId>,
    /// The request's key, kept only when the listener's error answer uses it.
    key: Option<OrigId>,
    sent: Instant,
    placed: Placed,
}

impl Pending {
    /// Fails it with `reason`: its client answers it with the protocol's error answer, or
    /// is closed.
    fn fail(&self, reason: &str) {
        let failure = crate::codec::error_reply::Failure {
            id: self.orig.as_ref().map(OrigId::as_slice),
            key: self.key.as_ref().map(OrigId::as_slice),
            reason,
        };
        self.client.fail_one(self.seq, self.part, &failure);
    }
}

/// A one-way message not yet fully written.
#[derive(Debug)]
struct OneWay {
    client: Rc<Client>,
    placed: Placed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Connecting, first or right after losing an established connection: messages may
    /// queue (if the attempt fails they are handed back for another backend).
    Connecting,
    Connected,
    /// A connect failed; takes no messages until a reconnect succeeds.
    Down,
}

/// A connection that lived shorter than this and died counts as a failed attempt (back-off
/// applies), so a backend that accepts and closes at once is not hammered.
const MIN_HEALTHY_LIFETIME: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct State {
    status: Status,
    wbuf: BytesMut,
    /// Bytes taken from `wbuf` by the writer and not yet written.
    writing: usize,
    /// Bytes ever queued on this connection: the stream offset of the next queued byte.
    queued_total: u64,
    /// Stream offset up to which bytes reached the socket.
    written_total: u64,
    corr: Correlator<Pending>,
    oneway: VecDeque<OneWay>,
}

/// A shared backend connection, as the client side sees it.
#[derive(Debug)]
pub struct UpConn {
    /// The backend's shared state.
    pub backend: Arc<Backend>,
    /// Which of the backend's pooled connections this is.
    pub slot: usize,
    correlation: Correlation,
    id_format: IdFormat,
    /// Keep each request's key while it is in flight (the error answer names it).
    keep_keys: bool,
    max_queued: usize,
    state: RefCell<State>,
    notify: Notify,
    retired: Cell<bool>,
    /// The cluster as of the last reload, for outlier reports.
    cluster: RefCell<Arc<Cluster>>,
}

impl UpConn {
    /// A connection (not yet connected) to `backend`.
    pub fn new(
        backend: Arc<Backend>,
        slot: usize,
        listener: &ListenerConfig,
        pool: &PoolConfig,
        cluster: Arc<Cluster>,
    ) -> Self {
        let id_format = listener.codec.id_format();
        let id_width = listener.codec.id_width();
        UpConn {
            backend,
            slot,
            correlation: listener.correlation,
            id_format,
            keep_keys: listener.error_reply.as_ref().is_some_and(|e| e.needs_key()),
            max_queued: pool.max_queued_bytes,
            state: RefCell::new(State {
                status: Status::Connecting,
                wbuf: BytesMut::new(),
                writing: 0,
                queued_total: 0,
                written_total: 0,
                corr: Correlator::new(listener.correlation, codec::id_space(id_format, id_width)),
                oneway: VecDeque::new(),
            }),
            notify: Notify::new(),
            retired: Cell::new(false),
            cluster: RefCell::new(cluster),
        }
    }

    /// Whether the connection is connected, or on its first attempt, and not retired.
    pub fn accepts_messages(&self) -> bool {
        !self.retired.get() && self.state.borrow().status != Status::Down
    }

    /// Whether another message fits: queued bytes under the bound, and a free proxy id.
    pub fn has_room(&self) -> bool {
        let s = self.state.borrow();
        s.wbuf.len() + s.writing < self.max_queued && s.corr.has_room()
    }

    /// Request bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        let s = self.state.borrow();
        s.wbuf.len() + s.writing
    }

    /// Requests awaiting answers on this connection.
    pub fn outstanding(&self) -> usize {
        self.state.borrow().corr.len()
    }

    /// Sizes of what the connection keeps per message: the correlator's collections and the
    /// one-way messages not yet written (for the growth tests).
    pub fn footprint(&self) -> (super::correlate::Footprint, usize) {
        let s = self.state.borrow();
        (s.corr.footprint(), s.oneway.len())
    }

    /// Takes no new messages; the task closes the connection once nothing is outstanding.
    pub fn retire(&self) {
        self.retired.set(true);
        self.notify.notify_one();
    }

    /// Points outlier reports at a reloaded cluster.
    pub fn set_cluster(&self, cluster: Arc<Cluster>) {
        *self.cluster.borrow_mut() = cluster;
    }

    /// Queues one request frame of `client`, read at `now` (one clock read per batch of
    /// frames, not per frame). `req` says whether it already has a place in the client's
    /// order (a retry, or a part of a split request) and whether an answer will come. The
    /// caller has checked [`Self::has_room`].
    pub fn send(
        &self,
        frame: &[u8],
        id: Option<Span>,
        key: Option<codec::Key>,
        client: &Rc<Client>,
        req: Req,
        now: Instant,
    ) {
        let Req { seq, part, one_way } = req;
        let key = key
            .filter(|_| self.keep_keys)
            .map(|k| OrigId::new(k.bytes(frame, &mut [0; 8])));
        let mut s = self.state.borrow_mut();
        let start = s.queued_total;
        let len_before = s.wbuf.len();
        let awaits = match (self.correlation, id) {
            (Correlation::InOrder, _) if !one_way => {
                let seq = seq.unwrap_or_else(|| client.begin_request());
                s.corr.register(Pending {
                    client: client.clone(),
                    seq,
                    part,
                    orig: None,
                    key,
                    sent: now,
                    placed: Placed {
                        start,
                        len: frame.len() as u32,
                        id_at: None,
                    },
                });
                s.wbuf.extend_from_slice(frame);
                true
            }
            (Correlation::ById, Some(span)) if !one_way => {
                let seq = seq.unwrap_or_else(|| client.begin_request());
                let before = s.wbuf.len();
                let start_at = span.offset as usize;
                let end_at = start_at + span.len as usize;
                s.wbuf.extend_from_slice(&frame[..start_at]);
                let pending = Pending {
                    client: client.clone(),
                    seq,
                    part,
                    orig: Some(OrigId::new(span.slice(frame))),
                    key,
                    sent: now,
                    placed: Placed {
                        start,
                        len: 0,
                        id_at: None,
                    },
                };
                let Some(pid) = s.corr.register(pending) else {
                    // has_room() was checked by the caller; keep the books straight anyway.
                    s.wbuf.truncate(before);
                    drop(s);
                    client.fail_request("no free proxy id on the backend connection");
                    return;
                };
                codec::write_proxy_id(self.id_format, pid, span.len as usize, &mut s.wbuf);
                let id_len = s.wbuf.len() - before - start_at;
                s.wbuf.extend_from_slice(&frame[end_at..]);
                let len = (s.wbuf.len() - before) as u32;
                if let Some(p) = s.corr.get_mut(pid) {
                    p.placed.len = len;
                    p.placed.id_at = Some(Span {
                        offset: span.offset,
                        len: id_len as u32,
                    });
                }
                true
            }
            // One-way: `none`, a by_id request without an id (it cannot be answered), or a
            // request the protocol says gets no answer.
            _ => {
                s.wbuf.extend_from_slice(frame);
                s.oneway.push_back(OneWay {
                    client: client.clone(),
                    placed: Placed {
                        start,
                        len: frame.len() as u32,
                        id_at: None,
                    },
                });
                false
            }
        };
        s.queued_total += (s.wbuf.len() - len_before) as u64;
        drop(s);
        self.backend.on_sent(awaits);
        self.notify.notify_one();
    }

    /// Routes one backend message: to the request it answers, or as a push.
    fn on_backend_frame(
        &self,
        frame: &[u8],
        f: &Frame,
        now: Instant,
        resp_format: IdFormat,
        worker: &WorkerCtx,
    ) {
        let id = match self.correlation {
            Correlation::ById => {
                f.id.and_then(|s| codec::parse_proxy_id(resp_format, s.slice(frame)))
            }
            _ => None,
        };
        let answer = self.state.borrow_mut().corr.answer(id);
        match answer {
            Answer::Matched(p) => {
                self.backend
                    .on_answer(now.saturating_duration_since(p.sent));
                match (&p.orig, f.id, p.part) {
                    (Some(orig), Some(span), _) => {
                        p.client.answer_by_id(frame, span, orig.as_slice())
                    }
                    (_, _, Some(part)) => p.client.answer_part(p.seq, part, frame),
                    _ => p.client.answer_in_order(p.seq, frame),
                }
                worker.defer_flush(&p.client);
            }
            Answer::Late => {
                tracing::debug!(backend = %self.backend.name, "dropping the late answer of a timed-out request");
            }
            Answer::Unmatched => {
                let cluster = self.cluster.borrow().clone();
                let key = f.key.map(|k| {
                    crate::session::key_hash(cluster.hash_key(k.bytes(frame, &mut [0; 8])))
                });
                worker.route_push(&cluster, key, frame);
            }
        }
    }

    /// Records that `n` more bytes reached the socket; forgets one-way messages fully sent.
    fn wrote(&self, n: usize) {
        let mut s = self.state.borrow_mut();
        s.written_total += n as u64;
        s.writing = s.writing.saturating_sub(n);
        let written = s.written_total;
        while s
            .oneway
            .front()
            .is_some_and(|o| o.placed.start + u64::from(o.placed.len) <= written)
        {
            s.oneway.pop_front();
        }
    }

    /// The connection is gone. Requests never written go back to their clients to be
    /// routed again (if `retry`); every other outstanding request fails, which closes its
    /// client. `unwritten` holds the bytes from the write offset on that the writer had
    /// taken.
    fn fail_all(&self, reason: &str, unwritten: BytesMut, retry: bool) {
        let (pending, oneway, tail, written) = {
            let mut s = self.state.borrow_mut();
            let mut tail = unwritten;
            tail.extend_from_slice(&s.wbuf);
            s.wbuf.clear();
            s.writing = 0;
            let written = s.written_total;
            debug_assert_eq!(written + tail.len() as u64, s.queued_total);
            s.written_total = s.queued_total;
            (
                s.corr.drain(),
                std::mem::take(&mut s.oneway),
                tail.freeze(),
                written,
            )
        };
        let cut = |p: &Placed| -> Option<Bytes> {
            let from = p.start.checked_sub(written)? as usize;
            tail.get(from..from + p.len as usize)
                .map(|_| tail.slice(from..from + p.len as usize))
        };
        let mut failed = 0;
        let mut retried = 0;
        let msg = format!("backend {} failed: {reason}", self.backend.name);
        for p in pending {
            match cut(&p.placed).filter(|_| retry) {
                Some(bytes) => {
                    retried += 1;
                    let (frame, id) = restore_id(bytes, &p);
                    self.backend.on_failed();
                    p.client.requeue(Requeued {
                        frame,
                        id,
                        seq: Some(p.seq),
                        part: p.part,
                        key: None,
                    });
                }
                None => {
                    failed += 1;
                    self.backend.on_failed();
                    p.fail(&msg);
                }
            }
        }
        for o in oneway {
            if let Some(frame) = cut(&o.placed).filter(|_| retry) {
                retried += 1;
                o.client.requeue(Requeued {
                    frame,
                    id: None,
                    seq: None,
                    part: None,
                    key: None,
                });
            }
        }
        if failed > 0 || retried > 0 {
            tracing::warn!(
                backend = %self.backend.name,
                failed,
                retried,
                reason,
                "backend connection lost with requests in flight: failing what was sent, retrying what was not"
            );
        }
    }

    fn set_status(&self, status: Status) {
        self.state.borrow_mut().status = status;
    }

    fn report_failure(&self, what: &str) {
        let cluster = self.cluster.borrow().clone();
        if let Some(i) = cluster.index_of(self.backend.id) {
            cluster.report_failure(i, what);
        }
    }

    fn idle_and_retired(&self) -> bool {
        let s = self.state.borrow();
        self.retired.get() && s.corr.is_empty() && s.wbuf.is_empty() && s.writing == 0
    }
}

/// How a request relates to its client's order.
#[derive(Debug, Clone, Copy, Default)]
pub struct Req {
    /// Its sequence number, if it already has one (a retry, or a part of a split request).
    pub seq: Option<u64>,
    /// Which part of a split request it is.
    pub part: Option<u16>,
    /// No answer will come (memcache `noreply`).
    pub one_way: bool,
}

/// A frame handed back for retry, with the client's own id where the proxy's was.
fn restore_id(bytes: Bytes, p: &Pending) -> (Bytes, Option<Span>) {
    match (&p.orig, p.placed.id_at) {
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

/// The connection's task: connect, pump bytes both ways, and on failure hand back or fail
/// what was in flight and reconnect with exponential back-off. Ends when the connection is
/// retired and idle, or when the worker's runtime ends.
pub async fn run(conn: Rc<UpConn>, listener: ListenerConfig, worker: Rc<WorkerCtx>) {
    let addr = conn.backend.address;
    let mut backoff: Option<Duration> = None;
    loop {
        let cluster = conn.cluster.borrow().clone();
        let pool = cluster.config.pool;
        let retry = cluster.config.retry_on_connect_failure;
        if conn.retired.get() {
            conn.fail_all("backend removed from the cluster", BytesMut::new(), retry);
            return;
        }
        let attempt =
            tokio::time::timeout(pool.connect_timeout, connect(addr, &listener, &cluster)).await;
        let (reason, unwritten, healthy_run) = match attempt {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                conn.set_status(Status::Connected);
                if !conn.backend.set_up(true) {
                    tracing::info!(backend = %conn.backend.name, %addr, "backend is up");
                }
                worker.capacity.notify_waiters();
                let since = Instant::now();
                let (ended, unwritten) = pump(
                    &conn,
                    stream,
                    &listener,
                    &worker,
                    cluster.config.request_timeout,
                )
                .await;
                let (reason, replaced) = match ended {
                    Ended::Retired => return,
                    Ended::Replace(r) => (r, true),
                    Ended::Lost(r) => (r, false),
                };
                tracing::warn!(backend = %conn.backend.name, %addr, slot = conn.slot, %reason, "backend connection lost");
                (
                    reason,
                    unwritten,
                    replaced || since.elapsed() >= MIN_HEALTHY_LIFETIME,
                )
            }
            Ok(Err(e)) => (e, BytesMut::new(), false),
            Err(_) => (
                format!("connect timed out after {:?}", pool.connect_timeout),
                BytesMut::new(),
                false,
            ),
        };
        let had_work = !conn.state.borrow().corr.is_empty();
        if healthy_run {
            // A connection that served a while and was lost: reconnect at once; messages
            // may queue meanwhile.
            conn.set_status(Status::Connecting);
            backoff = None;
            conn.fail_all(&reason, unwritten, retry);
            if had_work {
                conn.report_failure(&reason);
            }
            worker.capacity.notify_waiters();
            continue;
        }
        conn.set_status(Status::Down);
        conn.fail_all(&reason, unwritten, retry);
        conn.report_failure(&reason);
        let delay = backoff.map_or(pool.reconnect_backoff_min, |b| {
            (b * 2).min(pool.reconnect_backoff_max)
        });
        backoff = Some(delay);
        if conn.backend.set_up(false) {
            tracing::warn!(backend = %conn.backend.name, %addr, %reason, retry_in = ?delay, "backend is down");
        }
        // Clients waiting for room must re-decide now that this connection is gone.
        worker.capacity.notify_waiters();
        let jitter = Duration::from_millis(fastrand::u64(0..=delay.as_millis() as u64 / 4 + 1));
        tokio::select! {
            _ = tokio::time::sleep(delay + jitter) => {}
            _ = conn.notify.notified(), if !conn.retired.get() => {}
        }
    }
}

/// Connects to `addr` and, for a `resp` listener, prepares the connection before it carries
/// any client's request: AUTH with the cluster's `backend_password`, then SELECT its
/// `backend_db`, each answered `+OK` or the connection counts as failed.
async fn connect(
    addr: std::net::SocketAddr,
    listener: &ListenerConfig,
    cluster: &Cluster,
) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect failed: {e}"))?;
    if !matches!(listener.codec, codec::CodecSpec::Resp { .. }) {
        return Ok(stream);
    }
    let mut setup: Vec<(&str, bytes::Bytes)> = Vec::new();
    if let Some(password) = &cluster.config.backend_password {
        setup.push((
            "AUTH",
            codec::resp::build(b"AUTH", &[password.as_bytes()]).frame,
        ));
    }
    if let Some(db) = cluster.config.backend_db {
        let db = db.to_string();
        setup.push((
            "SELECT",
            codec::resp::build(b"SELECT", &[db.as_bytes()]).frame,
        ));
    }
    for (what, command) in setup {
        stream
            .write_all(&command)
            .await
            .map_err(|e| format!("{what} failed: {e}"))?;
        let mut answer = Vec::new();
        loop {
            let mut chunk = [0u8; 256];
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("{what} failed: {e}"))?;
            if n == 0 {
                return Err(format!("{what} failed: the backend closed the connection"));
            }
            answer.extend_from_slice(&chunk[..n]);
            if answer.ends_with(b"\r\n") || answer.len() > 512 {
                break;
            }
        }
        if answer != b"+OK\r\n" {
            return Err(format!(
                "{what} refused: {}",
                String::from_utf8_lossy(&answer).trim_end()
            ));
        }
    }
    Ok(stream)
}

/// Why [`pump`] ended.
enum Ended {
    /// Retired and idle: a clean close.
    Retired,
    /// Closed by the proxy to be replaced (an `in_order` request timed out).
    Replace(String),
    /// Lost: the backend closed it, or an I/O error, or a bad answer.
    Lost(String),
}

/// Moves bytes until the connection ends; returns why, and the bytes the writer had taken
/// but not written.
async fn pump(
    conn: &Rc<UpConn>,
    mut stream: TcpStream,
    listener: &ListenerConfig,
    worker: &WorkerCtx,
    request_timeout: Duration,
) -> (Ended, BytesMut) {
    let max_frame = listener.limits.max_frame_size;
    let mut codec = match listener.response_codec.build(max_frame) {
        Ok(c) => c,
        Err(e) => {
            return (
                Ended::Lost(format!("cannot frame answers: {e}")),
                BytesMut::new(),
            )
        }
    };
    let resp_format = codec.id_format();
    let (mut rd, mut wr) = stream.split();
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut out = BytesMut::new();
    let mut frames = Vec::new();
    let timer = tokio::time::sleep(request_timeout);
    tokio::pin!(timer);
    // The oldest request's deadline only moves later as answers arrive, so the timer is
    // armed once and, when it fires early, re-armed for the new oldest: no timer work per
    // answer.
    let mut armed = false;
    // One wake-up registration for new requests, kept across iterations.
    let queued = conn.notify.notified();
    tokio::pin!(queued);
    loop {
        if out.is_empty() {
            let mut s = conn.state.borrow_mut();
            std::mem::swap(&mut out, &mut s.wbuf);
            s.writing = out.len();
        }
        if out.is_empty() && conn.idle_and_retired() {
            return (Ended::Retired, out);
        }
        let oldest = conn.state.borrow().corr.oldest().map(|p| p.sent);
        match oldest {
            Some(sent) if !armed => {
                timer
                    .as_mut()
                    .reset(tokio::time::Instant::from_std(sent + request_timeout));
                armed = true;
            }
            None => armed = false,
            Some(_) => {}
        }
        if rbuf.capacity() - rbuf.len() < READ_CHUNK / 4 {
            rbuf.reserve(READ_CHUNK);
        }
        tokio::select! {
            biased;
            r = rd.read_buf(&mut rbuf) => {
                match r {
                    Ok(0) => return (Ended::Lost("backend closed the connection".into()), out),
                    Ok(_) => {}
                    Err(e) => return (Ended::Lost(format!("read failed: {e}")), out),
                }
                if let Err(e) = codec.scan(&rbuf, &mut frames) {
                    return (Ended::Lost(format!("bad answer from backend: {e}")), out);
                }
                let was_full = !conn.has_room();
                let now = Instant::now();
                for f in frames.drain(..) {
                    let len = f.len as usize;
                    conn.on_backend_frame(&rbuf[..len], &f, now, resp_format, worker);
                    rbuf.advance(len);
                }
                worker.flush_clients();
                if rbuf.is_empty() && rbuf.capacity() > 4 * READ_CHUNK {
                    rbuf = BytesMut::with_capacity(READ_CHUNK); // give a large answer's memory back
                }
                if was_full && conn.has_room() {
                    worker.capacity.notify_waiters();
                }
            }
            r = wr.write(&out), if !out.is_empty() => {
                match r {
                    Ok(n) => {
                        let was_full = !conn.has_room();
                        out.advance(n);
                        conn.wrote(n);
                        if was_full && conn.has_room() {
                            worker.capacity.notify_waiters();
                        }
                    }
                    Err(e) => return (Ended::Lost(format!("write failed: {e}")), out),
                }
            }
            _ = &mut timer, if oldest.is_some() => {
                armed = false;
                if let Some(reason) = expire(conn, request_timeout) {
                    return (Ended::Replace(reason), out);
                }
            }
            _ = &mut queued, if out.is_empty() => queued.set(conn.notify.notified()),
        }
    }
}

/// Handles requests older than `timeout`. Returns a reason if the connection must close.
fn expire(conn: &UpConn, timeout: Duration) -> Option<String> {
    let now = Instant::now();
    let is_old = |p: &Pending| now.saturating_duration_since(p.sent) >= timeout;
    loop {
        let expired = conn.state.borrow_mut().corr.oldest_expired(is_old);
        match expired {
            None => return None,
            Some(Expired::Request(p)) => {
                conn.backend.on_failed();
                conn.report_failure("request timeout");
                if let Some(suppressed) =
                    crate::throttle::admit(&[&conn.backend.name, "request timed out"])
                {
                    tracing::warn!(backend = %conn.backend.name, timeout = ?timeout, suppressed, "request timed out; failing it");
                }
                p.fail(&format!(
                    "request to backend {} timed out after {timeout:?}",
                    conn.backend.name
                ));
            }
            Some(Expired::ConnectionLost) => {
                // An in_order connection cannot skip an answer: close and replace it.
                return Some(format!(
                    "request timed out after {timeout:?}; an in_order connection cannot skip an answer, replacing it"
                ));
            }
        }
    }
}
