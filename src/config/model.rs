//! The validated configuration the server runs from: every name resolved, every value in
//! range, every default filled in. Built only by [`validate`].

use super::file::{RawCluster, RawCodec, RawConfig, RawField, RawHealth, RawListener, RawOutlier};
use crate::codec::error_reply::{ErrorReplySpec, Failure, Template};
use crate::codec::lua::{self, Direction};
use crate::codec::{CodecSpec, DelimiterSpec, Endian, FieldSpec, IdFormat, LengthFieldSpec};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// A script call's default time limit (per 64 KiB of input): the heaviest shipped examples
/// frame a 16 KiB read in about 0.6 ms here (`cargo bench --bench framing`, BENCHMARKS.md),
/// so this leaves an eightfold margin for a busy machine, while a looping script stalls its
/// worker for at most five of these before it is suspended.
const DEFAULT_SCRIPT_TIME_LIMIT: Duration = Duration::from_millis(5);

/// Largest offset of a length, key or id field in a frame.
const MAX_FIELD_OFFSET: u32 = 1 << 20;

/// A validation failure: (dotted key, problem).
pub type Invalid = (String, String);

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Worker threads (each a single-threaded runtime with its own listeners and pools).
    pub workers: usize,
    /// How long a graceful shutdown waits for in-flight messages.
    pub shutdown_timeout: Duration,
    /// Bytes all clients' input buffers may hold together (see [`crate::budget`]).
    pub buffer_budget: usize,
    /// Listeners, in file order.
    pub listeners: Vec<ListenerConfig>,
    /// Clusters, in file order.
    pub clusters: Vec<ClusterConfig>,
}

/// How answers are matched to requests on shared backend connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Correlation {
    /// Answers come back in request order on each backend connection.
    InOrder,
    /// Requests and answers carry an id; the proxy rewrites it on the way to the backend.
    ById,
    /// One-way messages; every backend message is a push.
    None,
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

/// One `[[listener]]`.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Unique name, used in logs.
    pub name: String,
    /// Address to bind.
    pub listen: SocketAddr,
    /// Index into [`Config::clusters`].
    pub cluster: usize,
    /// How answers find their requests.
    pub correlation: Correlation,
    /// Frames client → backend.
    pub codec: CodecSpec,
    /// Frames backend → client.
    pub response_codec: CodecSpec,
    /// Per-client bounds.
    pub limits: ClientLimits,
    /// Open client connections across all workers; more are accepted and closed at once.
    pub max_connections: usize,
    /// The password clients must present with AUTH (`resp` only).
    pub password: Option<String>,
    /// How a failed request is answered, keeping its client connected; `None`: the client
    /// is closed instead.
    pub error_reply: Option<ErrorReplySpec>,
}

/// Balancing policy of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// Each backend in turn.
    RoundRobin,
    /// Each backend in turn, in proportion to its weight (smooth WRR).
    WeightedRoundRobin,
    /// Fewest requests awaiting answers, relative to weight.
    LeastOutstanding,
    /// Power of two random choices over latency EWMA × outstanding.
    P2cEwma,
    /// Random, in proportion to weight.
    Random,
    /// By key, on twemproxy's ketama continuum (MD5 points, twemproxy's `fnv1a_64` key hash).
    Ketama,
    /// By key, on a Maglev lookup table (65537 entries, weighted).
    Maglev,
}

impl PolicyKind {
    const NAMES: &'static str =
        "round_robin, weighted_round_robin, least_outstanding, p2c_ewma, random, ketama, maglev";

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "round_robin" => PolicyKind::RoundRobin,
            "weighted_round_robin" => PolicyKind::WeightedRoundRobin,
            "least_outstanding" => PolicyKind::LeastOutstanding,
            "p2c_ewma" => PolicyKind::P2cEwma,
            "random" => PolicyKind::Random,
            "ketama" => PolicyKind::Ketama,
            "maglev" => PolicyKind::Maglev,
            _ => return None,
        })
    }
}

/// One backend of a cluster.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// Name used in logs (default: the address).
    pub name: String,
    /// Resolved address.
    pub address: SocketAddr,
    /// Relative share of new messages and pins (≥ 1).
    pub weight: u32,
    /// Draining: no new messages or pins; existing pins are kept until their TTL.
    pub drain: bool,
}

/// Session persistence of a cluster.
#[derive(Debug, Clone, Copy)]
pub struct Persistence {
    /// Idle time after which a pin is forgotten.
    pub ttl: Duration,
    /// Most pins kept; the stalest are evicted beyond it.
    pub max_entries: usize,
}

/// Per-worker backend connection pool settings.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Shared connections each worker keeps to each backend.
    pub connections_per_backend: usize,
    /// Time allowed for a TCP connect.
    pub connect_timeout: Duration,
    /// Request bytes queued on one backend connection before it takes no more.
    pub max_queued_bytes: usize,
    /// First reconnect delay after a failure.
    pub reconnect_backoff_min: Duration,
    /// Largest reconnect delay.
    pub reconnect_backoff_max: Duration,
}

/// One `[[cluster]]`.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Unique name.
    pub name: String,
    /// How new messages and new keys pick a backend.
    pub policy: PolicyKind,
    /// The backends, in file order.
    pub backends: Vec<BackendConfig>,
    /// Key pinning; `None` balances every message freely.
    pub persistence: Option<Persistence>,
    /// Connection pool settings.
    pub pool: PoolConfig,
    /// An answer not received this long after its request was queued fails the request.
    pub request_timeout: Duration,
    /// A message never written to a backend whose connection failed is routed again.
    pub retry_on_connect_failure: bool,
    /// What a message whose key is pinned to an unusable backend does.
    pub on_backend_down: OnBackendDown,
    /// Active health checks, if configured.
    pub health: Option<HealthConfig>,
    /// Passive outlier ejection, if configured.
    pub outlier: Option<OutlierConfig>,
    /// Sent with AUTH on every new backend connection (`resp` listeners).
    pub backend_password: Option<String>,
    /// Selected with SELECT on every new backend connection (`resp` listeners), as
    /// twemproxy's `redis_db`.
    pub backend_db: Option<u32>,
    /// twemproxy's `hash_tag`: an opening and a closing byte; a key holding both (with
    /// something between) is placed and pinned by the part between them.
    pub hash_tag: Option<[u8; 2]>,
}

/// What happens to a message whose key's backend (pinned, or where a key-hashing policy
/// places it) is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBackendDown {
    /// Send it to a live backend (and pin the key there): the default, except under the
    /// key-hashing policies.
    Repin,
    /// Fail the message (the listener's error answer, or its client closed): the default
    /// under `ketama` and `maglev`.
    Fail,
}

/// How a health probe judges an answer.
#[derive(Debug, Clone)]
pub enum Expect {
    /// The answer starts with these bytes.
    Prefix(Vec<u8>),
    /// The answer (as lossy UTF-8) matches this regular expression.
    Regex(regex_lite::Regex),
}

/// `[cluster.health]`: active probes, HAProxy's meanings.
#[derive(Debug, Clone)]
pub struct HealthConfig {
    /// Time between probes of one backend.
    pub interval: Duration,
    /// Time a probe may take (connect, send, and read the expected answer).
    pub timeout: Duration,
    /// Consecutive passes that bring a failed backend back.
    pub rise: u32,
    /// Consecutive failures that take a backend out.
    pub fall: u32,
    /// Bytes sent after connecting; `None` for a plain TCP connect check.
    pub send: Option<Vec<u8>>,
    /// What the answer must look like; `None` accepts any connect.
    pub expect: Option<Expect>,
}

/// `[cluster.outlier]`: passive ejection, Envoy's idea.
#[derive(Debug, Clone, Copy)]
pub struct OutlierConfig {
    /// Consecutive failures (connect refused, reset, request timeout) that eject.
    pub consecutive_failures: u32,
    /// First ejection period; doubles with each further ejection.
    pub base_ejection: Duration,
    /// Longest ejection period.
    pub max_ejection: Duration,
    /// Largest share of the cluster's backends ejected at once.
    pub max_ejected_percent: u32,
}

fn duration(key: &str, value: Option<&String>, default: Duration) -> Result<Duration, Invalid> {
    match value {
        None => Ok(default),
        Some(s) => humantime::parse_duration(s).map_err(|e| {
            (
                key.to_string(),
                format!("`{s}` is not a duration such as \"30s\" or \"250ms\": {e}"),
            )
        }),
    }
}

fn nonzero_duration(
    key: &str,
    value: Option<&String>,
    default: Duration,
) -> Result<Duration, Invalid> {
    let d = duration(key, value, default)?;
    if d.is_zero() {
        return Err((key.to_string(), "must be longer than 0s".into()));
    }
    Ok(d)
}

fn size(key: &str, value: Option<u64>, default: usize, min: usize) -> Result<usize, Invalid> {
    let v = value.map_or(default, |v| v as usize);
    if v < min {
        return Err((key.to_string(), format!("must be at least {min}, got {v}")));
    }
    Ok(v)
}

/// Validates the raw file into a [`Config`]; relative script paths are resolved against
/// `base` (the config file's folder).
pub fn validate(raw: RawConfig, base: &std::path::Path) -> Result<Config, Invalid> {
    let workers = match raw.workers {
        Some(0) => return Err(("workers".into(), "must be at least 1".into())),
        Some(n) if n > 1024 => return Err(("workers".into(), format!("{n} is too many"))),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let shutdown_timeout = duration(
        "shutdown_timeout",
        raw.shutdown_timeout.as_ref(),
        Duration::from_secs(10),
    )?;
    let buffer_budget = size(
        "buffer_budget",
        raw.buffer_budget,
        crate::budget::default_limit(),
        1 << 20,
    )?;
    if raw.listener.is_empty() {
        return Err((
            "listener".into(),
            "at least one [[listener]] is required".into(),
        ));
    }
    let mut clusters = Vec::new();
    for (i, c) in raw.cluster.into_iter().enumerate() {
        let cluster = validate_cluster(i, c)?;
        if clusters
            .iter()
            .any(|x: &ClusterConfig| x.name == cluster.name)
        {
            return Err((
                format!("cluster.{}.name", cluster.name),
                "another cluster has this name".into(),
            ));
        }
        clusters.push(cluster);
    }
    let mut listeners = Vec::new();
    for (i, l) in raw.listener.into_iter().enumerate() {
        let listener = validate_listener(i, l, &clusters, base)?;
        if listeners
            .iter()
            .any(|x: &ListenerConfig| x.name == listener.name)
        {
            return Err((
                format!("listener.{}.name", listener.name),
                "another listener has this name".into(),
            ));
        }
        if listener.listen.port() != 0
            && listeners
                .iter()
                .any(|x: &ListenerConfig| x.listen == listener.listen)
        {
            return Err((
                format!("listener.{}.listen", listener.name),
                format!("{} is already used by another listener", listener.listen),
            ));
        }
        listeners.push(listener);
    }
    Ok(Config {
        workers,
        shutdown_timeout,
        buffer_budget,
        listeners,
        clusters,
    })
}

fn validate_listener(
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
        .position(|c| c.name == l.cluster)
        .ok_or_else(|| {
            (
                key("cluster"),
                format!("no [[cluster]] is named `{}`", l.cluster),
            )
        })?;
    let codec = validate_codec(&key("codec"), &l.codec, base, Direction::Requests)?;
    // Protocol-sized: what the servers themselves take, so a cache proxy never refuses a
    // request its server would accept.
    let default_frame = match codec {
        // Redis's client-query-buffer-limit (1 GiB): the largest command it reads; a bulk
        // string may be up to proto-max-bulk-len (512 MB).
        CodecSpec::Resp { .. } => 1 << 30,
        // memcached's largest item size (`-I` up to 1 GiB); its default is 1 MiB, and
        // larger items get its own SERVER_ERROR.
        CodecSpec::Memcache { .. } => 1 << 30,
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
    let response_codec = match &l.response_codec {
        Some(c) => validate_codec(&key("response_codec"), c, base, Direction::Answers)?,
        None => codec.for_answers(),
    };
    // A script may declare its correlation mode; the listener's own key wins.
    let declared = match &codec {
        CodecSpec::Lua(s) => s.info.correlation.clone(),
        _ => None,
    };
    let correlation = match l.correlation.as_deref().or(declared.as_deref()) {
        None | Some("in_order") => Correlation::InOrder,
        Some("by_id") => Correlation::ById,
        Some("none") => Correlation::None,
        Some(other) => {
            return Err((
                key("correlation"),
                format!("unknown mode `{other}`, expected in_order, by_id or none"),
            ))
        }
    };
    let password = l.password;
    if codec.has_plans() {
        if l.correlation.is_some() && correlation != Correlation::InOrder {
            return Err((
                key("correlation"),
                format!(
                    "the {} codec answers in order: only in_order fits",
                    codec.kind()
                ),
            ));
        }
    } else if password.is_some() {
        return Err((
            key("password"),
            "client passwords apply to the resp codec only".into(),
        ));
    }
    if correlation == Correlation::ById {
        if !codec.has_id() {
            return Err((
                key("correlation"),
                "by_id needs the codec to find an id (codec.id or codec.id_token)".into(),
            ));
        }
        if !response_codec.has_id() {
            return Err((
                key("correlation"),
                "by_id needs the response codec to find an id".into(),
            ));
        }
    }
    let error_reply = validate_error_reply(
        &key,
        (l.error_reply.as_deref(), l.error_reply_hex.as_deref()),
        &codec,
        &response_codec,
        correlation,
        max_frame_size,
    )?;
    Ok(ListenerConfig {
        name: l.name,
        listen,
        cluster,
        correlation,
        codec,
        response_codec,
        limits,
        max_connections,
        password,
        error_reply,
    })
}

/// How the listener answers failed requests: the protocol's own error (`resp`,
/// `memcache`), the script's `error_reply`, or the operator's template, which must make one
/// answer frame of the response codec (with the client's id where the codec finds ids).
fn validate_error_reply(
    key: &dyn Fn(&str) -> String,
    (text, hex): (Option<&str>, Option<&str>),
    codec: &CodecSpec,
    response: &CodecSpec,
    correlation: Correlation,
    max_frame: usize,
) -> Result<Option<ErrorReplySpec>, Invalid> {
    let name = if hex.is_some() {
        "error_reply_hex"
    } else {
        "error_reply"
    };
    let given = text.is_some() || hex.is_some();
    if text.is_some() && hex.is_some() {
        return Err((key("error_reply_hex"), "conflicts with error_reply".into()));
    }
    match codec {
        CodecSpec::Resp { .. } | CodecSpec::Memcache { .. } if given => {
            return Err((
                key(name),
                format!(
                    "the {} codec answers failed requests with its own error line",
                    codec.kind()
                ),
            ))
        }
        CodecSpec::Resp { .. } => return Ok(Some(ErrorReplySpec::Resp)),
        CodecSpec::Memcache { .. } => return Ok(Some(ErrorReplySpec::Memcache)),
        CodecSpec::Lua(s) if s.info.has_error_reply => {
            if given {
                return Err((
                    key(name),
                    "conflicts with the script's own error_reply function".into(),
                ));
            }
            return Ok(Some(ErrorReplySpec::Script(s.clone())));
        }
        _ => {}
    }
    if !given {
        return Ok(None);
    }
    if correlation == Correlation::None {
        return Err((
            key(name),
            "with correlation = \"none\" no answers are expected, so none can be an error".into(),
        ));
    }
    let template = match (text, hex) {
        (Some(t), _) => Template::from_text(t, response),
        (_, Some(h)) => Template::from_hex(h, response),
        _ => return Ok(None),
    }
    .map_err(|e| (key(name), e))?;
    // A sample answer must be exactly one frame of the response codec, with the client's id
    // where that codec finds ids.
    let id: Vec<u8> = match codec.id_format() {
        IdFormat::Binary => (0..codec.id_width()).map(|i| 0xa0 + i as u8).collect(),
        IdFormat::Text => b"4242".to_vec(),
    };
    let sample_key: Vec<u8> = match codec {
        CodecSpec::LengthField(s) => vec![b'k'; s.key.map_or(0, |k| k.width as usize)],
        _ => b"k".to_vec(),
    };
    let sample = template.render(&Failure {
        id: Some(&id),
        key: Some(&sample_key),
        reason: "backend b1 failed: connection reset",
    });
    let bad = |why: String| (key(name), format!("the answer it makes ({sample:?}) {why}"));
    let mut answers = response
        .build(max_frame)
        .map_err(|e| bad(format!("cannot be checked: {e}")))?;
    let mut frames = Vec::new();
    answers
        .scan(&sample, &mut frames)
        .map_err(|e| bad(format!("is refused by the response codec: {e}")))?;
    match frames.as_slice() {
        [f] if f.len as usize == sample.len() => {
            if correlation == Correlation::ById && f.id.map(|s| s.slice(&sample)) != Some(&id) {
                return Err(bad(
                    "does not carry the client's id ({id}) where the response codec finds ids"
                        .into(),
                ));
            }
        }
        _ => {
            return Err(bad(format!(
                "is not one whole answer of the response codec ({} frames)",
                frames.len()
            )))
        }
    }
    Ok(Some(ErrorReplySpec::Template(template)))
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = addr.parse() {
        return Ok(a);
    }
    addr.to_socket_addrs()
        .map_err(|e| format!("`{addr}` is not a host:port address: {e}"))?
        .next()
        .ok_or_else(|| format!("`{addr}` resolves to no address"))
}

fn validate_codec(
    prefix: &str,
    c: &RawCodec,
    base: &std::path::Path,
    direction: Direction,
) -> Result<CodecSpec, Invalid> {
    let key = |k: &str| format!("{prefix}.{k}");
    // Each kind's own keys; a key of another kind is an error naming it.
    let present = [
        ("length_offset", c.length_offset.is_some()),
        ("length_width", c.length_width.is_some()),
        ("length_adjust", c.length_adjust.is_some()),
        ("endian", c.endian.is_some()),
        ("key", c.key.is_some()),
        ("id", c.id.is_some()),
        ("delimiter", c.delimiter.is_some()),
        ("key_token", c.key_token.is_some()),
        ("id_token", c.id_token.is_some()),
        ("script", c.script.is_some()),
        ("time_limit", c.time_limit.is_some()),
        ("memory_limit", c.memory_limit.is_some()),
    ];
    let own: &[&str] = match c.kind.as_str() {
        "length_field" => &[
            "length_offset",
            "length_width",
            "length_adjust",
            "endian",
            "key",
            "id",
        ],
        "delimiter" => &["delimiter", "key_token", "id_token"],
        "lua" => &["script", "time_limit", "memory_limit"],
        _ => &[],
    };
    if let Some((n, _)) = present.iter().find(|(n, set)| *set && !own.contains(n)) {
        if !own.is_empty() || matches!(c.kind.as_str(), "resp" | "memcache") {
            return Err((key(n), format!("not a key of codec kind `{}`", c.kind)));
        }
    }
    match c.kind.as_str() {
        "length_field" => {
            let length_width = c
                .length_width
                .ok_or_else(|| (key("length_width"), "is required".to_string()))?;
            if ![1, 2, 4, 8].contains(&length_width) {
                return Err((
                    key("length_width"),
                    format!("must be 1, 2, 4 or 8, got {length_width}"),
                ));
            }
            let endian = match c.endian.as_deref() {
                None | Some("big") => Endian::Big,
                Some("little") => Endian::Little,
                Some(o) => {
                    return Err((
                        key("endian"),
                        format!("must be `big` or `little`, got `{o}`"),
                    ))
                }
            };
            let length_offset = c.length_offset.unwrap_or(0);
            if length_offset > MAX_FIELD_OFFSET {
                return Err((
                    key("length_offset"),
                    format!("must be at most {MAX_FIELD_OFFSET}, got {length_offset}"),
                ));
            }
            let field = |name: &str, f: Option<RawField>, max_width: u32| {
                f.map(|f| {
                    if f.offset > MAX_FIELD_OFFSET {
                        Err((
                            key(&format!("{name}.offset")),
                            format!("must be at most {MAX_FIELD_OFFSET}, got {}", f.offset),
                        ))
                    } else if f.width == 0 || f.width > max_width {
                        Err((
                            key(&format!("{name}.width")),
                            format!("must be 1 to {max_width} bytes, got {}", f.width),
                        ))
                    } else {
                        Ok(FieldSpec {
                            offset: f.offset,
                            width: f.width,
                        })
                    }
                })
                .transpose()
            };
            Ok(CodecSpec::LengthField(LengthFieldSpec {
                length_offset,
                length_width,
                endian,
                length_adjust: c.length_adjust.unwrap_or(0),
                key: field("key", c.key, 4096)?,
                id: field("id", c.id, 8)?,
            }))
        }
        "delimiter" => {
            let delimiter = c.delimiter.clone().unwrap_or_else(|| "\n".into());
            if delimiter.is_empty() {
                return Err((key("delimiter"), "must not be empty".into()));
            }
            Ok(CodecSpec::Delimiter(DelimiterSpec {
                delimiter: delimiter.into_bytes(),
                key_token: c.key_token,
                id_token: c.id_token,
            }))
        }
        "resp" | "memcache" => {
            let answers = direction == Direction::Answers;
            Ok(if c.kind == "resp" {
                CodecSpec::Resp { answers }
            } else {
                CodecSpec::Memcache { answers }
            })
        }
        "lua" => {
            let script = c
                .script
                .as_ref()
                .ok_or_else(|| (key("script"), "is required".to_string()))?;
            let path = base.join(script);
            let source = std::fs::read_to_string(&path).map_err(|e| {
                (
                    key("script"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let time_limit = nonzero_duration(
                &key("time_limit"),
                c.time_limit.as_ref(),
                DEFAULT_SCRIPT_TIME_LIMIT,
            )?;
            let memory_limit = size(&key("memory_limit"), c.memory_limit, 64 << 20, 1 << 20)?;
            let info = lua::inspect(&path, &source, time_limit, memory_limit)
                .map_err(|e| (key("script"), e))?;
            Ok(CodecSpec::Lua(lua::LuaSpec {
                path,
                source: source.into(),
                direction,
                time_limit,
                memory_limit,
                info,
            }))
        }
        other => Err((
            key("kind"),
            format!(
                "unknown codec `{other}`, expected length_field, delimiter, lua, resp or memcache"
            ),
        )),
    }
}

fn validate_cluster(i: usize, c: RawCluster) -> Result<ClusterConfig, Invalid> {
    let label = if c.name.is_empty() {
        format!("cluster[{i}]")
    } else {
        format!("cluster.{}", c.name)
    };
    let key = |k: &str| format!("{label}.{k}");
    if c.name.is_empty() {
        return Err((key("name"), "must not be empty".into()));
    }
    let policy = match c.policy.as_deref() {
        None => PolicyKind::LeastOutstanding,
        Some(p) => PolicyKind::parse(p).ok_or_else(|| {
            (
                key("policy"),
                format!(
                    "unknown policy `{p}`, expected one of {}",
                    PolicyKind::NAMES
                ),
            )
        })?,
    };
    if c.backends.is_empty() {
        return Err((key("backends"), "at least one backend is required".into()));
    }
    let mut backends = Vec::new();
    for (j, b) in c.backends.into_iter().enumerate() {
        let bkey = |k: &str| key(&format!("backends[{j}].{k}"));
        let address = resolve(&b.address).map_err(|p| (bkey("address"), p))?;
        let weight = b.weight.unwrap_or(1);
        if weight == 0 || weight > 10_000 {
            return Err((bkey("weight"), format!("must be 1 to 10000, got {weight}")));
        }
        let name = b.name.unwrap_or_else(|| b.address.clone());
        if backends.iter().any(|x: &BackendConfig| x.name == name) {
            return Err((bkey("name"), format!("backend `{name}` is listed twice")));
        }
        backends.push(BackendConfig {
            name,
            address,
            weight,
            drain: b.drain.unwrap_or(false),
        });
    }
    let persistence = match c.persistence {
        None => None,
        Some(p) => {
            match p.store.as_deref() {
                None | Some("memory") => {}
                Some(o) => {
                    return Err((
                        key("persistence.store"),
                        format!("unknown store `{o}`, expected `memory`"),
                    ))
                }
            }
            let ttl = duration(
                &key("persistence.ttl"),
                p.ttl.as_ref(),
                Duration::from_secs(600),
            )?;
            if ttl.is_zero() {
                return Err((key("persistence.ttl"), "must be longer than 0s".into()));
            }
            Some(Persistence {
                ttl,
                max_entries: size(&key("persistence.max_entries"), p.max_entries, 1_000_000, 1)?,
            })
        }
    };
    let raw_pool = c.pool.unwrap_or(super::file::RawPool {
        connections_per_backend: None,
        connect_timeout: None,
        max_queued_bytes: None,
        reconnect_backoff_min: None,
        reconnect_backoff_max: None,
    });
    let connections_per_backend = raw_pool.connections_per_backend.unwrap_or(2);
    if !(1..=64).contains(&connections_per_backend) {
        return Err((
            key("pool.connections_per_backend"),
            format!("must be 1 to 64, got {connections_per_backend}"),
        ));
    }
    let pool = PoolConfig {
        connections_per_backend,
        connect_timeout: duration(
            &key("pool.connect_timeout"),
            raw_pool.connect_timeout.as_ref(),
            Duration::from_secs(2),
        )?,
        max_queued_bytes: size(
            &key("pool.max_queued_bytes"),
            raw_pool.max_queued_bytes,
            8 << 20,
            1024,
        )?,
        reconnect_backoff_min: duration(
            &key("pool.reconnect_backoff_min"),
            raw_pool.reconnect_backoff_min.as_ref(),
            Duration::from_millis(100),
        )?,
        reconnect_backoff_max: duration(
            &key("pool.reconnect_backoff_max"),
            raw_pool.reconnect_backoff_max.as_ref(),
            Duration::from_secs(5),
        )?,
    };
    if pool.reconnect_backoff_max < pool.reconnect_backoff_min {
        return Err((
            key("pool.reconnect_backoff_max"),
            "must not be shorter than reconnect_backoff_min".into(),
        ));
    }
    let on_backend_down = match c.on_backend_down.as_deref() {
        // Key-hashing clusters are caches and shards whose data lives on one server: fail
        // rather than read and write another, as twemproxy does by default
        // (`auto_eject_hosts: false`).
        None if matches!(policy, PolicyKind::Ketama | PolicyKind::Maglev) => OnBackendDown::Fail,
        None | Some("repin") => OnBackendDown::Repin,
        Some("fail") => OnBackendDown::Fail,
        Some(o) => {
            return Err((
                key("on_backend_down"),
                format!("must be `repin` or `fail`, got `{o}`"),
            ))
        }
    };
    let hash_tag = match c.hash_tag.as_deref() {
        None => None,
        Some(t) => match t.as_bytes() {
            [open, close] if t.is_ascii() => Some([*open, *close]),
            _ => {
                return Err((
                    key("hash_tag"),
                    format!("must be two ASCII characters, such as \"{{}}\", got {t:?}"),
                ))
            }
        },
    };
    Ok(ClusterConfig {
        name: c.name,
        policy,
        backends,
        persistence,
        pool,
        request_timeout: nonzero_duration(
            &key("request_timeout"),
            c.request_timeout.as_ref(),
            Duration::from_secs(30),
        )?,
        retry_on_connect_failure: c.retry_on_connect_failure.unwrap_or(true),
        on_backend_down,
        health: c.health.map(|h| validate_health(&key, h)).transpose()?,
        outlier: c.outlier.map(|o| validate_outlier(&key, o)).transpose()?,
        backend_password: c.backend_password,
        backend_db: c.backend_db,
        hash_tag,
    })
}

fn hex(key: &str, s: &str) -> Result<Vec<u8>, Invalid> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if digits.len() % 2 != 0 {
        return Err((key.to_string(), "hex needs an even number of digits".into()));
    }
    digits
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(|| (key.to_string(), format!("`{s}` is not hex")))
        })
        .collect()
}

fn validate_health(key: &dyn Fn(&str) -> String, h: RawHealth) -> Result<HealthConfig, Invalid> {
    let one_of = |names: [(&str, bool); 3]| -> Result<(), Invalid> {
        let set: Vec<&str> = names.iter().filter(|(_, s)| *s).map(|(n, _)| *n).collect();
        if set.len() > 1 {
            return Err((
                key(&format!("health.{}", set[1])),
                format!("conflicts with health.{}", set[0]),
            ));
        }
        Ok(())
    };
    one_of([
        ("send", h.send.is_some()),
        ("send_hex", h.send_hex.is_some()),
        ("", false),
    ])?;
    one_of([
        ("expect", h.expect.is_some()),
        ("expect_hex", h.expect_hex.is_some()),
        ("expect_regex", h.expect_regex.is_some()),
    ])?;
    let send = match (h.send, h.send_hex) {
        (Some(t), _) => Some(t.into_bytes()),
        (_, Some(x)) => Some(hex(&key("health.send_hex"), &x)?),
        _ => None,
    };
    let expect = match (h.expect, h.expect_hex, h.expect_regex) {
        (Some(t), _, _) => Some(Expect::Prefix(t.into_bytes())),
        (_, Some(x), _) => Some(Expect::Prefix(hex(&key("health.expect_hex"), &x)?)),
        (_, _, Some(r)) => Some(Expect::Regex(regex_lite::Regex::new(&r).map_err(|e| {
            (
                key("health.expect_regex"),
                format!("not a valid regular expression: {e}"),
            )
        })?)),
        _ => None,
    };
    let count = |name: &str, v: Option<u32>, default: u32| -> Result<u32, Invalid> {
        match v.unwrap_or(default) {
            0 => Err((key(&format!("health.{name}")), "must be at least 1".into())),
            n => Ok(n),
        }
    };
    let interval = nonzero_duration(
        &key("health.interval"),
        h.interval.as_ref(),
        Duration::from_secs(2),
    )?;
    let timeout = nonzero_duration(
        &key("health.timeout"),
        h.timeout.as_ref(),
        Duration::from_secs(1),
    )?;
    Ok(HealthConfig {
        interval,
        timeout,
        rise: count("rise", h.rise, 2)?,
        fall: count("fall", h.fall, 3)?,
        send,
        expect,
    })
}

fn validate_outlier(key: &dyn Fn(&str) -> String, o: RawOutlier) -> Result<OutlierConfig, Invalid> {
    let consecutive_failures = o.consecutive_failures.unwrap_or(5);
    if consecutive_failures == 0 {
        return Err((
            key("outlier.consecutive_failures"),
            "must be at least 1".into(),
        ));
    }
    let max_ejected_percent = o.max_ejected_percent.unwrap_or(50);
    if max_ejected_percent > 100 {
        return Err((
            key("outlier.max_ejected_percent"),
            format!("must be 0 to 100, got {max_ejected_percent}"),
        ));
    }
    let base_ejection = nonzero_duration(
        &key("outlier.base_ejection"),
        o.base_ejection.as_ref(),
        Duration::from_secs(10),
    )?;
    let max_ejection = nonzero_duration(
        &key("outlier.max_ejection"),
        o.max_ejection.as_ref(),
        Duration::from_secs(300),
    )?;
    if max_ejection < base_ejection {
        return Err((
            key("outlier.max_ejection"),
            "must not be shorter than base_ejection".into(),
        ));
    }
    Ok(OutlierConfig {
        consecutive_failures,
        base_ejection,
        max_ejection,
        max_ejected_percent,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, ConfigError};
    use std::path::Path;

    const GOOD: &str = r#"
workers = 2
[[listener]]
name = "orders"
listen = "127.0.0.1:7000"
cluster = "orders"
correlation = "by_id"
[listener.codec]
kind = "length_field"
length_offset = 0
length_width = 4
length_adjust = 0
endian = "big"
key = { offset = 4, width = 8 }
id = { offset = 12, width = 4 }

[[cluster]]
name = "orders"
policy = "least_outstanding"
backends = [{ address = "127.0.0.1:9001" }, { address = "127.0.0.1:9002", weight = 2 }]
[cluster.persistence]
store = "memory"
ttl = "10m"
max_entries = 1000000
"#;

    fn err(text: &str) -> String {
        match parse(text, Path::new("sy.toml")) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("config was accepted"),
        }
    }

    #[test]
    fn issue_example_is_valid() {
        let c = parse(GOOD, Path::new("sy.toml")).unwrap();
        assert_eq!(c.workers, 2);
        assert_eq!(c.clusters[0].backends[1].weight, 2);
        assert_eq!(c.clusters[0].persistence.unwrap().ttl.as_secs(), 600);
    }

    #[test]
    fn errors_name_file_key_and_problem() {
        let e = err(&GOOD.replace("length_width = 4", "length_width = 3"));
        assert_eq!(
            e,
            "sy.toml: listener.orders.codec.length_width: must be 1, 2, 4 or 8, got 3"
        );
        let e = err(&GOOD.replace("policy = \"least_outstanding\"", "policy = \"fastest\""));
        assert!(
            e.starts_with("sy.toml: cluster.orders.policy: unknown policy `fastest`"),
            "{e}"
        );
        let e = err(&GOOD.replace("cluster = \"orders\"", "cluster = \"nope\""));
        assert!(
            e.contains("listener.orders.cluster: no [[cluster]] is named `nope`"),
            "{e}"
        );
        let e = err(&GOOD.replace(
            "policy = \"least_outstanding\"",
            "policy = \"ketama\"\nhash_tag = \"{\"",
        ));
        assert_eq!(
            e,
            "sy.toml: cluster.orders.hash_tag: must be two ASCII characters, such as \"{}\", got \"{\""
        );
        let e = err(&GOOD.replace("ttl = \"10m\"", "ttl = \"ten\""));
        assert!(
            e.contains("cluster.orders.persistence.ttl: `ten` is not a duration"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = err(&GOOD.replace("endian = \"big\"", "endian = \"big\"\nendianness = 1"));
        assert!(e.starts_with("sy.toml: "), "{e}");
        assert!(e.contains("unknown field `endianness`"), "{e}");
        let e = err(&GOOD.replace("endian = \"big\"", "endian = \"big\"\nkey_token = 1"));
        assert!(
            e.contains("listener.orders.codec.key_token: not a key of codec kind"),
            "{e}"
        );
    }

    #[test]
    fn by_id_needs_an_id() {
        let e = err(&GOOD.replace("id = { offset = 12, width = 4 }", ""));
        assert!(
            e.contains("listener.orders.correlation: by_id needs"),
            "{e}"
        );
    }

    #[test]
    fn read_error_names_file() {
        let e = crate::config::load(Path::new("/nonexistent/sy.toml")).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
        assert!(e
            .to_string()
            .starts_with("/nonexistent/sy.toml: cannot read"));
    }
}
