//! One client connection's task: read → scan → route → forward, and answers back out.

use super::reply::Client;
use crate::balancer::{Cluster, Picker};
use crate::codec::{Codec, FrameSet};
use crate::config::{Correlation, ListenerConfig};
use crate::session::{key_hash, PinOutcome};
use crate::upstream::{Pool, PoolTarget};
use crate::worker::WorkerCtx;
use bytes::{Buf, BufMut, BytesMut};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::Instrument;

/// Read size for client bytes.
const READ_CHUNK: usize = 16 << 10;

/// Everything a client task of one listener needs, per worker.
#[derive(Debug)]
pub struct ListenerCtx {
    /// The listener's config.
    pub config: ListenerConfig,
    /// The cluster it balances over.
    pub cluster: Arc<Cluster>,
    /// This worker's connections to that cluster's backends.
    pub pool: Pool,
    /// This worker's policy state for the cluster.
    pub picker: RefCell<Picker>,
    /// The worker.
    pub worker: Rc<WorkerCtx>,
}

/// Why routing a frame could not proceed now.
enum Blocked {
    /// The client has `max_inflight` requests outstanding: wait for answers.
    Inflight,
    /// The chosen backends are full: wait for a backend connection to drain.
    Backend,
}

/// Serves one accepted client connection until it closes.
pub async fn serve(stream: TcpStream, peer: SocketAddr, lctx: Rc<ListenerCtx>) {
    let worker = lctx.worker.clone();
    let client = Rc::new(Client::new(
        worker.next_gid(),
        peer,
        lctx.config.limits.max_reply_buffer,
    ));
    worker.register(&client);
    let span =
        tracing::info_span!("client", listener = %lctx.config.name, %peer, conn = client.gid);
    let outcome = drive(stream, &client, &lctx).instrument(span.clone()).await;
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
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(%reason, "closing client connection")
        }
    }
}

/// Runs the connection. `Ok` is an orderly end, `Err` a reason to log loudly.
async fn drive(
    mut stream: TcpStream,
    client: &Rc<Client>,
    lctx: &ListenerCtx,
) -> Result<&'static str, String> {
    let limits = lctx.config.limits;
    let mut codec = lctx.config.codec.build(limits.max_frame_size);
    let (mut rd, mut wr) = stream.split();
    let mut shutdown = lctx.worker.shutdown.clone();
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut out = BytesMut::new();
    let mut frames: FrameSet = Vec::new();
    let mut cursor = 0usize;
    let mut reading = !*shutdown.borrow();
    loop {
        let blocked = route_frames(&mut buf, &frames, &mut cursor, client, lctx)?;
        if blocked.is_none() && cursor == frames.len() {
            frames.clear();
            cursor = 0;
        }
        if out.is_empty() {
            client.take_output(&mut out);
        }
        // A failed client closes at once: waiting to flush could wait forever on a client
        // that does not read.
        if let Some(reason) = client.failure() {
            return Err(reason);
        }
        if out.is_empty() && !reading && client.inflight() == 0 && frames.is_empty() {
            return Ok(if *shutdown.borrow() {
                "shutting down"
            } else {
                "client closed"
            });
        }
        let room = limits.max_buffered_bytes.saturating_sub(buf.len());
        let can_read = reading && blocked.is_none() && room > 0;
        if can_read && buf.capacity() - buf.len() < READ_CHUNK.min(room) {
            buf.reserve(READ_CHUNK.min(room));
        }
        tokio::select! {
            biased;
            r = wr.write(&out), if !out.is_empty() => match r {
                Ok(n) => out.advance(n),
                Err(e) => return Err(format!("write to client failed: {e}")),
            },
            _ = client.changed() => {}
            _ = lctx.worker.capacity.notified(), if matches!(blocked, Some(Blocked::Backend)) => {}
            r = read_bounded(&mut rd, &mut buf, room), if can_read => match r {
                Ok(0) => {
                    reading = false;
                    if !buf.is_empty() {
                        return Err(format!("client closed with {} bytes of an incomplete frame", buf.len()));
                    }
                }
                Ok(_) => scan(&mut *codec, &buf, &mut frames)?,
                Err(e) => return Err(format!("read from client failed: {e}")),
            },
            _ = shutdown.changed(), if reading => reading = false,
        }
    }
}

/// Reads at most `room` more bytes into `buf`.
async fn read_bounded(
    rd: &mut tokio::net::tcp::ReadHalf<'_>,
    buf: &mut BytesMut,
    room: usize,
) -> std::io::Result<usize> {
    let mut limited = (&mut *buf).limit(room);
    rd.read_buf(&mut limited).await
}

fn scan(codec: &mut dyn Codec, buf: &[u8], frames: &mut FrameSet) -> Result<(), String> {
    debug_assert!(frames.is_empty());
    codec
        .scan(buf, frames)
        .map_err(|e| format!("bad request from client: {e}"))
}

/// Routes the frames from `cursor` on, consuming their bytes from `buf`. Returns why it
/// stopped early, if it did.
fn route_frames(
    buf: &mut BytesMut,
    frames: &FrameSet,
    cursor: &mut usize,
    client: &Rc<Client>,
    lctx: &ListenerCtx,
) -> Result<Option<Blocked>, String> {
    let awaits = lctx.config.correlation != Correlation::None;
    let max_inflight = lctx.config.limits.max_inflight;
    let usable = |b: usize| lctx.pool.usable(b);
    let now = std::time::Instant::now();
    while let Some(f) = frames.get(*cursor) {
        if awaits && client.inflight() >= max_inflight {
            return Ok(Some(Blocked::Inflight));
        }
        let len = f.len as usize;
        let frame = &buf[..len];
        let key = f.key.map(|k| key_hash(k.slice(frame)));
        let outcome = {
            let mut picker = lctx.picker.borrow_mut();
            lctx.cluster.route(key, client.gid, &mut picker, &usable)
        };
        let backend = match outcome {
            PinOutcome::Hit(b) | PinOutcome::New(b) => b as usize,
            PinOutcome::Moved { from, to } => {
                tracing::info!(
                    key = %String::from_utf8_lossy(f.key.map_or(&[][..], |k| k.slice(frame))),
                    from = %lctx.cluster.backends[from as usize].name,
                    to = %lctx.cluster.backends[to as usize].name,
                    "session moved off an unavailable backend"
                );
                to as usize
            }
            PinOutcome::Unavailable if lctx.pool.any_full() => {
                return Ok(Some(Blocked::Backend));
            }
            PinOutcome::Unavailable => {
                return Err(format!(
                    "no backend of cluster {} can take messages",
                    lctx.cluster.config.name
                ));
            }
        };
        match lctx.pool.target(backend) {
            PoolTarget::Conn(conn) => conn.send(frame, f.id, client, now),
            // `usable` said yes a moment ago on this same thread; nothing can have changed.
            PoolTarget::Full | PoolTarget::Down => return Ok(Some(Blocked::Backend)),
        }
        buf.advance(len);
        *cursor += 1;
    }
    Ok(None)
}
