//! The upstream side: each worker's pools of shared backend connections, and getting every
//! backend message back where it belongs. A request's bytes are copied once, from the
//! client's buffer into a backend connection's write buffer (with the proxy's id spliced in
//! for `by_id`); an answer's bytes are copied once, into its client's reply buffer. The
//! upstream side never owns a client connection: it holds the client's reply handle.

mod conn;
pub mod correlate;
mod pool;

pub use conn::{OrigId, Req, UpConn};
pub use pool::{Pool, PoolTarget};

#[cfg(test)]
mod long_life;
