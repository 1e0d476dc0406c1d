//! One shared connection to one backend: a write buffer many clients' requests are copied
//! into, the correlator of what awaits answers, and the task that connects (with back-off),
//! writes, reads answers, and fails everything outstanding fast when the connection dies.

use super::correlate::Correlator;
use crate::balancer::{Backend, Cluster};
use crate::codec::{self, Frame, IdFormat, Span};
use crate::config::{Correlation, ListenerConfig, PoolConfig};
use crate::downstream::Client;
use crate::worker::WorkerCtx;
use bytes::{Buf, BytesMut};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// Read size for answers.
const READ_CHUNK: usize = 64 << 10;

/// The client's own id of a `by_id` request, restored on its answer.
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

#[derive(Debug)]
struct Pending {
    client: Rc<Client>,
    seq: u64,
    orig: Option<OrigId>,
    sent: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// The first attempt: messages may queue while it connects.
    FirstConnect,
    Connected,
    /// Failed; takes no messages until a reconnect succeeds.
    Down,
}

#[derive(Debug)]
struct State {
    status: Status,
    wbuf: BytesMut,
    /// Bytes taken from `wbuf` by the writer and not yet written.
    writing: usize,
    corr: Correlator<Pending>,
}

/// A shared backend connection, as the client side sees it.
#[derive(Debug)]
pub struct UpConn {
    /// Index of the backend in its cluster.
    pub backend_index: usize,
    /// Which of the backend's pooled connections this is.
    pub slot: usize,
    /// The backend's shared load state.
    pub backend: Arc<Backend>,
    correlation: Correlation,
    id_format: IdFormat,
    max_queued: usize,
    state: RefCell<State>,
    notify: Notify,
}

impl UpConn {
    /// A connection (not yet connected) to `backend`.
    pub fn new(
        backend_index: usize,
        slot: usize,
        backend: Arc<Backend>,
        listener: &ListenerConfig,
        pool: &PoolConfig,
    ) -> Self {
        let codec = listener.codec.build(listener.limits.max_frame_size);
        let id_format = codec.id_format();
        let id_width = match &listener.codec {
            codec::CodecSpec::LengthField(s) => s.id.map_or(8, |f| f.width as usize),
            codec::CodecSpec::Delimiter(_) => 8,
        };
        UpConn {
            backend_index,
            slot,
            backend,
            correlation: listener.correlation,
            id_format,
            max_queued: pool.max_queued_bytes,
            state: RefCell::new(State {
                status: Status::FirstConnect,
                wbuf: BytesMut::new(),
                writing: 0,
                corr: Correlator::new(listener.correlation, codec::id_space(id_format, id_width)),
            }),
            notify: Notify::new(),
        }
    }

    /// Whether the connection is connected, or on its first attempt.
    pub fn accepts_messages(&self) -> bool {
        self.state.borrow().status != Status::Down
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

    /// Queues one request frame of `client`, read at `now` (one clock read per batch of
    /// frames, not per frame). The caller has checked [`Self::has_room`].
    pub fn send(&self, frame: &[u8], id: Option<Span>, client: &Rc<Client>, now: Instant) {
        let mut s = self.state.borrow_mut();
        let awaits = match (self.correlation, id) {
            (Correlation::None, _) => {
                s.wbuf.extend_from_slice(frame);
                false
            }
            (Correlation::InOrder, _) => {
                let seq = client.begin_request();
                s.corr.register(Pending {
                    client: client.clone(),
                    seq,
                    orig: None,
                    sent: now,
                });
                s.wbuf.extend_from_slice(frame);
                true
            }
            // A by_id request without an id cannot be answered: it is sent one-way.
            (Correlation::ById, None) => {
                s.wbuf.extend_from_slice(frame);
                false
            }
            (Correlation::ById, Some(span)) => {
                let seq = client.begin_request();
                let pending = Pending {
                    client: client.clone(),
                    seq,
                    orig: Some(OrigId::new(span.slice(frame))),
                    sent: now,
                };
                let Some(pid) = s.corr.register(pending) else {
                    // has_room() was checked by the caller; keep the books straight anyway.
                    drop(s);
                    client.fail_request("no free proxy id on the backend connection");
                    return;
                };
                let start = span.offset as usize;
                let end = start + span.len as usize;
                s.wbuf.extend_from_slice(&frame[..start]);
                codec::write_proxy_id(self.id_format, pid, span.len as usize, &mut s.wbuf);
                s.wbuf.extend_from_slice(&frame[end..]);
                true
            }
        };
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
        cluster: &Cluster,
        worker: &WorkerCtx,
    ) {
        let id = match self.correlation {
            Correlation::ById => {
                f.id.and_then(|s| codec::parse_proxy_id(resp_format, s.slice(frame)))
            }
            _ => None,
        };
        let pending = self.state.borrow_mut().corr.answer(id);
        match pending {
            Some(p) => {
                self.backend
                    .on_answer(now.saturating_duration_since(p.sent));
                match (&p.orig, f.id) {
                    (Some(orig), Some(span)) => p.client.answer_by_id(frame, span, orig.as_slice()),
                    _ => p.client.answer_in_order(p.seq, frame),
                }
            }
            None => worker.route_push(cluster, f.key.map(|k| k.slice(frame)), frame),
        }
    }

    /// Fails every outstanding request and drops queued bytes: the connection is gone.
    fn fail_all(&self, reason: &str) {
        let pending = {
            let mut s = self.state.borrow_mut();
            s.wbuf.clear();
            s.writing = 0;
            s.corr.drain()
        };
        if !pending.is_empty() {
            tracing::warn!(
                backend = %self.backend.name,
                failed = pending.len(),
                reason,
                "failing requests in flight on a lost backend connection"
            );
        }
        let msg = format!("backend {} failed: {reason}", self.backend.name);
        for p in pending {
            self.backend.on_failed();
            p.client.fail_request(&msg);
        }
    }

    fn set_status(&self, status: Status) {
        self.state.borrow_mut().status = status;
    }
}

/// The connection's task: connect, pump bytes both ways, and on failure fail what was in
/// flight and reconnect with exponential back-off. Ends when the worker's runtime ends.
pub async fn run(
    conn: Rc<UpConn>,
    listener: ListenerConfig,
    cluster: Arc<Cluster>,
    worker: Rc<WorkerCtx>,
) {
    let pool = cluster.config.pool;
    let mut backoff = pool.reconnect_backoff_min;
    let addr = conn.backend.address;
    loop {
        let reason = match tokio::time::timeout(pool.connect_timeout, TcpStream::connect(addr))
            .await
        {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                conn.set_status(Status::Connected);
                if !conn.backend.set_up(true) {
                    tracing::info!(backend = %conn.backend.name, %addr, "backend is up");
                }
                backoff = pool.reconnect_backoff_min;
                worker.capacity.notify_waiters();
                let reason = pump(&conn, stream, &listener, &cluster, &worker).await;
                tracing::warn!(backend = %conn.backend.name, %addr, slot = conn.slot, %reason, "backend connection lost");
                reason
            }
            Ok(Err(e)) => format!("connect failed: {e}"),
            Err(_) => format!("connect timed out after {:?}", pool.connect_timeout),
        };
        conn.set_status(Status::Down);
        conn.fail_all(&reason);
        if conn.backend.set_up(false) {
            tracing::warn!(backend = %conn.backend.name, %addr, %reason, retry_in = ?backoff, "backend is down");
        }
        // Clients waiting for room must re-decide now that this connection is gone.
        worker.capacity.notify_waiters();
        let jitter = Duration::from_millis(fastrand::u64(0..=backoff.as_millis() as u64 / 4 + 1));
        tokio::time::sleep(backoff + jitter).await;
        backoff = (backoff * 2).min(pool.reconnect_backoff_max);
    }
}

/// Moves bytes until the connection fails; returns why it ended.
async fn pump(
    conn: &Rc<UpConn>,
    mut stream: TcpStream,
    listener: &ListenerConfig,
    cluster: &Cluster,
    worker: &WorkerCtx,
) -> String {
    let max_frame = listener.limits.max_frame_size;
    let mut codec = listener.response_codec.build(max_frame);
    let resp_format = codec.id_format();
    let (mut rd, mut wr) = stream.split();
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut out = BytesMut::new();
    let mut frames = Vec::new();
    loop {
        if out.is_empty() {
            let mut s = conn.state.borrow_mut();
            std::mem::swap(&mut out, &mut s.wbuf);
            s.writing = out.len();
        }
        if rbuf.capacity() - rbuf.len() < READ_CHUNK / 4 {
            rbuf.reserve(READ_CHUNK);
        }
        tokio::select! {
            biased;
            r = rd.read_buf(&mut rbuf) => {
                match r {
                    Ok(0) => return "backend closed the connection".into(),
                    Ok(_) => {}
                    Err(e) => return format!("read failed: {e}"),
                }
                if let Err(e) = codec.scan(&rbuf, &mut frames) {
                    return format!("bad answer from backend: {e}");
                }
                let was_full = !conn.has_room();
                let now = Instant::now();
                for f in frames.drain(..) {
                    let len = f.len as usize;
                    conn.on_backend_frame(&rbuf[..len], &f, now, resp_format, cluster, worker);
                    rbuf.advance(len);
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
                        conn.state.borrow_mut().writing = out.len();
                        if was_full && conn.has_room() {
                            worker.capacity.notify_waiters();
                        }
                    }
                    Err(e) => return format!("write failed: {e}"),
                }
            }
            _ = conn.notify.notified(), if out.is_empty() => {}
        }
    }
}
