//! Shared by the codec targets: a cursor over the fuzzer's bytes, and the harness that
//! feeds a byte stream to a codec the way a connection does.
//!
//! Requests (client → proxy) and answers (backend → proxy) are cut by the same framer types
//! (`switchyard_proto::Framer`, one per protocol and direction), driven by the client and
//! backend sides with the same read → scan → cut loop. So each codec target covers both
//! directions.

#![allow(dead_code)] // each target uses a different part of this module

use std::sync::Arc;
use switchyard_proto::{ConnState, Direction, Frame, FrameSet, Framer, Key, Merge, Plan, Protocol, Span};

/// Reads settings off the front of the fuzzer's input; past its end every byte reads as 0,
/// so any input (even an empty one) describes some case.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    pub fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.byte();
        }
        u64::from_le_bytes(b)
    }

    /// Up to `n` bytes (fewer if the input ends first).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// Everything not read yet.
    pub fn rest(self) -> &'a [u8] {
        self.data
    }

    /// A `max_frame` bound in 16..=65536 (16 is the smallest `max_frame_size` config takes).
    pub fn max_frame(&mut self) -> usize {
        16 + usize::from(self.u16()) % (65_536 - 16 + 1)
    }

    /// Read sizes for the stream: a count byte (0..16), then one byte per read (1..=256
    /// bytes each); whatever the reads leave of the stream arrives as one last read.
    pub fn read_sizes(&mut self) -> Vec<usize> {
        let n = self.byte() % 16;
        (0..n).map(|_| 1 + usize::from(self.byte())).collect()
    }
}

/// Where a frame's session key sits. (The one place that reads `Frame::key`, so a change of
/// its type touches only this function.)
pub fn key_span(f: &Frame) -> Option<Span> {
    f.key.map(|k| match k {
        Key::Bytes(s) => s,
        Key::Int(v) => panic!("a byte codec gave an integer key {v}"),
    })
}

/// Checks the frames one `scan` appended, against the buffer it was given: each is non-empty
/// and at most `max_frame` bytes, together they fit in the buffer (in order, from its head),
/// and every key / id span lies inside its frame. `check` adds the codec's own checks on
/// each `(frame bytes, frame)`. Returns how many buffer bytes the frames cover.
pub fn check_frames(
    buf: &[u8],
    frames: &[Frame],
    max_frame: usize,
    check: &dyn Fn(&[u8], &Frame),
) -> usize {
    let mut used = 0usize;
    for f in frames {
        let len = f.len as usize;
        assert!(len > 0, "empty frame: {f:?}");
        assert!(
            len <= max_frame,
            "frame of {len} bytes over max_frame {max_frame}"
        );
        assert!(
            used + len <= buf.len(),
            "frames cover {} bytes of a {}-byte buffer",
            used + len,
            buf.len()
        );
        let frame = &buf[used..used + len];
        // An integer key (a script's, or `dns`'s name hash) has no span to check.
        let key_bytes = match f.key {
            Some(Key::Bytes(s)) => Some(s),
            _ => None,
        };
        for span in [key_bytes, f.id].into_iter().flatten() {
            assert!(
                span.offset as usize + span.len as usize <= len,
                "span {span:?} outside a {len}-byte frame"
            );
        }
        check(frame, f);
        used += len;
    }
    used
}

/// What a stream scanned to: the bytes of every frame found before the first error, in
/// order, and whether an error came.
pub type Outcome<'s> = (Vec<&'s [u8]>, bool);

/// Feeds `stream` to `codec` as a connection does: each read is appended to a buffer, the
/// whole buffer is scanned, the frames found are cut from its front; an error ends the
/// connection. The frames a failing scan found before its error count too (they precede the
/// bad bytes in the stream), so the result is comparable with [`scan_whole`].
pub fn scan_chunked<'s>(
    codec: &mut dyn Framer,
    stream: &'s [u8],
    sizes: &[usize],
    max_frame: usize,
    check: &dyn Fn(&[u8], &Frame),
) -> Outcome<'s> {
    let mut buf: Vec<u8> = Vec::new();
    let mut base = 0usize; // stream offset of buf[0]
    let mut fed = 0usize;
    let mut frames = FrameSet::new();
    let mut found = Vec::new();
    let mut reads = sizes.iter().copied();
    while fed < stream.len() {
        let n = reads.next().unwrap_or(usize::MAX).min(stream.len() - fed);
        buf.extend_from_slice(&stream[fed..fed + n]);
        fed += n;
        frames.clear();
        let result = codec.scan(&buf, &mut frames);
        let used = check_frames(&buf, &frames, max_frame, check);
        let mut at = base;
        for f in &frames {
            found.push(&stream[at..at + f.len as usize]);
            at += f.len as usize;
        }
        if result.is_err() {
            return (found, true);
        }
        buf.drain(..used);
        base += used;
    }
    (found, false)
}

/// Feeds `stream` one byte at a time (its first 1 024 bytes; the rest in one read): every
/// read boundary at once.
pub fn scan_bytewise<'s>(
    codec: &mut dyn Framer,
    stream: &'s [u8],
    max_frame: usize,
    check: &dyn Fn(&[u8], &Frame),
) -> Outcome<'s> {
    let ones = vec![1; stream.len().min(1024)];
    scan_chunked(codec, stream, &ones, max_frame, check)
}

/// Scans all of `stream` in one call.
pub fn scan_whole<'s>(
    codec: &mut dyn Framer,
    stream: &'s [u8],
    max_frame: usize,
    check: &dyn Fn(&[u8], &Frame),
) -> Outcome<'s> {
    let mut frames = FrameSet::new();
    let result = codec.scan(stream, &mut frames);
    check_frames(stream, &frames, max_frame, check);
    let mut found = Vec::new();
    let mut at = 0usize;
    for f in &frames {
        found.push(&stream[at..at + f.len as usize]);
        at += f.len as usize;
    }
    (found, result.is_err())
}

/// Both ways of feeding `stream` must find the same frames and agree on whether it is bad:
/// a codec's verdict on a stream must not depend on how the network cut it into reads.
pub fn assert_same(chunked: &Outcome<'_>, whole: &Outcome<'_>, sizes: &[usize]) {
    assert_eq!(
        chunked.0, whole.0,
        "frames differ between reads of {sizes:?} (left) and one read (right)"
    );
    assert_eq!(
        chunked.1, whole.1,
        "error in reads of {sizes:?}: {}, in one read: {}",
        chunked.1, whole.1
    );
}

/// Scans `stream` with fresh framers from `framer` in the reads `sizes` cut it into, in one
/// read, and a byte at a time (its first 1 024 bytes), checking every frame with `check`;
/// all three must find the same frames and agree on whether the stream is bad.
pub fn assert_read_independent(
    framer: &dyn Fn() -> Box<dyn Framer>,
    stream: &[u8],
    sizes: &[usize],
    max_frame: usize,
    check: &dyn Fn(&[u8], &Frame),
) {
    let got = scan_chunked(&mut *framer(), stream, sizes, max_frame, check);
    let want = scan_whole(&mut *framer(), stream, max_frame, check);
    assert_same(&got, &want, sizes);
    let one_by_one = scan_bytewise(&mut *framer(), stream, max_frame, check);
    assert_same(&one_by_one, &want, &[1]);
}

/// The `resp` and `memcache` targets: the protocol's framer in both directions (the first
/// input byte picks one), `max_frame` and read sizes from the input, the rest as the
/// stream; for requests, the proxy's plan for every frame (a split request's parts must
/// have their key inside them, and joined they are one request of the protocol); for
/// answers, cutting them per part of a joined request.
pub fn planned_protocol(data: &[u8], protocol: Arc<dyn Protocol>) {
    let mut input = Input::new(data);
    let answers = input.byte() & 1 == 1;
    let direction = if answers {
        Direction::Answers
    } else {
        Direction::Requests
    };
    let max_frame = input.max_frame();
    let sizes = input.read_sizes();
    let stream = input.rest();
    // Parts of a fixed three-key request, to cut fuzzed answers for.
    let probe: &[u8] = match protocol.kind() {
        "resp" => b"*4\r\n$4\r\nMGET\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n",
        _ => b"get a b c\r\n",
    };
    let probe_parts = match protocol.plan(probe, &mut ConnState::default()) {
        Plan::Split(parts, _) => parts,
        other => panic!("the probe request is not split: {other:?}"),
    };
    let check = |frame: &[u8], _f: &Frame| {
        if answers {
            // A backend's answer to a joined request, cut per part: never a panic, one
            // answer per part.
            let parts: Vec<_> = probe_parts.iter().collect();
            for kind in [Merge::Array, Merge::SumIntegers, Merge::AllOk, Merge::MemcacheValues] {
                assert_eq!(protocol.unjoin(kind, frame, &parts).len(), parts.len());
            }
            return;
        }
        let mut state = ConnState::default();
        if let Plan::Split(parts, kind) = protocol.plan(frame, &mut state) {
            for p in &parts {
                assert!(
                    p.key.0 + p.key.1 <= p.frame.len(),
                    "part key outside its frame"
                );
            }
            // Joined, the parts are one request of the protocol, keyed by the first key.
            let refs: Vec<_> = parts.iter().collect();
            let joined = protocol.join(kind, &refs);
            let mut framer = protocol
                .framer(Direction::Requests, 1 << 30)
                .expect("builds");
            let mut frames = Vec::new();
            framer
                .scan(&joined.frame, &mut frames)
                .expect("a joined request scans");
            assert_eq!(frames.len(), 1, "a joined request is one frame");
            assert_eq!(frames[0].len as usize, joined.frame.len());
            let first = &parts[0];
            assert_eq!(joined.key_bytes(), first.key_bytes());
        }
    };
    let framer = || protocol.framer(direction, max_frame).expect("builds");
    assert_read_independent(&framer, stream, &sizes, max_frame, &check);
}
