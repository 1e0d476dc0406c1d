//! Integration tests: the real binary, real TCP backends and clients on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

mod admin;
mod bad_input;
mod browser;
mod chaos;
mod cli;
mod correlation;
mod delimiter;
mod dns;
mod error_replies;
mod failover;
mod frames;
mod health;
mod hygiene;
mod ketama;
mod memcached;
mod netstring;
mod placement;
mod poison;
mod proxy_protocol;
mod push;
mod redis;
mod reload;
mod scripts;
mod servers;
mod sip;
mod spread;
mod timeouts;
mod tls;
mod top;
