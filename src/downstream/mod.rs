//! The downstream side: one task per client connection. It reads into a bounded buffer,
//! asks the listener's codec for the frame set, routes each frame (session pin or policy)
//! to a shared backend connection, and writes answers back through its reply handle
//! ([`Client`]). It never chooses backends itself beyond asking the balancer, and never
//! parses bytes itself beyond asking the codec.

mod conn;
mod reply;

pub use conn::{serve, ListenerCtx, ListenerSlot};
pub use reply::{Client, Requeued};
