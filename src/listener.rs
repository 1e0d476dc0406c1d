//! Listening sockets: binding one `SO_REUSEPORT` socket per worker on the same address (so
//! the kernel spreads new connections across workers), and each worker's accept loop with
//! back-off on accept errors such as EMFILE. Never parses a byte.

use crate::downstream::{self, ListenerCtx};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

/// Binds `count` listening sockets to `addr` with `SO_REUSEPORT`. With port 0 the first
/// socket picks the port and the others join it. Returns the sockets and the bound address.
pub fn bind_reuseport(
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

/// Accepts clients until shutdown, spawning one task each on the worker's `LocalSet`.
pub async fn accept_loop(listener: tokio::net::TcpListener, lctx: Rc<ListenerCtx>) {
    let mut shutdown = lctx.worker.shutdown.clone();
    let mut backoff = Duration::from_millis(5);
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    backoff = Duration::from_millis(5);
                    let _ = stream.set_nodelay(true);
                    tokio::task::spawn_local(downstream::serve(stream, peer, lctx.clone()));
                }
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS…: pause instead of spinning on the error.
                    tracing::warn!(listener = %lctx.config.name, error = %e, pause = ?backoff, "accept failed");
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
