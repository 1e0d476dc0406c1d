//! What happens on an accepted connection before its protocol's first byte: the PROXY
//! protocol header, if the listener takes one (read with `peek`, so that not a byte past
//! it is taken from the socket), then the TLS handshake, if the listener terminates TLS;
//! both within one timeout.

use super::Stream;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use switchyard_proto::proxy_header::{self, MAX_HEADER};
use tokio::net::TcpStream;

/// How a listener's connections start.
#[derive(Debug, Clone)]
pub(crate) struct Inbound {
    /// A PROXY protocol header (v1 or v2) comes first, and names the real client.
    pub(crate) proxy_protocol: bool,
    /// TLS is terminated with this configuration.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// Both must be done within this.
    pub(crate) timeout: Duration,
}

/// A connection ready for its protocol.
#[derive(Debug)]
pub(crate) struct Accepted {
    pub(crate) stream: Stream,
    /// The client: from the PROXY header if there was one, else the socket's peer.
    pub(crate) peer: SocketAddr,
    /// The SNI name the client asked for, with TLS.
    pub(crate) sni: Option<String>,
}

/// Why a connection was closed before its protocol started.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AcceptError {
    /// The PROXY header was bad, missing, or the connection closed before it came.
    #[error("{0}")]
    Proxy(String),
    /// The TLS handshake failed (rustls's reason: an unknown CA, an expired certificate,
    /// no certificate for the SNI name, no shared protocol version…).
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// It took too long.
    #[error("{what} not done within {after:?}")]
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// The listener's `handshake_timeout`.
        after: Duration,
    },
}

/// Reads the PROXY header and does the TLS handshake that `how` asks for.
pub(crate) async fn accept(
    tcp: TcpStream,
    peer: SocketAddr,
    how: &Inbound,
) -> Result<Accepted, AcceptError> {
    if !how.proxy_protocol && how.tls.is_none() {
        return Ok(Accepted {
            stream: Stream::plain(tcp),
            peer,
            sni: None,
        });
    }
    let what = if how.tls.is_some() {
        "the TLS handshake"
    } else {
        "the PROXY header"
    };
    match tokio::time::timeout(how.timeout, prelude(tcp, peer, how)).await {
        Ok(r) => r,
        Err(_) => Err(AcceptError::Timeout {
            what,
            after: how.timeout,
        }),
    }
}

async fn prelude(
    tcp: TcpStream,
    mut peer: SocketAddr,
    how: &Inbound,
) -> Result<Accepted, AcceptError> {
    if how.proxy_protocol {
        if let Some(source) = read_proxy_header(&tcp).await? {
            peer = source;
        }
    }
    let Some(config) = &how.tls else {
        return Ok(Accepted {
            stream: Stream::plain(tcp),
            peer,
            sni: None,
        });
    };
    let tls = tokio_rustls::TlsAcceptor::from(config.clone())
        .accept(tcp)
        .await
        .map_err(|e| AcceptError::Tls(e.to_string()))?;
    let (tcp, conn) = tls.into_inner();
    let sni = conn.server_name().map(str::to_string);
    Ok(Accepted {
        stream: Stream::tls(tcp, conn),
        peer,
        sni,
    })
}

/// Reads the PROXY header off `tcp` and nothing after it; the client it names, if any.
async fn read_proxy_header(tcp: &TcpStream) -> Result<Option<SocketAddr>, AcceptError> {
    let mut buf = vec![0u8; MAX_HEADER];
    let mut seen = 0;
    loop {
        let n = tcp
            .peek(&mut buf)
            .await
            .map_err(|e| AcceptError::Proxy(format!("reading the PROXY header failed: {e}")))?;
        if n == 0 {
            return Err(AcceptError::Proxy(
                "the connection closed before its PROXY header".into(),
            ));
        }
        match proxy_header::parse(&buf[..n]) {
            Err(e) => return Err(AcceptError::Proxy(e.to_string())),
            Ok(Some(h)) => {
                // Take exactly the header: what follows is the protocol's.
                let mut taken = 0;
                while taken < h.len {
                    taken += tcp.try_read(&mut buf[taken..h.len]).map_err(|e| {
                        AcceptError::Proxy(format!("reading the PROXY header failed: {e}"))
                    })?;
                }
                return Ok(h.source);
            }
            Ok(None) if n == MAX_HEADER => {
                return Err(AcceptError::Proxy("a PROXY header too long".into()))
            }
            Ok(None) => {
                // A header cut across segments (rare: senders write it in one). `peek`
                // returns at once while the bytes stay, so look again after a pause.
                if n == seen {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                seen = n;
            }
        }
    }
}
