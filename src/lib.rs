//! # Switchyard: a message-level load balancer for TCP protocols
//!
//! Ordinary TCP balancers choose a backend once per connection. Switchyard takes each
//! connection's byte stream apart and sends each *message* to its own backend:
//!
//! ```text
//! client conns ──► listener ──► downstream buffer ──► codec.scan() ──► frame set (len, id, key)…
//!                                                                          │
//!                  session table ◄── lookup(key) ── balancer ◄─────────────┘ walk the set
//!                  (pin key→backend)      │ miss: policy picks by load, pin it
//!                                         ▼
//!                        upstream pool (shared backend conns) ── forward exact bytes
//!                                         │
//! client conn ◄── correlate (in order / by id / push by key) ◄── codec.scan() ◄── answers
//! ```
//!
//! | module | owns |
//! |---|---|
//! | [`server`] | process lifecycle: binding, worker threads, signals, graceful shutdown |
//! | [`worker`] | one core: a single-threaded runtime with its listeners, clients and pools |
//! | [`listener`] | binding with `SO_REUSEPORT`, accepting, accept back-off |
//! | [`downstream`] | one client connection: bounded buffers, read → scan → route, answers |
//! | [`codec`] | bytes → frames, both directions; pure |
//! | [`session`] | key → backend pins with TTL and a size bound; pure, sharded |
//! | [`balancer`] | backends' live load and the policies that read it; pure |
//! | [`upstream`] | shared backend connections, correlation of answers, pushes |
//! | [`config`] | TOML schema and validation |
//! | [`demo`] | tiny real backends and load clients for `switchyard demo`, `bench` and tests |

pub mod balancer;
pub mod budget;
pub mod capture;
pub mod codec;
pub mod config;
pub mod demo;
pub mod downstream;
pub mod frames;
pub mod health;
pub mod listener;
pub mod server;
pub mod session;
pub mod throttle;
pub mod upstream;
pub mod worker;
