//! A real TCP backend speaking the demo protocol ([`super::proto`]): it answers every request
//! with its own name and the request's payload, can record what it received, and can be
//! stopped (closing every connection) and restarted on the same address, so tests can kill
//! backends. A request whose payload starts with `PUSH` is answered and then followed by
//! one unasked message with the same key (id `u32::MAX`); one starting with `PUSHALL` makes
//! the backend send that message on *every* connection it has open. A request whose payload
//! starts with `STALL` is never answered; one starting with `LATE` is answered after one
//! second. While the backend is *sick*, requests whose payload is exactly `PING` (health
//! probes) go unanswered, and everything else is served as usual. A request whose payload
//! starts with `POISON` makes the backend close that connection at once, answering nothing
//! of what it read with it (as a server does on a request it cannot parse); while the
//! backend is *hostile* it does that on every request. A backend can be given a fixed delay
//! before each batch of answers.

use super::proto;
use bytes::{Buf, BytesMut};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use switchyard_proto::length_field::LengthField;
use switchyard_proto::Framer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// One request as a backend saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Session key.
    pub key: u64,
    /// Request id as it arrived (the proxy's id under `by_id`).
    pub id: u32,
    /// Payload bytes.
    pub payload: Vec<u8>,
}

/// What a backend has seen, shared with its owner.
#[derive(Debug, Default)]
pub struct BackendLog {
    /// Requests received.
    pub messages: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Every request, when recording.
    pub received: Mutex<Vec<Received>>,
    /// Requests per key.
    pub per_key: Mutex<HashMap<u64, u64>>,
    /// Open connections' channels of bytes to write unasked (`PUSHALL`, `LATE`).
    conns: Mutex<Vec<tokio::sync::mpsc::UnboundedSender<Vec<u8>>>>,
    /// Health probes go unanswered while set.
    pub sick: std::sync::atomic::AtomicBool,
    /// Every request closes its connection while set.
    pub hostile: std::sync::atomic::AtomicBool,
}

/// A running demo backend.
#[derive(Debug)]
pub struct TestBackend {
    /// Its name (in answers).
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it saw.
    pub log: Arc<BackendLog>,
    record: bool,
    delay: Duration,
    stop: Option<watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

impl TestBackend {
    /// Starts a backend on a free loopback port; `record` keeps every request.
    pub fn start(name: &str, record: bool) -> std::io::Result<Self> {
        let addr = "127.0.0.1:0".parse().map_err(std::io::Error::other)?;
        Self::spawn(name, addr, record, Duration::ZERO, Arc::default())
    }

    /// Starts a backend that waits `delay` before answering each batch of requests.
    pub fn start_slow(name: &str, record: bool, delay: Duration) -> std::io::Result<Self> {
        let addr = "127.0.0.1:0".parse().map_err(std::io::Error::other)?;
        Self::spawn(name, addr, record, delay, Arc::default())
    }

    /// Starts a backend at `addr`.
    pub fn start_at(name: &str, addr: SocketAddr) -> std::io::Result<Self> {
        Self::spawn(name, addr, false, Duration::ZERO, Arc::default())
    }

    fn spawn(
        name: &str,
        addr: SocketAddr,
        record: bool,
        delay: Duration,
        log: Arc<BackendLog>,
    ) -> std::io::Result<Self> {
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (stop, mut stop_rx) = watch::channel(false);
        let thread_log = log.clone();
        let thread_name = name.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("backend-{name}"))
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                    return;
                };
                rt.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                        return;
                    };
                    loop {
                        tokio::select! {
                            r = listener.accept() => {
                                if let Ok((s, _)) = r {
                                    thread_log.connections.fetch_add(1, Ordering::Relaxed);
                                    tokio::spawn(serve(s, thread_name.clone(), thread_log.clone(), record, delay));
                                }
                            }
                            _ = stop_rx.changed() => break,
                        }
                    }
                });
                // Dropping the runtime drops every connection task: their sockets close.
                drop(rt);
            })?;
        Ok(TestBackend {
            name: name.to_string(),
            addr,
            log,
            record,
            delay,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops accepting and closes every connection; returns once all are closed.
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Starts again on the same address, keeping the log.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.stop();
        let again = Self::spawn(
            &self.name,
            self.addr,
            self.record,
            self.delay,
            self.log.clone(),
        )?;
        *self = again;
        Ok(())
    }

    /// Requests received so far.
    pub fn messages(&self) -> u64 {
        self.log.messages.load(Ordering::Relaxed)
    }

    /// Makes health probes (`PING`) go unanswered, or answered again.
    pub fn set_sick(&self, sick: bool) {
        self.log.sick.store(sick, Ordering::Relaxed);
    }

    /// Makes every request close its connection unanswered, or be served again.
    pub fn set_hostile(&self, hostile: bool) {
        self.log.hostile.store(hostile, Ordering::Relaxed);
    }

    /// A copy of every recorded request.
    pub fn received(&self) -> Vec<Received> {
        self.log
            .received
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(
    mut s: tokio::net::TcpStream,
    name: String,
    log: Arc<BackendLog>,
    record: bool,
    delay: Duration,
) {
    let _ = s.set_nodelay(true);
    let (push_tx, mut push_rx) = tokio::sync::mpsc::unbounded_channel();
    if let Ok(mut conns) = log.conns.lock() {
        conns.retain(|c| !c.is_closed());
        conns.push(push_tx.clone());
    }
    let mut codec = LengthField::new(proto::codec_spec(true), 16 << 20);
    let mut buf = BytesMut::with_capacity(64 << 10);
    let mut frames = Vec::new();
    let mut out = Vec::with_capacity(64 << 10);
    loop {
        tokio::select! {
            r = s.read_buf(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            Some(bytes) = push_rx.recv() => {
                if s.write_all(&bytes).await.is_err() {
                    return;
                }
                continue;
            }
        }
        if codec.scan(&buf, &mut frames).is_err() {
            return;
        }
        let mut pushes = Vec::new();
        let mut poisoned = false;
        {
            let mut per_key = log.per_key.lock().unwrap_or_else(|p| p.into_inner());
            let mut rec = record.then(|| log.received.lock().unwrap_or_else(|p| p.into_inner()));
            let sick = log.sick.load(Ordering::Relaxed);
            for f in frames.drain(..) {
                let frame = &buf[..f.len as usize];
                let mut answer = true;
                if let Some(m) = proto::parse(frame) {
                    *per_key.entry(m.key).or_default() += 1;
                    if let Some(r) = rec.as_mut() {
                        r.push(Received {
                            key: m.key,
                            id: m.id,
                            payload: m.rest.to_vec(),
                        });
                    }
                    if m.rest.starts_with(b"PUSH") {
                        pushes.push((m.key, m.rest.starts_with(b"PUSHALL")));
                    }
                    if m.rest.starts_with(b"STALL") || (sick && m.rest == b"PING") {
                        answer = false;
                    }
                    if m.rest.starts_with(b"POISON") || log.hostile.load(Ordering::Relaxed) {
                        poisoned = true;
                    }
                    if m.rest.starts_with(b"LATE") {
                        answer = false;
                        let mut late = Vec::new();
                        proto::write_answer(&mut late, name.as_bytes(), frame);
                        let tx = push_tx.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            let _ = tx.send(late);
                        });
                    }
                }
                if answer {
                    proto::write_answer(&mut out, name.as_bytes(), frame);
                }
                log.messages.fetch_add(1, Ordering::Relaxed);
                buf.advance(f.len as usize);
            }
        }
        if poisoned {
            return; // closes the connection: nothing read with the poison is answered
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        for (key, all) in pushes {
            if all {
                let conns = log.conns.lock().map(|c| c.clone()).unwrap_or_default();
                let mut push = Vec::new();
                proto::write_request(&mut push, key, u32::MAX, b"pushed");
                for c in conns {
                    let _ = c.send(push.clone());
                }
            } else {
                proto::write_request(&mut out, key, u32::MAX, b"pushed");
            }
        }
        if s.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
    }
}
