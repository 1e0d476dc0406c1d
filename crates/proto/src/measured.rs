//! The framer of the protocols without a length header (RESP, memcache text): each frame is
//! measured by scanning it, one at a time from the head of the buffer.

use crate::error::CodecError;
use crate::frame::{Flags, Frame, FrameSet, Key};
use crate::protocol::Framer;

/// A protocol whose frames have no fixed header (RESP, memcache text): each frame is
/// measured by scanning it.
pub(crate) trait Measured {
    /// The length of the request at the head of `buf`; `Ok(None)`: incomplete.
    fn request_len(buf: &[u8], max: usize) -> Result<Option<usize>, CodecError>;
    /// The length of the answer at the head of `buf`; `Ok(None)`: incomplete.
    fn answer_len(buf: &[u8], max: usize) -> Result<Option<usize>, CodecError>;
    /// The key of one whole request.
    fn request_key(frame: &[u8]) -> Option<Key>;
}

/// The codec of a [`Measured`] protocol, for requests or (with `answers`) answers: cuts
/// frames from the head of the buffer one at a time and refuses any over `max_frame`.
#[derive(Debug, Clone)]
pub struct Scanned<P> {
    answers: bool,
    max_frame: usize,
    protocol: std::marker::PhantomData<P>,
}

impl<P> Scanned<P> {
    /// A codec for requests (`answers` false) or answers, bounded by `max_frame`.
    pub fn new(answers: bool, max_frame: usize) -> Self {
        Scanned {
            answers,
            max_frame,
            protocol: std::marker::PhantomData,
        }
    }
}

impl<P: Measured> Framer for Scanned<P> {
    fn scan(&mut self, buf: &[u8], out: &mut FrameSet) -> Result<(), CodecError> {
        let max = self.max_frame;
        let mut pos = 0;
        while pos < buf.len() {
            let rest = &buf[pos..];
            let measured = if self.answers {
                P::answer_len(rest, max)?
            } else {
                P::request_len(rest, max)?
            };
            let Some(len) = measured else {
                return Ok(());
            };
            if len > max {
                return Err(CodecError::TooLarge {
                    len: len as u64,
                    max: max as u64,
                });
            }
            let key = if self.answers {
                None
            } else {
                P::request_key(&rest[..len])
            };
            out.push(Frame {
                len: len as u32,
                id: None,
                key,
                flags: Flags::NONE,
            });
            pos += len;
        }
        Ok(())
    }
}
