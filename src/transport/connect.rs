//! Dialling a backend: TCP, then the PROXY protocol header and the TLS handshake where
//! the cluster asks for them. The result is an owned tokio stream ([`Dialed`]), for the
//! protocol's handshake and for health probes (which run on the control thread's
//! multi-threaded runtime), turned into a worker's [`Stream`] once it carries messages.

use super::Stream;
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use switchyard_proto::proxy_header::{self, ProxyVersion};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a cluster's connections start with.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outbound {
    /// A PROXY header first.
    pub(crate) proxy_protocol: Option<ProxyVersion>,
    /// TLS with this configuration, and the name to ask for (`None`: the address).
    pub(crate) tls: Option<(Arc<rustls::ClientConfig>, Option<ServerName<'static>>)>,
}

/// A byte stream tokio can read and write.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connected backend stream.
#[derive(Debug)]
pub(crate) enum Dialed {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS, its handshake done.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Dialed {
    /// The stream to read and write.
    pub(crate) fn io(&mut self) -> &mut dyn Io {
        match self {
            Dialed::Plain(s) => s,
            Dialed::Tls(s) => s.as_mut(),
        }
    }

    /// The stream a worker carries messages on.
    pub(crate) fn into_stream(self) -> Stream {
        match self {
            Dialed::Plain(s) => Stream::plain(s),
            Dialed::Tls(s) => {
                let (tcp, conn) = s.into_inner();
                Stream::tls(tcp, conn)
            }
        }
    }
}

/// Connects to `addr` as `how` says.
pub(crate) async fn connect(addr: SocketAddr, how: &Outbound) -> Result<Dialed, String> {
    let mut tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect failed: {e}"))?;
    let _ = tcp.set_nodelay(true);
    if let Some(version) = how.proxy_protocol {
        // A pooled connection carries many clients: the header names the connection
        // itself (the proxy's address), which is what a backend that requires one needs.
        let local = tcp
            .local_addr()
            .map_err(|e| format!("connect failed: {e}"))?;
        tcp.write_all(&proxy_header::encode(version, local, addr))
            .await
            .map_err(|e| format!("sending the PROXY header failed: {e}"))?;
    }
    let Some((config, name)) = &how.tls else {
        return Ok(Dialed::Plain(tcp));
    };
    let name = name.clone().unwrap_or_else(|| addr.ip().into());
    let s = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    Ok(Dialed::Tls(Box::new(s)))
}
