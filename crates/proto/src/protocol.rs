//! The `Protocol` trait: everything the proxy asks of a wire format, in one place per
//! codec file. A `Protocol` is built once when the config is validated (see
//! [`crate::config`]) and shared by every worker; each connection gets its own [`Framer`]
//! from it.

use crate::error::CodecError;
use crate::frame::{Failure, FrameSet, IdFormat};
use bytes::Bytes;

/// Which way bytes flow on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client → backend.
    Requests,
    /// Backend → client.
    Answers,
}

/// How answers find their requests on shared backend connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Correlation {
    /// Answers come back in request order on each backend connection.
    InOrder,
    /// Requests and answers carry an id; the proxy rewrites it on the way to the backend.
    ById,
    /// Requests and answers carry an id unique by construction (SIP's Call-ID and CSeq):
    /// answers are matched by the id as the client sent it, within its session key, and
    /// nothing is rewritten. A request whose id is already awaiting an answer on the same
    /// backend connection is its client's error.
    ByIdAsSent,
    /// One-way messages; every backend message is a push.
    None,
}

/// What a protocol can say about its frames and requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Frames can carry a session key.
    pub keys: bool,
    /// Frames can carry a correlation id.
    pub ids: bool,
    /// How the proxy writes its own ids into frames of this protocol.
    pub id_format: IdFormat,
    /// Width in bytes of a binary id field (the proxy's id space).
    pub id_width: usize,
    /// Requests go through [`Protocol::plan`] (the proxy understands them: Redis,
    /// memcached); such protocols answer in order.
    pub interprets: bool,
    /// The correlation the protocol itself declares (a script's `correlation`), if any.
    pub correlation: Option<Correlation>,
}

impl Capabilities {
    /// What a protocol the proxy interprets (a cache protocol: Redis, memcached) has: keys
    /// in its commands, no ids (it answers in order), requests planned by the protocol.
    pub const INTERPRETED: Capabilities = Capabilities {
        keys: true,
        ids: false,
        id_format: IdFormat::Binary,
        id_width: 8,
        interprets: true,
        correlation: None,
    };
}

/// One connection's framer: called once per read with everything buffered on the
/// connection; appends every complete frame at the head of the buffer to `out` and stops
/// at the first incomplete one. It never does I/O and keeps no clock; "need more bytes" is
/// a frame set that stops early.
pub trait Framer {
    /// Appends the complete frames at the head of `buf` to `out` (not cleared). An error
    /// means the head of `buf` can never become a valid frame; the frames appended before
    /// it are good and come first.
    fn scan(&mut self, buf: &[u8], out: &mut FrameSet) -> Result<(), CodecError>;

    /// Why this framer takes no new connections for now (a protocol script suspended after
    /// failing repeatedly), and whether this is the first time that is asked during the
    /// suspension (so one line is logged for it).
    fn suspended(&self) -> Option<(String, bool)> {
        None
    }
}

/// How the answers of a split request become one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// RESP arrays of one element each (MGET per key) → one array, in key order.
    Array,
    /// RESP integers (DEL, EXISTS, UNLINK, TOUCH per key) → their sum.
    SumIntegers,
    /// RESP `+OK`s (MSET per pair) → `+OK`, or the first error.
    AllOk,
    /// memcache `VALUE … END` blocks (get/gets per key) → the values in key order, one `END`.
    MemcacheValues,
}

impl Merge {
    /// Whether the parts of a request split this way only read (MGET, memcached's get), so
    /// they may be re-sent; the integer sums (DEL, UNLINK, TOUCH, and EXISTS with them) and
    /// MSET may write.
    pub fn reads(self) -> bool {
        matches!(self, Merge::Array | Merge::MemcacheValues)
    }
}

/// One part of a split request: its bytes and where its key sits in them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The request to send.
    pub frame: Bytes,
    /// Offset and length of the key in `frame`.
    pub key: (usize, usize),
    /// Where the arguments after the command name start (RESP: the key's bulk-string
    /// header; memcache: the key).
    pub args_at: usize,
    /// How many arguments follow the command name.
    pub argc: usize,
}

impl Part {
    /// Where the part's key sits, as a frame key.
    pub fn key_span(&self) -> crate::frame::Key {
        crate::frame::Key::Bytes(crate::frame::Span {
            offset: self.key.0 as u32,
            len: self.key.1 as u32,
        })
    }

    /// The part's key bytes.
    pub fn key_bytes(&self) -> &[u8] {
        &self.frame[self.key.0..self.key.0 + self.key.1]
    }
}

/// What to do with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Forward the frame as it is (balanced by its key, if it has one).
    Forward,
    /// Forward it; it only reads (Redis `GET`, memcached `get`), so on a listener that
    /// retries (`retry_on_backend_close`) it may reach a backend twice. A plain
    /// [`Plan::Forward`] of an interpreted protocol is never re-sent (it may write); the
    /// requests of protocols the proxy does not interpret all may be, once the operator
    /// turned retries on.
    ForwardRead,
    /// Forward it, but no answer will come (memcache `noreply`).
    ForwardOneWay,
    /// Answer it from the proxy with these bytes.
    Reply(Bytes),
    /// Answer with these bytes, then close the connection (QUIT).
    ReplyAndClose(Bytes),
    /// Nothing to do and nothing to answer (Redis ignores an empty command line).
    Ignore,
    /// Send each part to the backend of its key; merge the answers.
    Split(Vec<Part>, Merge),
}

/// Per-connection protocol state a plan may depend on.
#[derive(Debug, Clone, Default)]
pub struct ConnState {
    /// Whether the client has presented the listener's password (or none is required).
    pub authenticated: bool,
}

/// What a new backend connection must be told before it carries clients' requests
/// (from the cluster's config).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendSetup {
    /// A password the backend requires.
    pub password: Option<String>,
    /// A database to select.
    pub db: Option<u32>,
}

/// One request of a backend connection's handshake, and the one answer that accepts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeStep {
    /// What it is, for logs ("AUTH").
    pub what: &'static str,
    /// The request's bytes.
    pub request: Bytes,
    /// The answer that means yes; any other answer fails the connection.
    pub accept: Bytes,
}

/// How a protocol answers a request over `max_frame_size`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oversize {
    /// The answer to send in the request's place.
    pub answer: Bytes,
    /// Bytes to skip to go on with the connection; `None`: close it once answered.
    pub skip: Option<u64>,
}

/// A wire format, as the proxy uses it. One implementation per codec file; built once per
/// listener when the config is validated; shared (`Send + Sync`) by every worker.
pub trait Protocol: Send + Sync + std::fmt::Debug {
    /// The codec kind's config name (`length_field`, `resp`, …).
    fn kind(&self) -> &'static str;

    /// What the protocol can say about its frames and requests.
    fn capabilities(&self) -> Capabilities;

    /// A framer for one connection's `direction`, refusing frames over `max_frame` bytes.
    /// Fails only for a script that cannot be loaded on this thread (it was loaded once
    /// when the config was validated, so this means e.g. memory exhaustion).
    fn framer(&self, direction: Direction, max_frame: usize)
        -> Result<Box<dyn Framer>, CodecError>;

    /// The only correlation that fits the protocol's answers, if one is forced on every
    /// listener of it: in order for the protocols the proxy interprets (Redis, memcached),
    /// by id for DNS (servers answer pipelined queries in any order). `None`: the listener
    /// chooses (a script's own `correlation` is its default).
    fn fixed_correlation(&self) -> Option<Correlation> {
        self.capabilities()
            .interprets
            .then_some(Correlation::InOrder)
    }

    /// What the proxy does with one request frame ([`Plan::Forward`] for protocols the
    /// proxy does not interpret).
    fn plan(&self, _frame: &[u8], _state: &mut ConnState) -> Plan {
        Plan::Forward
    }

    /// Joins parts of a split request bound for one backend into one request of the same
    /// command (twemproxy sends one fragment per server); the key is the first part's.
    fn join(&self, _merge: Merge, parts: &[&Part]) -> Part {
        parts[0].clone()
    }

    /// Cuts the answer to a joined request into the answers each part would have had.
    fn unjoin(&self, _merge: Merge, answer: &[u8], parts: &[&Part]) -> Vec<Bytes> {
        vec![Bytes::copy_from_slice(answer); parts.len()]
    }

    /// Merges the answers of a split request (one per part, in part order).
    fn merge(&self, _merge: Merge, answers: &[Bytes]) -> Bytes {
        answers.first().cloned().unwrap_or_default()
    }

    /// What every new backend connection must be told first.
    fn handshake(&self, _setup: &BackendSetup) -> Vec<HandshakeStep> {
        Vec::new()
    }

    /// The answer to a request that failed, so its client can stay connected; `Ok(None)`
    /// if the protocol has none, `Err` if making it failed (a script's error): either way
    /// the client is then closed.
    fn error_answer(&self, _failure: &Failure<'_>) -> Result<Option<Bytes>, String> {
        Ok(None)
    }

    /// The answer to a frame the codec marked [`crate::Flags::LOCAL`] (a keep-alive, an
    /// OPTIONS ping), made without a backend: `Ok(None)` sends nothing back; `Err` (a
    /// script's error) closes a client connection the frame came on, and on a backend
    /// connection is logged and the frame left unanswered.
    fn local_answer(&self, _frame: &[u8]) -> Result<Option<Bytes>, String> {
        Ok(None)
    }

    /// Whether [`Self::error_answer`] uses the failed request's key (so the key must be
    /// kept while the request is in flight).
    fn error_answer_needs_key(&self) -> bool {
        false
    }

    /// Whether [`Self::error_answer`] uses the client's id even where answers come in order
    /// (an operator's template with `{id}`, a script's `error_reply`), so the id is kept
    /// with every request in flight, not only under `by_id`.
    fn error_answer_needs_id(&self) -> bool {
        false
    }

    /// Whether [`Self::error_answer`] repeats part of the request (DNS: its question), so
    /// the request's bytes are kept while it is in flight ([`Failure::request`]).
    fn error_answer_needs_request(&self) -> bool {
        false
    }

    /// Whether a listener of this protocol re-sends the requests in flight on a backend
    /// connection that dies (`retry_on_backend_close`) unless its config says otherwise:
    /// `true` for protocols whose requests are safe to repeat (DNS queries, Redis reads).
    fn retries_by_default(&self) -> bool {
        false
    }

    /// How the protocol answers a request over `max_frame_size` (the framer's error
    /// `e`); `None`: the client is closed.
    fn oversize_answer(&self, _e: &CodecError) -> Option<Oversize> {
        None
    }
}
