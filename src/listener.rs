//! Listening sockets: binding one `SO_REUSEPORT` socket per worker on the same address (so
//! the kernel spreads new connections across workers), and each worker's accept loop:
//! the listener's connection limit, and a pause on accept errors such as EMFILE instead of
//! a busy loop; each connection's prelude (the PROXY header, the TLS handshake: see
//! [`crate::transport`]) under the listener's bound on handshakes in progress. Never
//! parses a protocol's byte.

use crate::client::{self, ListenerSlot};
use crate::metrics::{PRELUDE_BUSY, PRELUDE_PROXY, PRELUDE_TIMEOUT, PRELUDE_TLS};
use crate::transport::AcceptError;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Whether some socket already listens on `addr` (another process, typically a second
/// Switchyard started by mistake): with `SO_REUSEPORT` both would bind and silently share the
/// new connections, each with its own pins. Probed by binding without `SO_REUSEPORT`, which
/// the kernel refuses while a listening socket holds the address (`SO_REUSEADDR` keeps
/// connections in TIME_WAIT from counting). Port 0 is never in use.
pub(crate) fn listened_on(addr: SocketAddr) -> bool {
    if addr.port() == 0 {
        return false;
    }
    let probe = || -> std::io::Result<()> {
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        sock.set_reuse_address(true)?;
        sock.bind(&addr.into())
    };
    matches!(probe(), Err(e) if e.kind() == std::io::ErrorKind::AddrInUse)
}

/// Binds `count` listening sockets to `addr` with `SO_REUSEPORT`. With port 0 the first
/// socket picks the port and the others join it. Returns the sockets and the bound address.
pub(crate) fn bind_reuseport(
    addr: SocketAddr,
    count: usize,
) -> std::io::Result<(Vec<std::net::TcpListener>, SocketAddr)> {
    let mut out = Vec::with_capacity(count);
    let mut bound = addr;
    for _ in 0..count {
        let sock = Socket::new(
            Domain::for_address(bound),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        sock.set_reuse_address(true)?;
        sock.set_reuse_port(true)?;
        sock.set_nonblocking(true)?;
        sock.bind(&bound.into())?;
        sock.listen(1024)?;
        let l: std::net::TcpListener = sock.into();
        bound = l.local_addr()?;
        out.push(l);
    }
    Ok((out, bound))
}

/// Accepts clients until the task is aborted (reload removed the listener) or shutdown,
/// spawning one task each on the worker's `LocalSet`.
pub(crate) async fn accept_loop(listener: tokio::net::TcpListener, slot: Rc<ListenerSlot>) {
    let registry = slot.current().registry.clone();
    let mut shutdown = registry.shutdown.clone();
    let mut backoff = Duration::from_millis(5);
    let mut last_refusal_log: Option<Instant> = None;
    let mut refused_since_log = 0u64;
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    backoff = Duration::from_millis(5);
                    let max = slot.current().config.max_connections;
                    if slot.active.fetch_add(1, Ordering::Relaxed) >= max {
                        slot.active.fetch_sub(1, Ordering::Relaxed);
                        drop(stream);
                        slot.current().counters.refused.inc();
                        refused_since_log += 1;
                        // One line a second at most, however hard clients knock.
                        if last_refusal_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                            tracing::warn!(
                                listener = %slot.current().config.name, %peer, max_connections = max,
                                refused = refused_since_log, "connection limit reached; closing new connections"
                            );
                            last_refusal_log = Some(Instant::now());
                            refused_since_log = 0;
                        }
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    tokio::task::spawn_local(open(stream, peer, slot.clone()));
                }
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS…: pause instead of spinning on the error.
                    tracing::warn!(listener = %slot.current().config.name, error = %e, pause = ?backoff, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            },
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    break;
                }
            }
        }
    }
}

/// Decrements the listener's connection count when the connection's task ends.
struct ConnGuard(Arc<AtomicUsize>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One accepted connection, counted in `slot.active`: its prelude, then its client task.
async fn open(tcp: tokio::net::TcpStream, peer: SocketAddr, slot: Rc<ListenerSlot>) {
    let _guard = ConnGuard(slot.active.clone());
    let own = slot.current();
    let inbound = own.config.inbound();
    if !inbound.proxy_protocol && inbound.tls.is_none() {
        return client::serve(crate::transport::Stream::plain(tcp), peer, slot.clone()).await;
    }
    let counters = &own.counters;
    let refuse = |reason: usize, text: &str| {
        counters.prelude_failures[reason].inc();
        let name = &own.config.name;
        if let Some(suppressed) = crate::throttle::admit(&[name, "prelude", text]) {
            tracing::warn!(listener = %name, %peer, reason = %text, suppressed, "closing connection before its protocol started");
        }
    };
    let max = own
        .config
        .tls
        .as_ref()
        .map_or(usize::MAX, |t| t.max_handshakes);
    let Some(_handshake) = slot.begin_handshake(max) else {
        return refuse(
            PRELUDE_BUSY,
            &format!("{max} TLS handshakes already in progress on this worker (max_handshakes)"),
        );
    };
    match crate::transport::accept(tcp, peer, &inbound).await {
        Ok(a) => {
            drop(_handshake);
            if a.stream.is_tls() {
                counters.tls_handshakes.inc();
            }
            if a.peer != peer {
                tracing::debug!(listener = %own.config.name, client = %a.peer, via = %peer, sni = ?a.sni, "PROXY header read");
            }
            client::serve(a.stream, a.peer, slot.clone()).await
        }
        Err(e) => {
            let reason = match e {
                AcceptError::Proxy(_) => PRELUDE_PROXY,
                AcceptError::Tls(_) => PRELUDE_TLS,
                AcceptError::Timeout { .. } => PRELUDE_TIMEOUT,
            };
            refuse(reason, &e.to_string())
        }
    }
}
