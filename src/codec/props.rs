//! Property tests: however a byte stream is split into reads, the frames found are the
//! same, and no input makes a codec panic.

use super::*;
use proptest::prelude::*;

/// A frame's bytes, key bytes and id bytes.
pub(crate) type Found = (Vec<u8>, Option<Vec<u8>>, Option<Vec<u8>>);

/// (frame bytes, key bytes, id bytes) of every frame, scanning `stream` as it arrives in
/// `chunks`, the way a connection does: append, scan, cut what was found.
pub(crate) fn frames_by_reads(codec: &mut dyn Codec, stream: &[u8], cuts: &[usize]) -> Vec<Found> {
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
