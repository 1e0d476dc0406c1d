//! The `[[listener]]` section: where clients connect, the protocol they speak (built by
//! `switchyard-proto` from the codec tables), and the bounds on each client.

use super::cluster::ClusterConfig;
use super::values::{nonzero_duration, resolve, size, Invalid};
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;
use switchyard_proto::{CodecConfig, Correlation, ListenerOptions, Protocols};

/// One `[[listener]]`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListener {
    pub(crate) name: String,
    listen: String,
    cluster: String,
    correlation: Option<Correlation>,
    codec: CodecConfig,
    response_codec: Option<CodecConfig>,
    max_frame_size: Option<u64>,
    max_buffered_bytes: Option<u64>,
    max_inflight_per_client: Option<u64>,
    max_reply_buffer: Option<u64>,
    max_connections: Option<u64>,
    client_idle_timeout: Option<String>,
    frame_timeout: Option<String>,
    password: Option<String>,
    error_reply: Option<String>,
    error_reply_hex: Option<String>,
    retry_on_backend_close: Option<bool>,
    on_unanswerable: Option<String>,
    tls: Option<super::tls::RawListenerTls>,
    proxy_protocol: Option<bool>,
    handshake_timeout: Option<String>,
}

/// Bounds on one client connection.
#[derive(Debug, Clone, Copy)]
pub struct ClientLimits {
    /// Largest message accepted, in either direction.
    pub max_frame_size: usize,
    /// Largest amount of unprocessed request bytes buffered for one client.
    pub max_buffered_bytes: usize,
    /// Requests of one client awaiting answers; reading pauses at the bound.
    pub max_inflight: usize,
    /// Answer bytes waiting for a client that does not read; past this it is closed.
    pub max_reply_buffer: usize,
    /// A client with nothing in flight that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// A partial frame held longer than this (a slow-loris client) closes its connection.
    pub frame_timeout: Duration,
}

/// One `[[listener]]`, validated.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Unique name, used in logs.
    pub name: String,
    /// Address to bind.
    pub listen: SocketAddr,
    /// Index into [`super::Config::clusters`].
    pub cluster: usize,
    /// The protocol of requests and answers, and how answers find their requests.
    pub protocols: Protocols,
    /// Per-client bounds.
    pub limits: ClientLimits,
    /// Open client connections across all workers; more are accepted and closed at once.
    pub max_connections: usize,
    /// Requests in flight on a backend connection that dies are re-sent on probation
    /// (those the protocol says are safe to repeat), so that only the one that killed it
    /// fails.
    pub retry_on_backend_close: bool,
    /// A failed request the protocol has no error answer for is dropped (logged and
    /// counted; the client stays connected), rather than its client closed.
    pub drop_unanswerable: bool,
    /// TLS terminated on this listener.
    pub tls: Option<super::tls::ListenerTls>,
    /// Connections start with a PROXY protocol header (v1 or v2) naming the real client.
    pub proxy_protocol: bool,
    /// The PROXY header and the TLS handshake must be done within this.
    pub handshake_timeout: Duration,
}

impl ListenerConfig {
    /// How its connections start.
    pub(crate) fn inbound(&self) -> crate::transport::Inbound {
        crate::transport::Inbound {
            proxy_protocol: self.proxy_protocol,
            tls: self.tls.as_ref().map(|t| t.config.clone()),
            timeout: self.handshake_timeout,
        }
    }

    /// How answers find their requests.
    pub fn correlation(&self) -> Correlation {
        self.protocols.correlation
    }

    /// Whether connections of `other` speak the same protocol, so a connection accepted
    /// under one can be served under the other (and share its backend connections).
    pub fn same_protocol(&self, other: &ListenerConfig) -> bool {
        self.protocols == other.protocols
            && self.limits.max_frame_size == other.limits.max_frame_size
    }
}

/// Validates listener number `i`; `base` is the config file's folder (for scripts).
pub(crate) fn validate(
    i: usize,
    l: RawListener,
    clusters: &[ClusterConfig],
    base: &std::path::Path,
) -> Result<ListenerConfig, Invalid> {
    let label = if l.name.is_empty() {
        format!("listener[{i}]")
    } else {
        format!("listener.{}", l.name)
    };
    let key = |k: &str| format!("{label}.{k}");
    if l.name.is_empty() {
        return Err((key("name"), "must not be empty".into()));
    }
    let listen = resolve(&l.listen).map_err(|p| (key("listen"), p))?;
    let cluster = clusters
        .iter()
        .position(|c| c.name() == l.cluster)
        .ok_or_else(|| {
            (
                key("cluster"),
                format!("no [[cluster]] is named `{}`", l.cluster),
            )
        })?;
    // Protocol-sized: what the servers themselves take, so a cache proxy never refuses a
    // request its server would accept.
    let default_frame = match l.codec {
        // Redis's client-query-buffer-limit (1 GiB): the largest command it reads; a bulk
        // string may be up to proto-max-bulk-len (512 MB).
        CodecConfig::Resp(_) => 1 << 30,
        // memcached's largest item size (`-I` up to 1 GiB); its default is 1 MiB, and
        // larger items get its own SERVER_ERROR.
        CodecConfig::Memcache(_) => 1 << 30,
        _ => 1 << 20,
    };
    let max_frame_size = size(&key("max_frame_size"), l.max_frame_size, default_frame, 16)?;
    let max_buffered_bytes = size(
        &key("max_buffered_bytes"),
        l.max_buffered_bytes,
        (2 * max_frame_size).max(64 << 10),
        max_frame_size,
    )?;
    let limits = ClientLimits {
        max_frame_size,
        max_buffered_bytes,
        max_inflight: size(
            &key("max_inflight_per_client"),
            l.max_inflight_per_client,
            1024,
            1,
        )?,
        max_reply_buffer: size(
            &key("max_reply_buffer"),
            l.max_reply_buffer,
            (4 * max_frame_size).max(4 << 20),
            max_frame_size,
        )?,
        idle_timeout: nonzero_duration(
            &key("client_idle_timeout"),
            l.client_idle_timeout.as_ref(),
            Duration::from_secs(600),
        )?,
        frame_timeout: nonzero_duration(
            &key("frame_timeout"),
            l.frame_timeout.as_ref(),
            Duration::from_secs(30),
        )?,
    };
    let max_connections = size(&key("max_connections"), l.max_connections, 10_000, 1)?;
    let protocols = switchyard_proto::build_listener(
        &l.codec,
        l.response_codec.as_ref(),
        &ListenerOptions {
            base,
            correlation: l.correlation,
            password: l.password,
            error_reply: l.error_reply,
            error_reply_hex: l.error_reply_hex,
            max_frame: max_frame_size,
        },
    )
    .map_err(|(k, p)| (key(&k), p))?;
    let retry_on_backend_close = match l.retry_on_backend_close {
        Some(true) if protocols.correlation == Correlation::None => {
            return Err((
                key("retry_on_backend_close"),
                "with correlation = \"none\" nothing awaits an answer, so nothing is retried"
                    .into(),
            ))
        }
        Some(true) if protocols.correlation == Correlation::ByIdAsSent => {
            return Err((
                key("retry_on_backend_close"),
                "with correlation = \"by_id_as_sent\" requests may have several answers, so a request re-sent alone cannot be judged by its first one"
                    .into(),
            ))
        }
        Some(r) => r,
        None => {
            !matches!(protocols.correlation, Correlation::None | Correlation::ByIdAsSent)
                && protocols.requests.retries_by_default()
        }
    };
    let in_order = protocols.correlation == Correlation::InOrder;
    let drop_unanswerable = match l.on_unanswerable.as_deref() {
        None => !in_order,
        Some("close") => false,
        Some("drop") if in_order => {
            return Err((
                key("on_unanswerable"),
                "with correlation = \"in_order\" a request left unanswered would shift every later answer onto the wrong request: only \"close\" fits".into(),
            ))
        }
        Some("drop") => true,
        Some(o) => {
            return Err((
                key("on_unanswerable"),
                format!("`{o}` must be \"drop\" or \"close\""),
            ))
        }
    };
    let tls = l
        .tls
        .map(|t| super::tls::listener(&key("tls"), t, base))
        .transpose()?;
    let handshake_timeout =
        super::tls::handshake_timeout(&key("handshake_timeout"), l.handshake_timeout.as_ref())?;
    Ok(ListenerConfig {
        tls,
        proxy_protocol: l.proxy_protocol.unwrap_or(false),
        handshake_timeout,
        name: l.name,
        listen,
        cluster,
        protocols,
        limits,
        max_connections,
        retry_on_backend_close,
        drop_unanswerable,
    })
}
