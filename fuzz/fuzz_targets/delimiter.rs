//! Fuzzes the `delimiter` codec with a spec and `max_frame` taken from the input, and the
//! rest of the input as a byte stream cut into reads at points the input chooses (which
//! exercises the codec's resume-the-search state, e.g. a `\r\n` split across two reads).
//!
//! Requests and answers are both cut by `Delimiter` (the framer of both directions, driven
//! by the same read → scan → cut loop on the client and backend sides), so this target
//! covers both directions.
//!
//! Input layout (bytes past the end read as 0):
//! - `kind`: `kind % 4` = 0 → `"\n"`, 1 → `"\r\n"`, 2 or 3 → the next `1 + (kind >> 2) % 3`
//!   bytes of the input (never empty: `"\n"` if the input has ended);
//! - `key_token`, `id_token`: one byte each, `b % 5` = 4 → none, else token `b % 5` (0..4);
//! - `max_frame`: u16 little-endian, `16 + v % 65521` (16..=65536);
//! - read sizes: a count byte (`% 16`), then one byte per read (`1 + b` bytes);
//! - the stream: everything left.
//!
//! Checked: every frame is non-empty, at most `max_frame` bytes, inside the buffer, ends at
//! the first delimiter after its start, and its key / id spans are exactly the n-th
//! space/tab-separated token of its line (recomputed independently); and the chunked scan
//! finds exactly the frames (and the error, if any) of one scan of the stream.

#![no_main]

mod common;

use common::{assert_same, key_span, scan_bytewise, scan_chunked, scan_whole, Input};
use libfuzzer_sys::fuzz_target;
use switchyard_proto::delimiter::{Delimiter, DelimiterSpec};
use switchyard_proto::{Frame, Span};

fn token_index(b: u8) -> Option<usize> {
    match b % 5 {
        4 => None,
        n => Some(usize::from(n)),
    }
}

/// The `n`th maximal run of bytes other than space and tab in `line`.
fn nth_token(line: &[u8], n: usize) -> Option<Span> {
    let sep = |b: u8| b == b' ' || b == b'\t';
    let mut i = 0;
    let mut k = 0;
    while i < line.len() {
        if sep(line[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < line.len() && !sep(line[i]) {
            i += 1;
        }
        if k == n {
            return Some(Span {
                offset: start as u32,
                len: (i - start) as u32,
            });
        }
        k += 1;
    }
    None
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let kind = input.byte();
    let delimiter = match kind % 4 {
        0 => b"\n".to_vec(),
        1 => b"\r\n".to_vec(),
        _ => match input.bytes(1 + usize::from(kind >> 2) % 3) {
            [] => b"\n".to_vec(),
            d => d.to_vec(),
        },
    };
    let spec = DelimiterSpec {
        delimiter,
        key_token: token_index(input.byte()),
        id_token: token_index(input.byte()),
    };
    let max_frame = input.max_frame();
    let sizes = input.read_sizes();
    let stream = input.rest();

    let d = &spec.delimiter[..];
    let check = |frame: &[u8], f: &Frame| {
        // Ends at the first delimiter: the delimiter occurs nowhere earlier in the frame.
        assert!(
            frame.ends_with(d),
            "{spec:?}: frame {frame:?} lacks the delimiter"
        );
        let line = &frame[..frame.len() - d.len()];
        assert_eq!(
            frame.windows(d.len()).position(|w| w == d),
            Some(line.len()),
            "{spec:?}: frame {frame:?} runs past a delimiter"
        );
        assert_eq!(
            key_span(f),
            spec.key_token.and_then(|n| nth_token(line, n)),
            "{spec:?}: key of {frame:?}"
        );
        assert_eq!(
            f.id,
            spec.id_token.and_then(|n| nth_token(line, n)),
            "{spec:?}: id of {frame:?}"
        );
    };

    let chunked = scan_chunked(
        &mut Delimiter::new(spec.clone(), max_frame),
        stream,
        &sizes,
        max_frame,
        &check,
    );
    let whole = scan_whole(
        &mut Delimiter::new(spec.clone(), max_frame),
        stream,
        max_frame,
        &check,
    );
    assert_same(&chunked, &whole, &sizes);
    let bytewise = scan_bytewise(
        &mut Delimiter::new(spec.clone(), max_frame),
        stream,
        max_frame,
        &check,
    );
    assert_same(&bytewise, &whole, &[1]);
});
