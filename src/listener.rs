//! Listening sockets: binding one `SO_REUSEPORT` socket per worker on the same address (so
//! the kernel spreads new connections across workers), and each worker's accept loop:
//! the listener's connection limit, and a pause on accept errors such as EMFILE instead of
//! a busy loop. Never parses a byte.

use crate::client::{self, ListenerSlot};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
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
                    tokio::task::spawn_local(client::serve(stream, peer, slot.clone()));
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
