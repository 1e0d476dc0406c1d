//! The backend side: each worker's pools of shared backend connections, and getting every
//! backend message back where it belongs. A request's bytes are copied once, from the
//! client's buffer into a backend connection's write buffer (with the proxy's id spliced
//! in for `by_id`); an answer's bytes are copied once, into its client's reply buffer. The
//! backend side knows a client only as a `ReplySink` and each request by the `Ticket` the
//! client side made (`switchyard-core`'s ticket module); it never imports the client side.
//!
//! | file | owns |
//! |---|---|
//! | [`pool`] | a worker's connections to one cluster, for one listener; reconciled on reload |
//! | [`conn`] | one shared connection's books: write buffer, correlator, one-way messages |
//! | [`inflight`] | what is kept per message in flight; handing back and failing it |
//! | [`task`] | connect, reconnect with back-off, settle what a lost connection had in flight |
//! | [`pump`] | one connected connection: answers (final, provisional), pushes, local answers, writes, timeouts |
//! | [`probation`] | poison isolation: requests of a dead connection re-sent one at a time |
//! | [`handshake`] | TCP connect and the protocol's handshake |
//! | [`upstream`] | a cluster as the backend side connects to it |

mod conn;
mod handshake;
mod inflight;
mod pool;
mod probation;
mod pump;
mod task;
mod upstream;

pub(crate) use conn::{BackendConn, MsgId, Sending};
pub(crate) use pool::{Pool, PoolTarget};
pub(crate) use upstream::Upstream;
