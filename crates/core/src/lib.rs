//! # switchyard-core: the decisions
//!
//! Where each message goes and how its answer finds its way back, with no sockets and no
//! async runtime: session pins ([`session`]), backends' load, membership and the balancing
//! policies ([`balance`]), answers matched to requests on a shared connection
//! ([`correlate`]), health verdicts ([`health`]), the narrow interface the backend side
//! uses to reach a client ([`ticket`]), and typed faults ([`error`]). Everything here is
//! unit-tested and benchmarked without a network; the proxy crate does the I/O.
//!
//! Layering: depends on `switchyard-proto` only (for spans, correlation modes and codec
//! errors); the proxy builds on it.

pub mod balance;
pub mod clock;
pub mod correlate;
pub mod error;
pub mod health;
pub mod session;
pub mod settings;
pub mod ticket;

#[cfg(test)]
mod testing;

pub use balance::{Backend, Cluster, Reach, Route, Routed};
pub use error::{BackendFault, ClientFault, CloseReason, Fault};
pub use ticket::{ReplySink, SmallBytes, Ticket};
