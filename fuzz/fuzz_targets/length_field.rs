//! Fuzzes the `length_field` codec with a codec spec and `max_frame` taken from the input,
//! and the rest of the input as a byte stream cut into reads at points the input chooses.
//!
//! Requests and answers are both cut by `LengthField` (the framer of both directions,
//! driven by the same read → scan → cut loop on the client and backend sides), so this
//! target covers both directions.
//!
//! Input layout (bytes past the end read as 0):
//! - `flags`: bits 0-2 `length_offset` (0..8), bits 3-4 `length_width` (1, 2, 4, 8),
//!   bit 5 little-endian, bit 6 has a key field, bit 7 has an id field;
//! - `adjust`: `length_adjust` = `adjust % 33 - 16` (-16..=16);
//! - if a key: offset byte (`% 16`), width byte (`1 + b % 16`);
//! - if an id: offset byte (`% 16`), width byte (`1 + b % 8`);
//! - `max_frame`: u16 little-endian, `16 + v % 65521` (16..=65536);
//! - read sizes: a count byte (`% 16`), then one byte per read (`1 + b` bytes);
//! - the stream: everything left.
//!
//! Checked: every frame is non-empty, at most `max_frame` bytes, inside the buffer, has the
//! length its header announces and the spec's key / id spans, which lie inside it; and the
//! chunked scan, and a scan fed one byte at a time, find exactly the frames (and the error,
//! if any) of one scan of the stream.

#![no_main]

mod common;

use common::{assert_same, key_span, scan_bytewise, scan_chunked, scan_whole, Input};
use libfuzzer_sys::fuzz_target;
use switchyard_proto::length_field::{Endian, FieldSpec, LengthField, LengthFieldSpec};
use switchyard_proto::{Frame, Span};

fn field(input: &mut Input<'_>, max_width: u32) -> FieldSpec {
    let offset = u32::from(input.byte() % 16);
    let width = 1 + u32::from(input.byte()) % max_width;
    FieldSpec { offset, width }
}

fn span(f: Option<FieldSpec>) -> Option<Span> {
    f.map(|f| Span {
        offset: f.offset,
        len: f.width,
    })
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.byte();
    let spec = LengthFieldSpec {
        length_offset: u32::from(flags & 7),
        length_width: [1, 2, 4, 8][usize::from((flags >> 3) & 3)],
        endian: if flags & 0x20 == 0 {
            Endian::Big
        } else {
            Endian::Little
        },
        length_adjust: i64::from(input.byte() % 33) - 16,
        key: (flags & 0x40 != 0).then(|| field(&mut input, 16)),
        id: (flags & 0x80 != 0).then(|| field(&mut input, 8)),
    };
    let max_frame = input.max_frame();
    let sizes = input.read_sizes();
    let stream = input.rest();

    let check = |frame: &[u8], f: &Frame| {
        // The frame is exactly as long as its length field says.
        let lo = spec.length_offset as usize;
        let field = &frame[lo..lo + spec.length_width as usize];
        let value = match spec.endian {
            Endian::Big => field.iter().fold(0u128, |a, b| (a << 8) | u128::from(*b)),
            Endian::Little => field
                .iter()
                .rev()
                .fold(0u128, |a, b| (a << 8) | u128::from(*b)),
        };
        let announced = (lo + spec.length_width as usize) as i128
            + value as i128
            + i128::from(spec.length_adjust);
        assert_eq!(
            announced,
            frame.len() as i128,
            "{spec:?}: length field disagrees"
        );
        assert_eq!(key_span(f), span(spec.key), "{spec:?}: key span");
        assert_eq!(f.id, span(spec.id), "{spec:?}: id span");
    };

    let chunked = scan_chunked(
        &mut LengthField::new(spec.clone(), max_frame),
        stream,
        &sizes,
        max_frame,
        &check,
    );
    let whole = scan_whole(
        &mut LengthField::new(spec.clone(), max_frame),
        stream,
        max_frame,
        &check,
    );
    assert_same(&chunked, &whole, &sizes);
    let bytewise = scan_bytewise(
        &mut LengthField::new(spec.clone(), max_frame),
        stream,
        max_frame,
        &check,
    );
    assert_same(&bytewise, &whole, &[1]);
});
