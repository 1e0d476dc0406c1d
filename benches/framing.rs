//! The framing call: the native `length_field` codec against the same protocol framed by
//! `examples/scripts/binary64.lua`, over 16 KiB reads of 64 B and 512 B messages (one call
//! per read, as a connection makes). Per-message time = reported time / messages per read.
//! Then one 16 KiB read of each example script's own protocol: what a framing call needs,
//! against which the scripts' default time limit is set.
//!
//! `cargo bench --bench framing`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::path::Path;
use std::time::Duration;
use switchyard_proto::length_field::LengthField;
use switchyard_proto::lua::{inspect, LuaCodec, LuaSpec};
use switchyard_proto::{Direction, Framer};

/// A 16 KiB read: whole messages of `size` bytes plus the start of one more.
fn read_of(size: usize) -> (Vec<u8>, usize) {
    let mut buf = Vec::new();
    let mut n = 0;
    while buf.len() + size <= 16 << 10 {
        switchyard::demo::proto::write_request(
            &mut buf,
            n as u64 * 7919,
            n as u32,
            &vec![7u8; size - 16],
        );
        n += 1;
    }
    let mut partial = Vec::new();
    switchyard::demo::proto::write_request(&mut partial, 1, 1, &vec![7u8; size - 16]);
    buf.extend_from_slice(&partial[..size / 2]);
    (buf, n)
}

fn native() -> LengthField {
    LengthField::new(switchyard::demo::proto::codec_spec(true), 1 << 20)
}

fn lua() -> LuaCodec {
    script("binary64.lua")
}

fn script(name: &str) -> LuaCodec {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/scripts")
        .join(name);
    let source = std::fs::read_to_string(&path).expect("example script");
    let (time_limit, memory_limit) = (Duration::from_millis(10), 64 << 20);
    let info = inspect(&path, &source, time_limit, memory_limit).expect("script loads");
    let spec = LuaSpec {
        path,
        source: source.into(),
        time_limit,
        memory_limit,
        info,
    };
    LuaCodec::new(&spec, Direction::Requests, 1 << 20).expect("codec")
}

fn framing(c: &mut Criterion) {
    let mut group = c.benchmark_group("framing_16k_read");
    for size in [64usize, 512] {
        let (buf, n) = read_of(size);
        group.throughput(Throughput::Elements(n as u64));
        let mut frames = Vec::with_capacity(n);
        let mut codec = native();
        group.bench_with_input(BenchmarkId::new("native", size), &buf, |b, buf| {
            b.iter(|| {
                frames.clear();
                codec.scan(buf, &mut frames).expect("valid");
                assert_eq!(frames.len(), n);
            })
        });
        let mut codec = lua();
        group.bench_with_input(BenchmarkId::new("lua", size), &buf, |b, buf| {
            b.iter(|| {
                frames.clear();
                codec.scan(buf, &mut frames).expect("valid");
                assert_eq!(frames.len(), n);
            })
        });
    }
    group.finish();
}

/// About 16 KiB of `message` repeated.
fn repeated(message: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    while v.len() + message.len() <= 16 << 10 {
        v.extend_from_slice(message);
    }
    v
}

/// One 16 KiB read of each example script's protocol.
fn example_reads(c: &mut Criterion) {
    let mut group = c.benchmark_group("script_16k_read");
    // tlv: one message of small TLVs (key, id, then empty ones) filling the read.
    let mut body = vec![1u8, 0, 1, b'k', 2, 0, 4, 0, 0, 0, 1];
    while body.len() < (16 << 10) - 7 {
        body.extend_from_slice(&[9, 0, 0]);
    }
    let mut tlv = (body.len() as u32).to_be_bytes().to_vec();
    tlv.extend_from_slice(&body);
    let reads = [
        ("binary64.lua", read_of(64).0),
        ("tlv.lua", tlv),
        (
            "tutorial.lua",
            repeated(&[0, 10, 1, b'k', b'e', b'y', b'|', 0, 0, 0, 1, b'x']),
        ),
        (
            "sip.lua",
            repeated(b"INVITE sip:bob@example.com SIP/2.0\r\nCall-ID: a84b4c76e66710\r\nCSeq: 314159 INVITE\r\nContent-Length: 5\r\n\r\nhello"),
        ),
    ];
    for (name, buf) in reads {
        let mut codec = script(name);
        let mut frames = Vec::new();
        group.bench_with_input(BenchmarkId::new("call", name), &buf, |b, buf| {
            b.iter(|| {
                frames.clear();
                codec.scan(buf, &mut frames).expect("valid");
                assert!(!frames.is_empty());
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    targets = framing, example_reads
}
criterion_main!(benches);
