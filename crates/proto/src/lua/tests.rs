//! The script engine against the native codec, and its safety limits.

use super::*;
use crate::length_field::LengthField;
use crate::props::frames_by_reads;
use proptest::prelude::*;
use std::path::Path;

fn spec_for(path: &Path, source: &str, time_limit: Duration, memory_limit: usize) -> LuaSpec {
    let info = inspect(path, source, time_limit, memory_limit).unwrap();
    LuaSpec {
        path: path.to_path_buf(),
        source: source.into(),
        time_limit,
        memory_limit,
        info,
    }
}

fn example(name: &str) -> LuaSpec {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/scripts")
        .join(name);
    let source = std::fs::read_to_string(&path).unwrap();
    spec_for(&path, &source, Duration::from_millis(50), 64 << 20)
}

fn script(source: &str) -> LuaCodec {
    LuaCodec::new(
        &spec_for(
            Path::new("t.lua"),
            source,
            Duration::from_millis(30),
            4 << 20,
        ),
        Direction::Requests,
        1 << 20,
    )
    .unwrap()
}

fn native() -> LengthField {
    LengthField::new(crate::length_field::demo_spec(), 1 << 20)
}

fn demo_stream(bodies: &[Vec<u8>]) -> Vec<u8> {
    let mut s = Vec::new();
    for (i, b) in bodies.iter().enumerate() {
        // The demo protocol: u32 length | u64 key | u32 id | payload.
        s.extend_from_slice(&((12 + b.len()) as u32).to_be_bytes());
        s.extend_from_slice(&(i as u64 * 7919).to_be_bytes());
        s.extend_from_slice(&(i as u32).to_be_bytes());
        s.extend_from_slice(b);
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn lua_example_d_equals_the_native_codec_for_any_split(
        bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..40),
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
    ) {
        let stream = demo_stream(&bodies);
        let mut lua = LuaCodec::new(&example("binary64.lua"), Direction::Requests, 1 << 20).unwrap();
        let want = frames_by_reads(&mut native(), &stream, &[]);
        prop_assert_eq!(frames_by_reads(&mut lua, &stream, &cuts), want.clone());
        prop_assert_eq!(want.len(), bodies.len());
    }
}

#[test]
fn more_frames_than_one_call_reports_are_all_found() {
    let bodies: Vec<Vec<u8>> = (0..10_000).map(|_| Vec::new()).collect();
    let stream = demo_stream(&bodies);
    let mut lua = LuaCodec::new(&example("binary64.lua"), Direction::Requests, 1 << 20).unwrap();
    let mut frames = Vec::new();
    lua.scan(&stream, &mut frames).unwrap();
    assert_eq!(frames.len(), 10_000);
}

#[test]
fn the_sandbox_has_no_io_os_require_or_debug() {
    for name in ["io", "os", "require", "debug", "loadstring", "getfenv"] {
        let src = format!("return {{ scan = function(d, l, o) return 0 end, probe = {name} }}");
        let check = format!("if {name} ~= nil then error('{name} is reachable') end\n{src}");
        inspect(
            Path::new("t.lua"),
            &check,
            Duration::from_millis(50),
            4 << 20,
        )
        .unwrap();
    }
    // Library tables are read-only.
    let e = inspect(
        Path::new("t.lua"),
        "string.len = nil\nreturn {}",
        Duration::from_millis(50),
        4 << 20,
    )
    .unwrap_err();
    assert!(e.contains("t.lua:1"), "{e}");
}

#[test]
fn syntax_and_runtime_errors_name_file_and_line() {
    let e = inspect(
        Path::new("proto.lua"),
        "return {\n scan = function(\n",
        Duration::from_millis(50),
        4 << 20,
    )
    .unwrap_err();
    assert!(e.contains("proto.lua:"), "{e}");
    let e = inspect(
        Path::new("proto.lua"),
        "local x = nil\nreturn x.y",
        Duration::from_millis(50),
        4 << 20,
    )
    .unwrap_err();
    assert!(e.contains("proto.lua:2"), "{e}");
    let e = inspect(
        Path::new("proto.lua"),
        "return { scan = 5 }",
        Duration::from_millis(50),
        4 << 20,
    )
    .unwrap_err();
    assert!(e.contains("`scan` function"), "{e}");
}

const MISBEHAVING: &str = r#"
return {
  scan = function(data, len, out)
    local op = buffer.readstring(data, 0, math.min(len, 4))
    if op == "LOOP" then
      while true do end
    elseif op == "BOOM" then
      local t = {}
      for i = 1, 1e9 do t[i] = string.rep("x", 200000) .. i end
    elseif op == "FAIL" then
      error("cannot parse this")
    elseif op == "JUNK" then
      return nil, "junk on the wire"
    end
    frame(out, 0, len)
    return 1
  end,
}
"#;

#[test]
fn runaway_oom_and_failing_calls_fail_only_that_call() {
    let mut c = script(MISBEHAVING);
    let mut frames = Vec::new();
    let started = std::time::Instant::now();
    let e = c.scan(b"LOOP", &mut frames).unwrap_err().to_string();
    assert!(e.contains("time limit") && e.contains("t.lua:6"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let e = c.scan(b"BOOM", &mut frames).unwrap_err().to_string();
    assert!(e.contains("memory"), "{e}");
    let e = c.scan(b"FAIL", &mut frames).unwrap_err().to_string();
    assert!(e.contains("t.lua:11: cannot parse this"), "{e}");
    let e = c.scan(b"JUNK", &mut frames).unwrap_err().to_string();
    assert!(e.contains("junk on the wire"), "{e}");
    // The VM still serves.
    c.scan(b"fine", &mut frames).unwrap();
    assert_eq!(frames.len(), 1);
}

#[test]
fn bad_reports_are_refused() {
    let mut frames = Vec::new();
    let mut c = script("return { scan = function(d, l, o) frame(o, 0, l + 1); return 1 end }");
    assert!(c.scan(b"abc", &mut frames).is_err());
    let mut c = script("return { scan = function(d, l, o) frame(o, 0, 2, 1, 5); return 1 end }");
    let e = c.scan(b"abc", &mut frames).unwrap_err().to_string();
    assert!(e.contains("key at 1..6 outside its frame 0..2"), "{e}");
    let mut c = script("return { scan = function(d, l, o) return 'x' end }");
    assert!(c.scan(b"abc", &mut frames).is_err());
}

#[test]
fn integer_keys_and_text_ids() {
    let source = "return { id_format = 'text', scan = function(d, l, o) frame_intkey(o, 0, l, 12345, 0, 2); return 1 end }";
    let spec = spec_for(
        Path::new("t.lua"),
        source,
        Duration::from_millis(30),
        4 << 20,
    );
    assert_eq!(
        LuaProtocol::new(spec).capabilities().id_format,
        crate::frame::IdFormat::Text
    );
    let mut c = script(source);
    let mut frames = Vec::new();
    c.scan(b"42 hello", &mut frames).unwrap();
    assert_eq!(frames[0].key, Some(Key::Int(12345)));
    assert_eq!(frames[0].id, Some(Span { offset: 0, len: 2 }));
}

#[test]
fn find_spans_chunks() {
    let mut c = script(
        "return { scan = function(d, l, o) local at = find(d, 1, l, 'NEEDLE'); if at then frame(o, 0, at + 6) return 1 end return 0 end }",
    );
    let mut data = vec![b'x'; 9000];
    data.extend_from_slice(b"NEEDLE");
    let mut frames = Vec::new();
    c.scan(&data, &mut frames).unwrap();
    assert_eq!(frames[0].len as usize, data.len());
    // Straddling the 4 KiB chunk boundary.
    let mut data = vec![b'x'; 4093];
    data.extend_from_slice(b"NEEDLE");
    frames.clear();
    c.scan(&data, &mut frames).unwrap();
    assert_eq!(frames[0].len as usize, data.len());
}

/// The frames of `stream` under the example script `name`: scanned whole, in the reads
/// `cuts` make, and a byte at a time; all must agree and cover the stream in `count` frames.
fn example_frames_agree(name: &str, stream: &[u8], cuts: &[usize], count: usize) {
    let make = || LuaCodec::new(&example(name), Direction::Requests, 1 << 20).unwrap();
    let whole = frames_by_reads(&mut make(), stream, &[]);
    assert_eq!(whole.len(), count, "{name}");
    assert_eq!(whole.iter().map(|f| f.0.len()).sum::<usize>(), stream.len());
    assert_eq!(
        frames_by_reads(&mut make(), stream, cuts),
        whole,
        "{name}: {cuts:?}"
    );
    let every: Vec<usize> = (1..stream.len()).collect();
    assert_eq!(
        frames_by_reads(&mut make(), stream, &every),
        whole,
        "{name}: byte by byte"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Every example script frames its protocol the same however the bytes arrive.
    #[test]
    fn example_scripts_frame_the_same_however_the_bytes_arrive(
        bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..60), 1..8),
        keys in proptest::collection::vec("[a-z0-9]{1,12}", 8),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        // binary64: the demo protocol.
        example_frames_agree("binary64.lua", &demo_stream(&bodies), &cuts, bodies.len());
        // tutorial: u16 length | type | key "|" id(4) | rest.
        let mut t = Vec::new();
        for (b, k) in bodies.iter().zip(&keys) {
            let mut m = vec![7u8];
            m.extend_from_slice(k.as_bytes());
            m.push(b'|');
            m.extend_from_slice(&[0, 0, 0, 9]);
            m.extend(b.iter().map(|x| if *x == b'|' { b'.' } else { *x }));
            t.extend_from_slice(&(m.len() as u16).to_be_bytes());
            t.extend_from_slice(&m);
        }
        example_frames_agree("tutorial.lua", &t, &cuts, bodies.len());
        // tlv: u32 length | TLVs (key type 1, id type 2, others carried).
        let mut tlv = Vec::new();
        for (b, k) in bodies.iter().zip(&keys) {
            let mut m = vec![1u8];
            m.extend_from_slice(&(k.len() as u16).to_be_bytes());
            m.extend_from_slice(k.as_bytes());
            m.extend_from_slice(&[2, 0, 4, 0, 0, 0, 3, 9]);
            m.extend_from_slice(&(b.len() as u16).to_be_bytes());
            m.extend_from_slice(b);
            tlv.extend_from_slice(&(m.len() as u32).to_be_bytes());
            tlv.extend_from_slice(&m);
        }
        example_frames_agree("tlv.lua", &tlv, &cuts, bodies.len());
        // sip: header lines, a blank line, Content-Length bytes of body.
        let mut sip = Vec::new();
        for (i, (b, k)) in bodies.iter().zip(&keys).enumerate() {
            sip.extend_from_slice(
                format!(
                    "INVITE sip:bob@example.com SIP/2.0\r\nCall-ID: {k}\r\nCSeq: {} INVITE\r\nContent-Length: {}\r\n\r\n",
                    100 + i,
                    b.len()
                )
                .as_bytes(),
            );
            sip.extend_from_slice(b);
        }
        example_frames_agree("sip.lua", &sip, &cuts, bodies.len());
    }
}

/// The SIP example on real SIP: compact and lower-case header names, the marks of every
/// kind of message, keep-alives, and what it answers itself.
#[test]
fn sip_example_marks_every_kind_of_message() {
    let spec = example("sip.lua");
    assert!(spec.info.error_reply_gets_request && spec.info.has_local_reply);
    let protocol = LuaProtocol::new(spec.clone());
    assert_eq!(
        protocol.capabilities().correlation,
        Some(Correlation::ByIdAsSent)
    );
    let msgs: [&[u8]; 11] = [
        b"INVITE sip:bob@b SIP/2.0\r\nVia: SIP/2.0/TCP a;branch=z9hG4bK1\r\nFrom: <sip:a@a>;tag=1\r\nTo: <sip:bob@b>\r\ni: c1@a\r\nCSeq: 1 INVITE\r\nl: 3\r\n\r\nsdp",
        b"SIP/2.0 100 Trying\r\ncall-id: c1@a\r\ncseq: 1 INVITE\r\ncontent-length: 0\r\n\r\n",
        b"SIP/2.0 200 OK\r\nCALL-ID : c1@a\r\nCSeq:1 INVITE\r\nContent-Length:0\r\n\r\n",
        b"ACK sip:bob@b SIP/2.0\r\nCall-ID: c1@a\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        b"BYE sip:bob@b SIP/2.0\r\nCall-ID: c1@a\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
        b"SIP/2.0 200 OK\r\nCall-ID: c1@a\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
        b"\r\n\r\n",
        b"\r\n",
        b"OPTIONS sip:proxy SIP/2.0\r\nVia: SIP/2.0/TCP a;branch=z9hG4bK2\r\nMax-Forwards: 0\r\nCall-ID: ping@a\r\nCSeq: 7 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        b"MESSAGE sip:bob@b SIP/2.0\r\nTo: <sip:bob@b>\r\nCall-ID: m1@a\r\nCSeq: 1 MESSAGE\r\nContent-Length: 2\r\n\r\nhi",
        b"MESSAGE sip:bob@b SIP/2.0\r\nt: <sip:bob@b>;tag=9\r\nCall-ID: c1@a\r\nCSeq: 3 MESSAGE\r\nContent-Length: 2\r\n\r\nhi",
    ];
    let stream: Vec<u8> = msgs.concat();
    let mut codec = LuaCodec::new(&spec, Direction::Requests, 1 << 20).unwrap();
    let mut frames = Vec::new();
    codec.scan(&stream, &mut frames).unwrap();
    assert_eq!(frames.len(), msgs.len());
    let want = [
        Flags::REQUEST,
        Flags::ANSWER | Flags::PROVISIONAL,
        Flags::ANSWER,
        Flags::REQUEST | Flags::ONE_WAY,
        Flags::REQUEST | Flags::ENDS_SESSION,
        Flags::ANSWER | Flags::ENDS_SESSION,
        Flags::LOCAL,
        Flags::DROP,
        Flags::LOCAL,
        Flags::REQUEST | Flags::ENDS_SESSION,
        Flags::REQUEST,
    ];
    let mut at = 0;
    for (i, (fr, m)) in frames.iter().zip(msgs).enumerate() {
        assert_eq!(fr.len as usize, m.len(), "frame {i}");
        assert_eq!(fr.flags, Flags(want[i]), "frame {i}");
        let bytes = &stream[at..at + m.len()];
        if i < 6 {
            let key = fr.key.unwrap().bytes(bytes, &mut [0; 8]).to_vec();
            assert_eq!(key, b"c1@a", "frame {i}: Call-ID, any spelling");
            let id = fr.id.unwrap().slice(bytes);
            assert!(
                id.starts_with(b"1 ") || id.starts_with(b"2 "),
                "frame {i}: the whole CSeq"
            );
        }
        at += m.len();
    }
    // What the proxy answers itself.
    assert_eq!(
        protocol.local_answer(b"\r\n\r\n").unwrap().unwrap(),
        &b"\r\n"[..]
    );
    let pong = protocol.local_answer(msgs[8]).unwrap().unwrap();
    let pong = std::str::from_utf8(&pong).unwrap();
    assert!(pong.starts_with("SIP/2.0 200 OK\r\n"), "{pong}");
    assert!(
        pong.contains(
            "Via: SIP/2.0/TCP a;branch=z9hG4bK2\r\nCall-ID: ping@a\r\nCSeq: 7 OPTIONS\r\n"
        ),
        "{pong}"
    );
    assert!(pong.ends_with("Content-Length: 0\r\n\r\n"), "{pong}");
    // A failed request's 503 copies its own headers, and the To gets a tag.
    let failure = Failure {
        id: Some(b"1 INVITE"),
        key: Some(b"c1@a"),
        reason: "backend s1 failed: \"gone\"\r\n",
        request: Some(msgs[0]),
    };
    let answer = protocol.error_answer(&failure).unwrap().unwrap();
    let answer = std::str::from_utf8(&answer).unwrap();
    assert!(answer.starts_with("SIP/2.0 503 Service Unavailable\r\nVia: SIP/2.0/TCP a;branch=z9hG4bK1\r\nFrom: <sip:a@a>;tag=1\r\nTo: <sip:bob@b>;tag=switchyard\r\ni: c1@a\r\nCSeq: 1 INVITE\r\n"), "{answer}");
    assert!(
        answer.contains(
            "Warning: 399 switchyard \"backend s1 failed:  gone   \"\r\nContent-Length: 0\r\n\r\n"
        ),
        "{answer}"
    );
    // The answer frames as one SIP message with the request's Call-ID and CSeq.
    let mut back = LuaCodec::new(&spec, Direction::Answers, 1 << 20).unwrap();
    let mut f = Vec::new();
    back.scan(answer.as_bytes(), &mut f).unwrap();
    assert_eq!((f.len(), f[0].len as usize), (1, answer.len()));
    // Without the request's bytes there is no answer (the request is dropped, counted).
    let bare = Failure {
        request: None,
        ..failure
    };
    assert_eq!(protocol.error_answer(&bare).unwrap(), None);
    // Garbage is refused with a reason.
    let mut codec = LuaCodec::new(&spec, Direction::Requests, 1 << 20).unwrap();
    let e = codec
        .scan(
            b"INVITE sip:x SIP/2.0\r\nCall-ID: a\r\n\r\n",
            &mut Vec::new(),
        )
        .unwrap_err();
    assert!(e.to_string().contains("Content-Length"), "{e}");
}

#[test]
fn marks_are_checked() {
    let mut s = script("return { scan = function(d, n, out) frame(out, 0, n); mark(out, 0, ANSWER + REQUEST); return 1 end }");
    let e = s.scan(b"abc", &mut Vec::new()).unwrap_err();
    assert!(e.to_string().contains("both ANSWER and REQUEST"), "{e}");
    let mut s = script(
        "return { scan = function(d, n, out) frame(out, 0, n); mark(out, 0, 128); return 1 end }",
    );
    assert!(s.scan(b"abc", &mut Vec::new()).is_err());
    let mut s = script("return { scan = function(d, n, out) frame_intkey(out, 0, n, 5); mark(out, 0, ONE_WAY + ENDS_SESSION); return 1 end }");
    let mut f = Vec::new();
    s.scan(b"abc", &mut f).unwrap();
    assert_eq!(
        (f[0].key, f[0].flags),
        (
            Some(Key::Int(5)),
            Flags(Flags::ONE_WAY | Flags::ENDS_SESSION)
        )
    );
}

#[test]
fn header_finds_values_by_any_spelling_and_over_continuation_lines() {
    let head = b"Via: a\r\nSubject :  hello\r\n  world \r\ncall-ID:\tx1 \r\nl: 12\r\n";
    let v = |name: &[u8], compact: Option<&[u8]>| {
        host::find_header(head, name, compact).map(|(o, n)| head[o..o + n].to_vec())
    };
    assert_eq!(v(b"call-id", Some(b"i")), Some(b"x1".to_vec()));
    assert_eq!(v(b"content-length", Some(b"l")), Some(b"12".to_vec()));
    assert_eq!(v(b"subject", None), Some(b"hello\r\n  world".to_vec()));
    assert_eq!(v(b"to", Some(b"t")), None);
    assert_eq!(v(b"via", None), Some(b"a".to_vec()));
}
