//! Fuzzes the `memcache` protocol in both directions (the first input byte picks requests or
//! answers), with `max_frame` and read sizes taken from the input and the rest as the
//! byte stream; and, for requests, the proxy's plan for every frame found.
//!
//! Checked: frames are non-empty, within `max_frame` and the buffer, with their key inside
//! them; the chunked scan finds exactly the frames (and the error) of one scan of the
//! stream; a plan never panics, and every part of a split request has its key inside it.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    common::planned_protocol(data, Arc::new(switchyard_proto::memcache::MemcacheProtocol));
});
