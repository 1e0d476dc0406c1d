//! A loopback TCP server on a thread of its own (a current-thread runtime), each connection
//! served by a task: what the demo's small protocol servers (line, SIP) share. Stops,
//! closing every connection, when dropped.

use std::future::Future;
use std::net::SocketAddr;
use std::thread::JoinHandle;
use tokio::sync::watch;

/// A running server thread.
#[derive(Debug)]
pub(crate) struct ServerThread {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    stop: Option<watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

impl ServerThread {
    /// Listens on a free loopback port, on a thread called `name`; each accepted
    /// connection is served by `serve`.
    pub(crate) fn start<F, Fut>(name: &str, serve: F) -> std::io::Result<Self>
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, mut stop_rx) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name(name.to_string())
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
                                    tokio::spawn(serve(s));
                                }
                            }
                            _ = stop_rx.changed() => break,
                        }
                    }
                });
            })?;
        Ok(ServerThread {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
