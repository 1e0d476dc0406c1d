//! Typed faults: who is at fault when a request fails or a connection closes, and why. The
//! log picks its level from them today; metrics will count them by kind. Their text is
//! what operators see in the log and, for failed requests, in the error answers clients
//! get.

use std::time::Duration;
use switchyard_proto::CodecError;

/// Something a client did wrong; it costs that client its connection, nobody else anything.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientFault {
    /// Bytes the listener's protocol refused.
    #[error("bad request from client: {0}")]
    BadRequest(CodecError),
    /// The client closed in the middle of a frame.
    #[error("client closed with {0} bytes of an incomplete frame")]
    ClosedMidFrame(usize),
    /// A partial frame took longer than `frame_timeout` (a slow-loris client).
    #[error("a partial frame of {bytes} bytes was not completed within frame_timeout {timeout:?}")]
    SlowFrame {
        /// Bytes of it received.
        bytes: usize,
        /// The limit.
        timeout: Duration,
    },
    /// The client does not read its answers.
    #[error(
        "client is not reading its answers: {held} bytes waiting exceed max_reply_buffer {max}"
    )]
    NotReading {
        /// Answer bytes waiting.
        held: usize,
        /// The limit.
        max: usize,
    },
    /// The process's client buffers are full and this client holds the largest partial
    /// frame.
    #[error("the process's client buffers reached buffer_budget ({held} of {limit} bytes): closing the client holding the largest partial frame ({partial} bytes)")]
    OverBudget {
        /// Bytes held by all clients.
        held: usize,
        /// The budget.
        limit: usize,
        /// This client's partial frame.
        partial: usize,
    },
    /// Reading from or writing to the client's socket failed.
    #[error("{0}")]
    Io(String),
    /// The request was on a shared backend connection that died, and, re-sent alone on a
    /// fresh connection, made that one die too: the backend closes on it (a poison
    /// request). It is never sent again.
    #[error("request closed backend {backend}'s connection again when sent alone, so it is taken to be what closed the shared one: {reason}")]
    Poison {
        /// The backend's name.
        backend: String,
        /// How the probation connection ended.
        reason: String,
    },
    /// Under `by_id_as_sent`, the request's id is already awaiting an answer on the
    /// backend connection its session uses (ids must be unique by construction).
    #[error("the request's id is already awaiting an answer (by_id_as_sent ids must be unique)")]
    DuplicateId,
}

/// Something a backend (or the lack of one) did to a request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackendFault {
    /// The backend connection was lost with the request on it.
    #[error("backend {backend} failed: {reason}")]
    Lost {
        /// The backend's name.
        backend: String,
        /// Why the connection was lost.
        reason: String,
    },
    /// No answer came within `request_timeout`.
    #[error("request to backend {backend} timed out after {after:?}")]
    TimedOut {
        /// The backend's name.
        backend: String,
        /// The timeout.
        after: Duration,
    },
    /// No backend of the cluster can take messages.
    #[error("no backend of cluster {0} can take messages")]
    NoBackend(String),
    /// The key's backend is unusable and `on_backend_down = "fail"`.
    #[error("the key's backend {0} is unavailable and on_backend_down = \"fail\"")]
    KeyDown(String),
    /// Every proxy id of the backend connection is taken.
    #[error("no free proxy id on the backend connection")]
    NoFreeId,
    /// The message answers a backend's request, but its session has no live pin, so no
    /// backend is waiting for it.
    #[error("an answer to a backend's request whose session has no live pin")]
    NoSession,
}

/// Who is at fault, and what happened.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Fault {
    /// The client's.
    #[error("{0}")]
    Client(#[from] ClientFault),
    /// A backend's.
    #[error("{0}")]
    Backend(#[from] BackendFault),
    /// A protocol script's (an error in `error_reply`, say).
    #[error("{0}")]
    Script(String),
    /// The configuration's (a listener whose protocol cannot be loaded on a worker).
    #[error("{0}")]
    Config(String),
    /// The proxy's own.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Fault {
    /// How loud the log is about it: the proxy's own faults are errors; what clients and
    /// backends do is a warning.
    pub fn is_internal(&self) -> bool {
        matches!(self, Fault::Internal(_))
    }

    /// Who is at fault, as the log's `fault` field names it (and metrics will).
    pub fn party(&self) -> &'static str {
        match self {
            Fault::Client(_) => "client",
            Fault::Backend(_) => "backend",
            Fault::Script(_) => "script",
            Fault::Config(_) => "config",
            Fault::Internal(_) => "internal",
        }
    }
}

/// Why a client connection ended.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CloseReason {
    /// The client closed it.
    #[error("client closed")]
    ClientClosed,
    /// Nothing in flight and nothing received for `client_idle_timeout`.
    #[error("client_idle_timeout")]
    Idle,
    /// The process is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// The client asked to end (QUIT).
    #[error("client quit")]
    Quit,
    /// The listener's protocol script is suspended: new connections are refused.
    #[error("refused: the listener's protocol script is suspended")]
    ScriptSuspended,
    /// A fault.
    #[error("{0}")]
    Fault(#[from] Fault),
}

impl CloseReason {
    /// Whether it is worth a warning (a fault) rather than a debug line (an orderly end).
    pub fn is_fault(&self) -> bool {
        matches!(self, CloseReason::Fault(_))
    }
}

impl From<ClientFault> for CloseReason {
    fn from(f: ClientFault) -> Self {
        CloseReason::Fault(f.into())
    }
}

impl From<BackendFault> for CloseReason {
    fn from(f: BackendFault) -> Self {
        CloseReason::Fault(f.into())
    }
}
