//! # Switchyard: a message-level load balancer for TCP protocols
//!
//! Ordinary TCP balancers choose a backend once per connection. Switchyard takes each
//! connection's byte stream apart and sends each *message* to its own backend. Three
//! crates, dependencies running one way:
//!
//! ```text
//! switchyard (this crate: sockets, tasks, config, the binary)
//!     └── switchyard-core (where messages go: pins, load, policies, correlation; no I/O)
//!             └── switchyard-proto (wire formats: bytes → frames, plans, error answers; pure)
//! ```
//!
//! One message's path through this crate:
//!
//! ```text
//! listener ─accept─► client::conn (read, framer.scan) ─► client::route ─► core: Cluster::route
//!                                                              │  (pin / place, a Route)
//!                                                              ▼
//!                    backend::pool ─► backend::conn.send (bytes copied once) ─► backend::task
//!                                                                                   │ socket
//! client::reply (ReplySink) ◄── backend::inflight ◄── core: correlate ◄── framer.scan ◄┘
//! ```
//!
//! Modules, lowest layer first (a module imports only from layers below it; `tests/layers.rs`
//! checks it):
//!
//! | module | owns |
//! |---|---|
//! | `budget`, `throttle`, [`capture`] | the process-wide buffer budget; throttled logs; pcap/raw capture files |
//! | [`config`] | the TOML schema and validation, naming file, key and problem |
//! | `registry` | a worker's clients as the backend side reaches them; what workers share |
//! | `backend` | shared backend connections: pool, send, correlate, reconnect |
//! | `client` | one task per client connection: read, frame, route, reply |
//! | `listener`, `health` | accepting with `SO_REUSEPORT`; active health probes |
//! | `worker` | one core's runtime: applies config generations to listeners and pools |
//! | [`server`] | the process: binding, workers, control thread, reload, signals |
//! | [`frames`], [`demo`] | `switchyard frames`; demo backends, load clients, bench, soak |

// Items are crate-visible unless the binary, tests, benches or fuzz targets need them.
#![warn(unreachable_pub)]

mod access_log;
mod budget;
pub mod capture;
pub mod config;
pub mod demo;
pub mod frames;
mod metrics;
pub mod server;
mod throttle;
pub mod top;
mod transport;

mod admin;
mod backend;
mod client;
mod health;
mod listener;
mod registry;
mod worker;

#[cfg(test)]
mod long_life;
