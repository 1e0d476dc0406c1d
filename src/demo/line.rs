//! A real TCP backend for a line protocol, the `delimiter` codec's kind: each request line
//! `KEY ID PAYLOAD\n` is answered `KEY ID NAME PAYLOAD\n`, where NAME is the backend's. The
//! config for it: `delimiter` with `key_token = 0`, `id_token = 1`. Stops (closing every
//! connection) when dropped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// A running line backend.
#[derive(Debug)]
pub struct LineBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Lines answered.
    pub lines: Arc<AtomicU64>,
    stop: Option<watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

impl LineBackend {
    /// Starts a backend called `name` on a free loopback port.
    pub fn start(name: &str) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let lines = Arc::new(AtomicU64::new(0));
        let (stop, mut stop_rx) = watch::channel(false);
        let (name, count) = (name.to_string(), lines.clone());
        let thread = std::thread::Builder::new()
            .name(format!("line-{name}"))
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    loop {
                        tokio::select! {
                            r = listener.accept() => {
                                if let Ok((s, _)) = r {
                                    tokio::spawn(serve(s, name.clone(), count.clone()));
                                }
                            }
                            _ = stop_rx.changed() => break,
                        }
                    }
                });
            })?;
        Ok(LineBackend {
            addr,
            lines,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for LineBackend {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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
