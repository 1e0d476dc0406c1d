//! The client side: one task per client connection. It reads into a bounded buffer, asks
//! the listener's protocol for the frame set, asks the core where each message goes, hands
//! it to a shared backend connection of this worker's pool, and writes answers back
//! through its reply handle ([`reply::Client`]), which is all the backend side sees of it.
//!
//! | file | owns |
//! |---|---|
//! | [`listener`] | what a listener's client tasks share on one worker; following reloads |
//! | [`conn`] | the task: reading, the framer, timeouts, the buffer budget, why it closed |
//! | [`route`] | one request at a time: plan, route (decided once), send, split |
//! | [`reply`] | the reply handle: order, split answers, output, requests to route again |

mod conn;
mod listener;
mod reply;
mod route;

pub(crate) use conn::serve;
pub(crate) use listener::{ListenerCtx, ListenerSlot};
#[cfg(test)]
pub(crate) use reply::Client;
