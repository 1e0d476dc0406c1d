//! Property tests: however a byte stream is split into reads, the frames found are the
//! same, and no input makes a codec panic.

use crate::delimiter::{Delimiter, DelimiterSpec};
use crate::length_field::{Endian, FieldSpec, LengthField, LengthFieldSpec};
use crate::protocol::Framer;
use crate::{memcache, resp};
use proptest::prelude::*;

/// A frame's bytes, key bytes and id bytes.
pub(crate) type Found = (Vec<u8>, Option<Vec<u8>>, Option<Vec<u8>>);

/// (frame bytes, key bytes, id bytes) of every frame, scanning `stream` as it arrives in
/// `chunks`, the way a connection does: append, scan, cut what was found.
pub(crate) fn frames_by_reads(codec: &mut dyn Framer, stream: &[u8], cuts: &[usize]) -> Vec<Found> {
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let mut frames = Vec::new();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    points.push(stream.len());
    points.sort_unstable();
    let mut prev = 0;
    for p in points {
        buf.extend_from_slice(&stream[prev..p]);
        prev = p;
        codec.scan(&buf, &mut frames).expect("valid stream");
        let mut consumed = 0;
        for f in frames.drain(..) {
            let bytes = &buf[consumed..consumed + f.len as usize];
            out.push((
                bytes.to_vec(),
                f.key.map(|k| k.bytes(bytes, &mut [0; 8]).to_vec()),
                f.id.map(|s| s.slice(bytes).to_vec()),
            ));
            consumed += f.len as usize;
        }
        buf.drain(..consumed);
    }
    assert!(buf.is_empty(), "a whole stream leaves nothing behind");
    out
}

fn length_field_spec(width: u32, little: bool, whole: bool) -> LengthFieldSpec {
    LengthFieldSpec {
        length_offset: 1,
        length_width: width,
        endian: if little { Endian::Little } else { Endian::Big },
        length_adjust: if whole { -(1 + i64::from(width)) } else { 0 },
        key: Some(FieldSpec {
            offset: 1 + width,
            width: 3,
        }),
        id: Some(FieldSpec {
            offset: 4 + width,
            width: 2,
        }),
    }
}

fn encode_length_field(spec: &LengthFieldSpec, bodies: &[Vec<u8>]) -> Vec<u8> {
    let mut s = Vec::new();
    for body in bodies {
        let header = (spec.length_offset + spec.length_width) as usize;
        let total = header + 5 + body.len();
        let value = (total as i64 - header as i64 - spec.length_adjust) as u64;
        s.push(0xEE);
        let be = value.to_be_bytes();
        let mut field = be[8 - spec.length_width as usize..].to_vec();
        if spec.endian == Endian::Little {
            field.reverse();
        }
        s.extend_from_slice(&field);
        s.extend_from_slice(&[b'k', body.len() as u8, 7, 0xAB, body.len() as u8]);
        s.extend_from_slice(body);
    }
    s
}

/// Every read boundary at once: the stream fed one byte at a time.
fn every_byte(stream: &[u8]) -> Vec<usize> {
    (1..stream.len()).collect()
}

/// A RESP request: an array of bulk strings, or an inline command line.
fn resp_request() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..6).prop_map(|args| {
            let mut v = format!("*{}\r\n", args.len()).into_bytes();
            for a in args {
                v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                v.extend_from_slice(&a);
                v.extend_from_slice(b"\r\n");
            }
            v
        }),
        1 => "[A-Za-z]{1,8}( [a-z0-9]{1,8}){0,3}".prop_map(|l| format!("{l}\r\n").into_bytes()),
    ]
}

/// A RESP2/RESP3 value, nested up to a few levels.
fn resp_value() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        "[a-zA-Z ]{0,20}".prop_map(|t| format!("+{t}\r\n").into_bytes()),
        "[a-zA-Z ]{0,20}".prop_map(|t| format!("-ERR {t}\r\n").into_bytes()),
        any::<i64>().prop_map(|n| format!(":{n}\r\n").into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..50).prop_map(|b| {
            let mut v = format!("${}\r\n", b.len()).into_bytes();
            v.extend_from_slice(&b);
            v.extend_from_slice(b"\r\n");
            v
        }),
        Just(b"$-1\r\n".to_vec()),
        Just(b"_\r\n".to_vec()),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(|items| {
                let mut v = format!("*{}\r\n", items.len()).into_bytes();
                items.iter().for_each(|i| v.extend_from_slice(i));
                v
            }),
            proptest::collection::vec((inner.clone(), inner), 0..3).prop_map(|pairs| {
                let mut v = format!("%{}\r\n", pairs.len()).into_bytes();
                for (k, x) in pairs {
                    v.extend_from_slice(&k);
                    v.extend_from_slice(&x);
                }
                v
            }),
        ]
    })
}

/// A memcache request: `get` of up to 400 keys (lines past 2 KiB), storage commands with a
/// data block (`noreply` or not), or a one-line command.
fn memcache_request() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec("[a-z0-9:]{1,12}", 1..400).prop_map(|keys| format!(
            "get {}\r\n",
            keys.join(" ")
        )
        .into_bytes()),
        (
            "[a-z0-9]{1,20}",
            proptest::collection::vec(any::<u8>(), 0..100),
            any::<bool>()
        )
            .prop_map(|(key, data, noreply)| {
                let mut v = format!(
                    "set {key} 0 0 {}{}\r\n",
                    data.len(),
                    if noreply { " noreply" } else { "" }
                )
                .into_bytes();
                v.extend_from_slice(&data);
                v.extend_from_slice(b"\r\n");
                v
            }),
        "(delete|incr|version) [a-z0-9]{1,10}( 5)?".prop_map(|l| format!("{l}\r\n").into_bytes()),
    ]
}

/// A memcache answer: `VALUE` blocks (data that may hold "END") then `END`, or one line.
fn memcache_answer() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(
            (
                "[a-z0-9]{1,10}",
                proptest::collection::vec(any::<u8>(), 0..60)
            ),
            0..5
        )
        .prop_map(|values| {
            let mut v = Vec::new();
            for (k, data) in values {
                v.extend_from_slice(format!("VALUE {k} 0 {}\r\n", data.len()).as_bytes());
                v.extend_from_slice(&data);
                v.extend_from_slice(b"\r\n");
            }
            v.extend_from_slice(b"END\r\n");
            v
        }),
        prop_oneof![
            Just("STORED"),
            Just("NOT_FOUND"),
            Just("DELETED"),
            Just("42"),
            Just("SERVER_ERROR out of memory")
        ]
        .prop_map(|l| format!("{l}\r\n").into_bytes()),
    ]
}

/// The frames of `stream`: scanned whole, in the reads `cuts` make, and a byte at a time;
/// all three must agree, and there must be `count` of them, covering the stream.
fn same_however_read(
    make: &dyn Fn() -> Box<dyn Framer>,
    stream: &[u8],
    cuts: &[usize],
    count: usize,
) -> Result<(), TestCaseError> {
    let whole = frames_by_reads(&mut *make(), stream, &[]);
    prop_assert_eq!(whole.len(), count);
    prop_assert_eq!(whole.iter().map(|f| f.0.len()).sum::<usize>(), stream.len());
    prop_assert_eq!(&frames_by_reads(&mut *make(), stream, cuts), &whole);
    prop_assert_eq!(
        &frames_by_reads(&mut *make(), stream, &every_byte(stream)),
        &whole
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn resp_frames_do_not_depend_on_read_boundaries(
        requests in proptest::collection::vec(resp_request(), 0..12),
        answers in proptest::collection::vec(resp_value(), 0..12),
        cuts in proptest::collection::vec(any::<usize>(), 0..30),
    ) {
        let stream = requests.concat();
        same_however_read(&|| Box::new(resp::Resp::new(false, 1 << 20)), &stream, &cuts, requests.len())?;
        let stream = answers.concat();
        same_however_read(&|| Box::new(resp::Resp::new(true, 1 << 20)), &stream, &cuts, answers.len())?;
    }

    #[test]
    fn memcache_frames_do_not_depend_on_read_boundaries(
        requests in proptest::collection::vec(memcache_request(), 0..8),
        answers in proptest::collection::vec(memcache_answer(), 0..12),
        cuts in proptest::collection::vec(any::<usize>(), 0..30),
    ) {
        let stream = requests.concat();
        same_however_read(&|| Box::new(memcache::Memcache::new(false, 1 << 20)), &stream, &cuts, requests.len())?;
        let stream = answers.concat();
        same_however_read(&|| Box::new(memcache::Memcache::new(true, 1 << 20)), &stream, &cuts, answers.len())?;
    }

    #[test]
    fn length_field_and_delimiter_frames_are_the_same_a_byte_at_a_time(
        bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..100), 0..10),
        lines in proptest::collection::vec("[a-z0-9 \t]{0,40}", 0..10),
    ) {
        let spec = length_field_spec(4, false, false);
        let stream = encode_length_field(&spec, &bodies);
        same_however_read(&|| Box::new(LengthField::new(spec.clone(), 4096)), &stream, &[], bodies.len())?;
        let stream: Vec<u8> = lines.iter().flat_map(|l| format!("{l}\r\n").into_bytes()).collect();
        let spec = DelimiterSpec { delimiter: b"\r\n".to_vec(), key_token: Some(1), id_token: Some(0) };
        same_however_read(&|| Box::new(Delimiter::new(spec.clone(), 4096)), &stream, &[], lines.len())?;
    }
}

proptest! {
    #[test]
    fn length_field_frames_do_not_depend_on_read_boundaries(
        bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..20),
        cuts in proptest::collection::vec(any::<usize>(), 0..30),
        width in prop_oneof![Just(2u32), Just(4u32), Just(8u32)],
        little in any::<bool>(),
        whole in any::<bool>(),
    ) {
        let spec = length_field_spec(width, little, whole);
        let stream = encode_length_field(&spec, &bodies);
        let whole_scan = frames_by_reads(&mut LengthField::new(spec.clone(), 4096), &stream, &[]);
        let by_reads = frames_by_reads(&mut LengthField::new(spec, 4096), &stream, &cuts);
        prop_assert_eq!(whole_scan.len(), bodies.len());
        for ((frame, key, id), body) in whole_scan.iter().zip(&bodies) {
            prop_assert!(frame.ends_with(body));
            prop_assert_eq!(key.as_deref(), Some(&[b'k', body.len() as u8, 7][..]));
            prop_assert_eq!(id.as_deref(), Some(&[0xAB, body.len() as u8][..]));
        }
        prop_assert_eq!(whole_scan, by_reads);
    }

    #[test]
    fn delimiter_frames_do_not_depend_on_read_boundaries(
        lines in proptest::collection::vec("[a-z0-9 \t\r]{0,40}", 0..20),
        cuts in proptest::collection::vec(any::<usize>(), 0..30),
        crlf in any::<bool>(),
    ) {
        let delim = if crlf { "\r\n" } else { "\n" };
        // A line must not contain the delimiter itself, nor end in a lone '\r' before "\r\n".
        let lines: Vec<String> = lines.iter().map(|l| l.replace('\r', "")).collect();
        let stream: Vec<u8> = lines.iter().flat_map(|l| format!("{l}{delim}").into_bytes()).collect();
        let spec = DelimiterSpec { delimiter: delim.as_bytes().to_vec(), key_token: Some(1), id_token: Some(0) };
        let whole_scan = frames_by_reads(&mut Delimiter::new(spec.clone(), 4096), &stream, &[]);
        let by_reads = frames_by_reads(&mut Delimiter::new(spec, 4096), &stream, &cuts);
        prop_assert_eq!(whole_scan.len(), lines.len());
        for ((frame, key, id), line) in whole_scan.iter().zip(&lines) {
            let mut tokens = line.split([' ', '\t']).filter(|t| !t.is_empty());
            prop_assert_eq!(frame.len(), line.len() + delim.len());
            prop_assert_eq!(id.as_deref(), tokens.next().map(str::as_bytes));
            prop_assert_eq!(key.as_deref(), tokens.next().map(str::as_bytes));
        }
        prop_assert_eq!(whole_scan, by_reads);
    }

    #[test]
    fn codecs_never_panic_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut out = Vec::new();
        for width in [1, 2, 4, 8] {
            for adjust in [-20i64, 0, 3] {
                let mut spec = length_field_spec(width, false, false);
                spec.length_adjust = adjust;
                let mut c = LengthField::new(spec, 256);
                out.clear();
                if c.scan(&bytes, &mut out).is_ok() {
                    let total: usize = out.iter().map(|f| f.len as usize).sum();
                    prop_assert!(total <= bytes.len());
                    prop_assert!(out.iter().all(|f| f.len as usize <= 256));
                }
            }
        }
        let mut d = Delimiter::new(DelimiterSpec { delimiter: b"\r\n".to_vec(), key_token: Some(2), id_token: Some(0) }, 64);
        out.clear();
        if d.scan(&bytes, &mut out).is_ok() {
            prop_assert!(out.iter().all(|f| f.len as usize <= 64));
        }
    }
}
