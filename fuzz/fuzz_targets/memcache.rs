//! Fuzzes the `memcache` codec in both directions (the first input byte picks requests or
//! answers), with `max_frame` and read sizes taken from the input and the rest as the
//! byte stream; and, for requests, the proxy's plan for every frame found.
//!
//! Checked: frames are non-empty, within `max_frame` and the buffer, with their key inside
//! them; the chunked scan finds exactly the frames (and the error) of one scan of the
//! stream; a plan never panics, and every part of a split request has its key inside it.

#![no_main]

mod common;

use common::{assert_same, scan_chunked, scan_whole, Input};
use libfuzzer_sys::fuzz_target;
use switchyard::codec::plan::{ConnState, Plan};
use switchyard::codec::{CodecSpec, Frame};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let answers = input.byte() & 1 == 1;
    let max_frame = input.max_frame();
    let sizes = input.read_sizes();
    let stream = input.rest();
    let spec = CodecSpec::Memcache { answers };
    let check = |frame: &[u8], _f: &Frame| {
        if answers {
            return;
        }
        let mut state = ConnState::default();
        if let Plan::Split(parts, _) = spec.plan(frame, &mut state, Some(b"pw")) {
            for p in parts {
                assert!(p.key.0 + p.key.1 <= p.frame.len(), "part key outside its frame");
            }
        }
    };
    let mut chunked = spec.build(max_frame).expect("builds");
    let got = scan_chunked(&mut *chunked, stream, &sizes, max_frame, &check);
    let mut whole = spec.build(max_frame).expect("builds");
    let want = scan_whole(&mut *whole, stream, max_frame, &check);
    assert_same(&got, &want, &sizes);
});
