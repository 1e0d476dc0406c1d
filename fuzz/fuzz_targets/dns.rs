//! Fuzzes the `dns` codec (DNS over TCP) in both directions, and `length_field`'s request
//! guard (`min_frame_size`, `must`) on the same stream, with settings taken from the input
//! and the rest of the input as a byte stream cut into reads at points the input chooses.
//!
//! Input layout (bytes past the end read as 0):
//! - `flags`: bit 0 answers (else queries), bit 1 the session key is the question name;
//! - `max_frame`: u16 little-endian, `16 + v % 65521` (16..=65536);
//! - the guard: `min_frame_size` byte (`0` none), `must` offset byte (`% 16`), mask byte
//!   (`0` none), value byte (masked);
//! - read sizes: a count byte (`% 16`), then one byte per read (`1 + b` bytes);
//! - the stream: everything left.
//!
//! Checked: every frame is a 2-byte length and that many bytes, at most `max_frame`, with
//! the id right after the length; every query the codec passes is a standard query with one
//! question (QR clear, opcode 0, QDCOUNT 1: recomputed here); its SERVFAIL answer is one
//! answer frame carrying the client's id; and the chunked scan, and a scan fed one byte at a
//! time, find exactly the frames (and the error, if any) of one scan of the stream. The same
//! for the guarded `length_field`, whose passed requests are at least `min_frame_size` long
//! and pass the byte check.

#![no_main]

mod common;

use common::{assert_read_independent, Input};
use libfuzzer_sys::fuzz_target;
use switchyard_proto::dns::DnsProtocol;
use switchyard_proto::length_field::{Endian, FieldSpec, Guard, ByteCheck, LengthFieldProtocol, LengthFieldSpec};
use switchyard_proto::{Direction, Failure, Frame, FrameSet, Protocol, Span};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.byte();
    let answers = flags & 1 == 1;
    let direction = if answers { Direction::Answers } else { Direction::Requests };
    let max_frame = input.max_frame();
    let min_frame = u64::from(input.byte());
    let (offset, mask, value) = (u32::from(input.byte() % 16), input.byte(), input.byte());
    let sizes = input.read_sizes();
    let stream = input.rest();

    let key = if flags & 2 == 2 { "key = \"qname\"" } else { "" };
    let config: switchyard_proto::dns::Config = toml::from_str(key).expect("parses");
    let dns: DnsProtocol = config.protocol().expect("valid");
    let check = |frame: &[u8], f: &Frame| {
        let len = usize::from(u16::from_be_bytes([frame[0], frame[1]]));
        assert_eq!(frame.len(), 2 + len, "the length field disagrees");
        assert!(len >= 12, "a message shorter than its header");
        assert_eq!(f.id, Some(Span { offset: 2, len: 2 }));
        if answers {
            return;
        }
        assert_eq!(frame[4] & 0x80, 0, "QR set");
        assert_eq!((frame[4] >> 3) & 0x0f, 0, "not a QUERY");
        assert_eq!(&frame[6..8], &[0, 1], "not one question");
        let id = [frame[3], frame[2]];
        let answer = dns
            .error_answer(&Failure { id: Some(&id), key: None, reason: "x", request: Some(frame) })
            .expect("answers")
            .expect("an answer");
        let mut framer = dns.framer(Direction::Answers, 1 << 20).expect("builds");
        let mut frames = FrameSet::new();
        framer.scan(&answer, &mut frames).expect("SERVFAIL frames");
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].len as usize, answer.len());
        assert_eq!(&answer[2..4], &id);
        assert_eq!(answer[5] & 0x0f, 2, "SERVFAIL");
    };
    let framer = || dns.framer(direction, max_frame).expect("builds");
    assert_read_independent(&framer, stream, &sizes, max_frame, &check);

    // length_field with the request guard, as a DNS-over-TCP listener without the dns codec.
    let guard = Guard {
        min_frame,
        must: if mask == 0 {
            Vec::new()
        } else {
            vec![ByteCheck { offset, mask, value: value & mask }]
        },
    };
    let spec = LengthFieldSpec {
        length_offset: 0,
        length_width: 2,
        endian: Endian::Big,
        length_adjust: 0,
        key: None,
        id: Some(FieldSpec { offset: 2, width: 2 }),
    };
    let lf = LengthFieldProtocol::guarded(spec, guard.clone());
    let check = |frame: &[u8], _f: &Frame| {
        if answers {
            return;
        }
        assert!(frame.len() as u64 >= guard.min_frame, "shorter than min_frame_size");
        for c in &guard.must {
            assert_eq!(frame[c.offset as usize] & c.mask, c.value, "failed its must check");
        }
    };
    let framer = || lf.framer(direction, max_frame).expect("builds");
    assert_read_independent(&framer, stream, &sizes, max_frame, &check);
});
