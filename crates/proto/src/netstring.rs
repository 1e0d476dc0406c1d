//! `netstring`: `<decimal length>:<payload>,`. The session key is the payload's first
//! `key_bytes` bytes, if set.

use crate::error::{CodecError, Invalid};
use crate::frame::{Flags, Frame, FrameSet, IdFormat, Key, Span};
use crate::protocol::{Capabilities, Direction, Framer, Protocol};

/// The codec table of `kind = "netstring"`, as written in the config file.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    key_bytes: Option<u32>,
}

impl Config {
    /// Validates the table; errors name the key within it.
    pub fn protocol(&self) -> Result<NetstringProtocol, Invalid> {
        if self.key_bytes == Some(0) {
            return Err(("key_bytes".into(), "must be at least 1".into()));
        }
        Ok(NetstringProtocol {
            key_bytes: self.key_bytes,
        })
    }
}

/// The protocol: the same framing both ways; no ids (answers come back in order).
#[derive(Debug, Clone, PartialEq)]
pub struct NetstringProtocol {
    key_bytes: Option<u32>,
}

impl Protocol for NetstringProtocol {
    fn kind(&self) -> &'static str {
        "netstring"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            keys: self.key_bytes.is_some(),
            ids: false,
            id_format: IdFormat::Binary,
            id_width: 8,
            interprets: false,
            correlation: None,
        }
    }

    fn framer(&self, _: Direction, max_frame: usize) -> Result<Box<dyn Framer>, CodecError> {
        Ok(Box::new(Netstring {
            key_bytes: self.key_bytes,
            max_frame,
        }))
    }
}

/// One connection's framer. Keeps no state between calls: each call rescans the head.
struct Netstring {
    key_bytes: Option<u32>,
    max_frame: usize,
}

impl Framer for Netstring {
    fn scan(&mut self, buf: &[u8], out: &mut FrameSet) -> Result<(), CodecError> {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            // The length: up to 10 digits, then ':'.
            let Some(colon) = rest.iter().take(11).position(|&b| b == b':') else {
                if rest.len() > 10 || rest.iter().any(|b| !b.is_ascii_digit()) {
                    return Err(CodecError::Malformed(
                        "a netstring must start with its length".into(),
                    ));
                }
                return Ok(()); // need more bytes
            };
            let digits = &rest[..colon];
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return Err(CodecError::Malformed(
                    "a netstring must start with its length".into(),
                ));
            }
            let body: u64 = std::str::from_utf8(digits)
                .unwrap_or("0")
                .parse()
                .unwrap_or(u64::MAX);
            let len = colon as u64 + 1 + body + 1;
            if len > self.max_frame as u64 {
                return Err(CodecError::TooLarge {
                    len,
                    max: self.max_frame as u64,
                });
            }
            if (rest.len() as u64) < len {
                return Ok(()); // need more bytes
            }
            let len = len as usize;
            if rest[len - 1] != b',' {
                return Err(CodecError::Malformed(
                    "a netstring must end with ','".into(),
                ));
            }
            let key = self.key_bytes.filter(|&k| u64::from(k) <= body).map(|k| {
                Key::Bytes(Span {
                    offset: colon as u32 + 1,
                    len: k,
                })
            });
            out.push(Frame {
                len: len as u32,
                id: None,
                key,
                flags: Flags::NONE,
            });
            pos += len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::props::frames_by_reads;
    use proptest::prelude::*;

    fn framer(key_bytes: Option<u32>, max_frame: usize) -> Box<dyn Framer> {
        Config { key_bytes }
            .protocol()
            .unwrap()
            .framer(Direction::Requests, max_frame)
            .unwrap()
    }

    fn netstring(payload: &[u8]) -> Vec<u8> {
        let mut v = format!("{}:", payload.len()).into_bytes();
        v.extend_from_slice(payload);
        v.push(b',');
        v
    }

    fn scan(f: &mut dyn Framer, buf: &[u8]) -> (FrameSet, Result<(), CodecError>) {
        let mut out = Vec::new();
        let r = f.scan(buf, &mut out);
        (out, r)
    }

    /// An empty payload, one shorter than the key, one with a key, one with `:` and `,`
    /// inside, one with a 3-digit length.
    fn sample() -> (Vec<Vec<u8>>, Vec<u8>) {
        let payloads: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"abc".to_vec(),
            b"user0042hello world!".to_vec(),
            b"key:1234,,:,".to_vec(),
            vec![b'x'; 123],
        ];
        let stream = payloads.iter().flat_map(|p| netstring(p)).collect();
        (payloads, stream)
    }

    #[test]
    fn the_same_frames_however_the_stream_is_cut() {
        let (payloads, stream) = sample();
        let whole = frames_by_reads(&mut *framer(Some(8), 1024), &stream, &[]);
        assert_eq!(whole.len(), payloads.len());
        for ((frame, _, id), p) in whole.iter().zip(&payloads) {
            assert_eq!(frame, &netstring(p));
            assert_eq!(id, &None);
        }
        // Two reads, cut at every byte boundary.
        for cut in 1..stream.len() {
            let got = frames_by_reads(&mut *framer(Some(8), 1024), &stream, &[cut]);
            assert_eq!(got, whole, "cut at {cut}");
        }
        // One byte at a time.
        let every: Vec<usize> = (1..stream.len()).collect();
        assert_eq!(
            frames_by_reads(&mut *framer(Some(8), 1024), &stream, &every),
            whole
        );
    }

    #[test]
    fn incomplete_heads_ask_for_more() {
        let mut f = framer(None, 1024);
        for head in [
            &b""[..],
            b"1",
            b"12",
            b"1234567890",
            b"5:",
            b"5:hel",
            b"5:hello",
        ] {
            let (out, r) = scan(&mut *f, head);
            assert_eq!((out.len(), r), (0, Ok(())), "{head:?}");
        }
    }

    #[test]
    fn the_key_is_the_first_key_bytes_of_the_payload() {
        let (_, stream) = sample();
        let (out, r) = scan(&mut *framer(Some(8), 1024), &stream);
        assert_eq!(r, Ok(()));
        let keys: Vec<Option<Key>> = out.iter().map(|f| f.key).collect();
        assert_eq!(
            keys,
            vec![
                None, // empty payload
                None, // shorter than the key
                Some(Key::Bytes(Span { offset: 3, len: 8 })),
                Some(Key::Bytes(Span { offset: 3, len: 8 })),
                Some(Key::Bytes(Span { offset: 4, len: 8 })),
            ]
        );
        let at = (out[0].len + out[1].len) as usize;
        let third = &stream[at..][..out[2].len as usize];
        assert_eq!(out[2].key.unwrap().bytes(third, &mut [0; 8]), b"user0042");
        // Exactly key_bytes long: the key is the whole payload.
        let (out, _) = scan(&mut *framer(Some(8), 1024), b"8:abcdefgh,");
        assert_eq!(out[0].key, Some(Key::Bytes(Span { offset: 2, len: 8 })));
        // Without key_bytes, no keys.
        let (out, _) = scan(&mut *framer(None, 1024), &stream);
        assert!(out.iter().all(|f| f.key.is_none()));
    }

    #[test]
    fn bad_lengths_are_refused_after_the_good_frames() {
        for bad in [
            &b"abc"[..],
            b":hello,",
            b"-1:x,",
            b"1x:a,",
            b" 5:hello,",
            b"12345678901",
            b"12345678901:",
            b"5:hello;",
            b"0:x",
        ] {
            let mut buf = netstring(b"ok");
            buf.extend_from_slice(bad);
            let (out, r) = scan(&mut *framer(None, 1 << 20), &buf);
            assert_eq!(out.len(), 1, "{bad:?}: the good frame first");
            assert!(matches!(r, Err(CodecError::Malformed(_))), "{bad:?}: {r:?}");
        }
    }

    #[test]
    fn oversized_frames_are_refused_as_soon_as_the_length_is_known() {
        // 16 bytes: "11:" + 11 + ","; one more payload byte is too many.
        let mut f = framer(None, 15);
        let (out, r) = scan(&mut *f, b"11:hello world,");
        assert_eq!((out.len(), r), (1, Ok(())));
        let (out, r) = scan(&mut *f, b"12:");
        assert!(out.is_empty());
        assert_eq!(r, Err(CodecError::TooLarge { len: 16, max: 15 }));
        // Ten digits: the largest length the framer reads, refused without its payload.
        let (_, r) = scan(&mut *framer(None, 1 << 20), b"9999999999:");
        assert_eq!(
            r,
            Err(CodecError::TooLarge {
                len: 9_999_999_999 + 12,
                max: 1 << 20
            })
        );
    }

    #[test]
    fn config_refuses_a_zero_key() {
        let e = Config { key_bytes: Some(0) }.protocol().unwrap_err();
        assert_eq!(e.0, "key_bytes");
        let p = Config { key_bytes: Some(8) }.protocol().unwrap();
        assert!(p.capabilities().keys);
        assert!(!p.capabilities().ids);
        assert!(
            !Config { key_bytes: None }
                .protocol()
                .unwrap()
                .capabilities()
                .keys
        );
    }

    proptest! {
        #[test]
        fn frames_do_not_depend_on_read_boundaries(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..12),
            cuts in proptest::collection::vec(any::<usize>(), 0..30),
            key_bytes in proptest::option::of(1u32..12),
        ) {
            let stream: Vec<u8> = payloads.iter().flat_map(|p| netstring(p)).collect();
            let whole = frames_by_reads(&mut *framer(key_bytes, 4096), &stream, &[]);
            prop_assert_eq!(whole.len(), payloads.len());
            for ((frame, key, _), p) in whole.iter().zip(&payloads) {
                prop_assert_eq!(frame, &netstring(p));
                let want = key_bytes.filter(|&k| k as usize <= p.len()).map(|k| p[..k as usize].to_vec());
                prop_assert_eq!(key, &want);
            }
            prop_assert_eq!(&frames_by_reads(&mut *framer(key_bytes, 4096), &stream, &cuts), &whole);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut out = Vec::new();
            if framer(Some(4), 64).scan(&bytes, &mut out).is_ok() {
                prop_assert!(out.iter().map(|f| f.len as usize).sum::<usize>() <= bytes.len());
                prop_assert!(out.iter().all(|f| f.len as usize <= 64));
            }
        }
    }
}
