//! Fuzzes the PROXY protocol header parser (`switchyard_proto::proxy_header`), which reads
//! whatever a client, or whoever pretends to be an L4 spreader, sends first on a listener
//! with `proxy_protocol = true`.
//!
//! Two inputs from each fuzz case:
//! - the raw bytes, parsed as they are;
//! - a header `encode` wrote (v1 or v2, IPv4 or IPv6 addresses taken from the input),
//!   followed by the rest of the input as the connection's first bytes.
//!
//! Checked, for both: `parse` never panics; a header found is at most `MAX_HEADER` and at
//! most the buffer; every shorter prefix of it is "need more" (`Ok(None)`), never an error
//! nor another header (the listener peeks at a growing buffer and acts on the first
//! answer that is not "need more"); the bytes after it change nothing. For the encoded
//! one: it parses back to exactly its addresses and length.

#![no_main]

mod common;

use common::Input;
use libfuzzer_sys::fuzz_target;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use switchyard_proto::proxy_header::{encode, parse, ProxyHeader, ProxyVersion, MAX_HEADER};

fn check(buf: &[u8]) -> Option<ProxyHeader> {
    let h = match parse(buf) {
        Ok(Some(h)) => h,
        Ok(None) => {
            assert!(buf.len() < MAX_HEADER, "need more past MAX_HEADER: {buf:?}");
            return None;
        }
        Err(_) => return None,
    };
    assert!(h.len > 0 && h.len <= buf.len() && h.len <= MAX_HEADER, "{h:?} in {buf:?}");
    // Every prefix is incomplete: all of them for short headers, a sample of long ones.
    let step = if h.len <= 512 { 1 } else { 37 };
    for k in (0..h.len).step_by(step) {
        assert_eq!(
            parse(&buf[..k]),
            Ok(None),
            "the prefix of {k} bytes of a {}-byte header",
            h.len
        );
    }
    // Nothing after the header matters.
    assert_eq!(parse(&buf[..h.len]), Ok(Some(h)), "the header alone");
    Some(h)
}

fuzz_target!(|data: &[u8]| {
    check(data);

    let mut input = Input::new(data);
    let sel = input.byte();
    let version = if sel & 1 == 0 { ProxyVersion::V1 } else { ProxyVersion::V2 };
    let (source, destination) = if sel & 2 == 0 {
        let ip = |v: u64| Ipv4Addr::from(v as u32);
        let (a, b) = (input.u64(), input.u64());
        (
            SocketAddr::from((ip(a), (a >> 32) as u16)),
            SocketAddr::from((ip(b), (b >> 32) as u16)),
        )
    } else {
        let ip = |hi: u64, lo: u64| Ipv6Addr::from((u128::from(hi) << 64) | u128::from(lo));
        let (a, b, c, d) = (input.u64(), input.u64(), input.u64(), input.u64());
        (
            SocketAddr::from((ip(a, b), a as u16)),
            SocketAddr::from((ip(c, d), c as u16)),
        )
    };
    let header = encode(version, source, destination);
    let mut buf = header.clone();
    buf.extend_from_slice(input.rest());
    let h = check(&buf).unwrap_or_else(|| panic!("{version:?} header {header:?} not parsed"));
    assert_eq!(h.len, header.len(), "{version:?} {source} -> {destination}");
    assert_eq!(h.source, Some(source), "{version:?} source");
    assert_eq!(h.destination, Some(destination), "{version:?} destination");
});
