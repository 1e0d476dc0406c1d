//! # switchyard-proto: the wire formats
//!
//! Everything Switchyard knows about a protocol, and nothing else: how bytes become frames
//! (and where a frame's session key and correlation id sit), what the proxy does with a
//! request of a protocol it understands (forward it, answer it, split it per key), how
//! split answers are joined back, what a new backend connection must be told first, and how
//! a failed request is answered. Pure: no I/O, no clock, no async runtime. A connection
//! hands in bytes and gets frames and decisions back.
//!
//! | module | owns |
//! |---|---|
//! | [`frame`] | frames, spans, keys; the proxy's own ids on shared connections |
//! | [`protocol`] | the [`Protocol`] trait (one per wire format) and the [`Framer`] a connection drives |
//! | [`config`] | the serde-tagged codec tables of the config file; a listener's [`Protocols`] |
//! | [`length_field`], [`delimiter`], [`resp`], [`memcache`], [`lua`], [`netstring`], [`dns`] | one protocol each |
//! | [`proxy_header`] | the PROXY protocol header (v1 and v2): read before a client connection's protocol starts, written before a backend connection's |
//! | [`template`] | operators' error answers for the generic codecs |
//! | [`error`] | why bytes were refused |
//!
//! Layering: this crate depends on no other Switchyard crate and on no async runtime or
//! socket; `switchyard-core` and the proxy build on it.

pub mod config;
pub mod delimiter;
pub mod dns;
pub mod error;
pub mod frame;
pub mod length_field;
pub mod lua;
mod measured;
pub mod memcache;
pub mod netstring;
pub mod protocol;
pub mod proxy_header;
pub mod resp;
pub mod template;

#[cfg(test)]
mod props;

pub use config::{build_listener, CodecConfig, ListenerOptions, Protocols};
pub use error::CodecError;
pub use frame::{
    id_space, parse_proxy_id, write_proxy_id, Failure, Flags, Frame, FrameSet, IdFormat, Key, Span,
};
pub use protocol::{
    BackendSetup, Capabilities, ConnState, Correlation, Direction, Framer, HandshakeStep, Merge,
    Oversize, Part, Plan, Protocol,
};
