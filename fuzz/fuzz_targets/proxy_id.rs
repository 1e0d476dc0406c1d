//! Fuzzes the proxy's id rewriting (`by_id` correlation): `write_proxy_id` then
//! `parse_proxy_id` must give back the id, for binary ids of every width 1..=8 (ids reduced
//! modulo `id_space`, as the correlator hands them out) and for text ids; and
//! `parse_proxy_id` must never panic on whatever bytes a backend's answer carries.
//!
//! The proxy writes ids into requests and reads them back out of answers with these same
//! functions, whatever the codec, so this covers both directions.
//!
//! Input layout (bytes past the end read as 0): `sel` (width `1 + sel % 8`), 8 bytes of
//! raw id (little-endian), then arbitrary bytes handed to `parse_proxy_id`.

#![no_main]

mod common;

use bytes::BytesMut;
use common::Input;
use libfuzzer_sys::fuzz_target;
use switchyard_proto::{id_space, parse_proxy_id, write_proxy_id, IdFormat};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let width = 1 + usize::from(input.byte() % 8);
    let raw = input.u64();

    // Binary: the id fits the field's width exactly and reads back.
    let id = raw % id_space(IdFormat::Binary, width);
    let mut out = BytesMut::new();
    write_proxy_id(IdFormat::Binary, id, width, &mut out);
    assert_eq!(out.len(), width, "binary id {id} in width {width}: {out:?}");
    assert_eq!(
        parse_proxy_id(IdFormat::Binary, &out),
        Some(id),
        "binary id {id} in width {width} wrote {out:?}"
    );

    // Text: decimal digits that read back (the width does not apply to text ids).
    let id = raw % id_space(IdFormat::Text, width);
    let mut out = BytesMut::new();
    write_proxy_id(IdFormat::Text, id, width, &mut out);
    assert!(
        out.iter().all(u8::is_ascii_digit),
        "text id {id} wrote {out:?}"
    );
    assert_eq!(
        parse_proxy_id(IdFormat::Text, &out),
        Some(id),
        "text id {id} wrote {:?}",
        String::from_utf8_lossy(&out)
    );

    // Arbitrary answer bytes: never a panic; what parses is an id the proxy could write.
    let rest = input.rest();
    if let Some(v) = parse_proxy_id(IdFormat::Binary, rest) {
        let mut again = BytesMut::new();
        write_proxy_id(IdFormat::Binary, v, rest.len(), &mut again);
        assert_eq!(&again[..], rest, "binary {rest:?} parsed as {v}");
    }
    if let Some(v) = parse_proxy_id(IdFormat::Text, rest) {
        let mut again = BytesMut::new();
        write_proxy_id(IdFormat::Text, v, 0, &mut again);
        assert_eq!(
            parse_proxy_id(IdFormat::Text, &again),
            Some(v),
            "text {rest:?} parsed as {v}"
        );
    }
});
