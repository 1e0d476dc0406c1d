//! A real TCP backend for a line protocol, the `delimiter` codec's kind: each request line
//! `KEY ID PAYLOAD\n` is answered `KEY ID NAME PAYLOAD\n`, where NAME is the backend's. The
//! config for it: `delimiter` with `key_token = 0`, `id_token = 1`. Stops (closing every
//! connection) when dropped.

use super::serve::ServerThread;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A running line backend.
#[derive(Debug)]
pub struct LineBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Lines answered.
    pub lines: Arc<AtomicU64>,
    _server: ServerThread,
}

impl LineBackend {
    /// Starts a backend called `name` on a free loopback port.
    pub fn start(name: &str) -> std::io::Result<Self> {
        let lines = Arc::new(AtomicU64::new(0));
        let (own, count) = (name.to_string(), lines.clone());
        let server = ServerThread::start(&format!("line-{name}"), move |s| {
            serve(s, own.clone(), count.clone())
        })?;
        Ok(LineBackend {
            addr: server.addr,
            lines,
            _server: server,
        })
    }
}

/// `KEY ID PAYLOAD` → `KEY ID NAME PAYLOAD`, or `None` if the line has no two tokens.
pub fn answer(line: &[u8], name: &str, out: &mut Vec<u8>) -> Option<()> {
    let mut parts = line.splitn(3, |b| *b == b' ');
    let (key, id) = (parts.next()?, parts.next()?);
    out.extend_from_slice(key);
    out.push(b' ');
    out.extend_from_slice(id);
    out.push(b' ');
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.next().unwrap_or_default());
    out.push(b'\n');
    Some(())
}

async fn serve(mut s: tokio::net::TcpStream, name: String, count: Arc<AtomicU64>) {
    let _ = s.set_nodelay(true);
    let mut buf = Vec::with_capacity(64 << 10);
    let mut out = Vec::with_capacity(64 << 10);
    loop {
        match s.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut done = 0;
        while let Some(nl) = memchr::memchr(b'\n', &buf[done..]) {
            if answer(&buf[done..done + nl], &name, &mut out).is_none() {
                return;
            }
            count.fetch_add(1, Ordering::Relaxed);
            done += nl + 1;
        }
        buf.drain(..done);
        if s.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
    }
}
