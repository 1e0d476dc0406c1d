//! `lua`: a user's protocol script (Luau, with native code generation, through mlua).
//!
//! The contract with script authors is in `docs/scripting.md`; in short, the script returns a
//! table with `scan(data, len, out) -> count [, need]` (and optionally `answers` for the
//! other direction), called once per read with everything buffered on the connection. The
//! bytes arrive in a host-owned Luau `buffer` that is reused across calls (no Lua string is
//! built), and the script reports each frame as a fixed 32-byte record in a reused `out`
//! buffer (no table per frame): length, key and id as offsets, or an integer key. This is
//! the shape `research/script-engines.md` measured fastest (25 ns per 64 B frame).
//!
//! Safety: each worker thread has its own VM per script, sandboxed (`sandbox(true)`; no `io`,
//! `os`, `debug`, `require`, `loadstring`), with a memory cap and a per-call time limit
//! enforced by an interrupt that also fires inside native code. A script that errors, runs
//! past its limit or out of memory fails the call: the connection it was serving is closed
//! with the script's file and line in the log, and the VM serves the next call.

mod interrupt;
mod vm;

pub use vm::{inspect, ScriptInfo};

use super::{Codec, CodecError, Frame, FrameSet, IdFormat, Key, Span};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use vm::Vm;

/// Which of the script's functions frames this direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client → backend: `scan`.
    Requests,
    /// Backend → client: `answers` if the script has it, else `scan`.
    Answers,
}

/// A validated `lua` codec.
#[derive(Debug, Clone)]
pub struct LuaSpec {
    /// The script file (resolved against the config file's folder).
    pub path: PathBuf,
    /// Its source, read when the config was loaded.
    pub source: Arc<str>,
    /// Which direction this instance frames.
    pub direction: Direction,
    /// Longest a single call may run.
    pub time_limit: Duration,
    /// Most memory the VM may hold.
    pub memory_limit: usize,
    /// What the script declared about itself.
    pub info: ScriptInfo,
}

impl PartialEq for LuaSpec {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
            && self.source == other.source
            && self.direction == other.direction
            && self.time_limit == other.time_limit
            && self.memory_limit == other.memory_limit
    }
}

/// Size of one frame record in the `out` buffer.
const RECORD: usize = 32;
/// Frames one call can report; a fuller read is scanned in several calls.
pub(crate) const OUT_RECORDS: usize = 4096;

/// The `lua` codec: one per connection, sharing its worker's VM.
pub struct LuaCodec {
    vm: Rc<Vm>,
    direction: Direction,
    id_format: IdFormat,
    max_frame: usize,
    /// Bytes the script said it needs before a call can find a frame.
    need: usize,
}

impl std::fmt::Debug for LuaCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LuaCodec")
            .field("direction", &self.direction)
            .finish()
    }
}

impl LuaCodec {
    /// A codec for `spec` on this thread's VM for the script (created on first use).
    pub fn new(spec: &LuaSpec, max_frame: usize) -> Result<Self, CodecError> {
        let vm = Vm::for_thread(spec).map_err(CodecError::Script)?;
        Ok(LuaCodec {
            vm,
            direction: spec.direction,
            id_format: spec.info.id_format,
            max_frame,
            need: 0,
        })
    }
}

/// A script's `error_reply` function on this thread's VM for the script.
pub struct ScriptErrorReply {
    vm: Rc<Vm>,
}

impl std::fmt::Debug for ScriptErrorReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScriptErrorReply")
    }
}

impl ScriptErrorReply {
    /// The `error_reply` of `spec`'s script, on this thread.
    pub fn new(spec: &LuaSpec) -> Result<Self, CodecError> {
        Ok(ScriptErrorReply {
            vm: Vm::for_thread(spec).map_err(CodecError::Script)?,
        })
    }

    /// The script's answer to a failed request, if it gives one.
    pub fn answer(&self, f: &super::Failure<'_>) -> Option<bytes::Bytes> {
        self.vm.error_reply(f)
    }
}

impl Codec for LuaCodec {
    fn suspended(&self) -> Option<(String, bool)> {
        self.vm.suspension()
    }

    fn scan(&mut self, buf: &[u8], out: &mut FrameSet) -> Result<(), CodecError> {
        if buf.len() < self.need {
            return Ok(());
        }
        self.need = 0;
        let mut base = 0usize;
        loop {
            let data = &buf[base..];
            if data.is_empty() {
                return Ok(());
            }
            let call = self.vm.call(self.direction, data)?;
            let count = call.records.len() / RECORD;
            let mut at = 0usize;
            for r in call.records.chunks_exact(RECORD) {
                let r: &[u8; RECORD] = r
                    .try_into()
                    .map_err(|_| CodecError::Script("short record".into()))?;
                let frame = record(r, at, data.len() - at, self.max_frame)?;
                at += frame.len as usize;
                out.push(frame);
            }
            base += at;
            if count < OUT_RECORDS {
                let rest = buf.len() - base;
                if let Some(need) = call.need {
                    if need > self.max_frame {
                        return Err(CodecError::TooLarge {
                            len: need as u64,
                            max: self.max_frame as u64,
                        });
                    }
                    // Relative to the buffer after the caller cuts the frames found.
                    self.need = need.max(rest + 1);
                } else if rest > self.max_frame {
                    return Err(CodecError::TooLarge {
                        len: rest as u64,
                        max: self.max_frame as u64,
                    });
                }
                return Ok(());
            }
        }
    }

    fn id_format(&self) -> IdFormat {
        self.id_format
    }
}

fn u32_at(r: &[u8; RECORD], o: usize) -> usize {
    u32::from_le_bytes([r[o], r[o + 1], r[o + 2], r[o + 3]]) as usize
}

/// Checks one record written by the script: the frame starts at `at` of the data and has
/// `left` bytes available; key and id offsets are relative to the data and must lie in the
/// frame. Returns the frame with spans relative to its own start.
fn record(r: &[u8; RECORD], at: usize, left: usize, max_frame: usize) -> Result<Frame, CodecError> {
    let bad = |what: String| Err(CodecError::Script(format!("script reported {what}")));
    let len = u32_at(r, 0);
    if len == 0 {
        return bad("a frame of length 0".into());
    }
    if len > max_frame {
        return Err(CodecError::TooLarge {
            len: len as u64,
            max: max_frame as u64,
        });
    }
    if len > left {
        return bad(format!(
            "a frame of {len} bytes where only {left} are buffered"
        ));
    }
    let span = |off: usize, n: usize, what: &str| -> Result<Span, CodecError> {
        if off < at || off + n > at + len {
            return Err(CodecError::Script(format!(
                "a {what} at {off}..{} outside its frame {at}..{}",
                off + n,
                at + len
            )));
        }
        Ok(Span {
            offset: (off - at) as u32,
            len: n as u32,
        })
    };
    let key = match u32_at(r, 20) {
        // `frame`: a key if it has bytes.
        0 if u32_at(r, 8) == 0 => None,
        0 | 1 => Some(Key::Bytes(span(u32_at(r, 4), u32_at(r, 8), "key")?)),
        2 => {
            let v = f64::from_le_bytes(r[24..32].try_into().unwrap_or([0; 8]));
            if !(v >= 0.0 && v <= 2f64.powi(53) && v.fract() == 0.0) {
                return bad(format!(
                    "an integer key {v} that is not a whole number below 2^53"
                ));
            }
            Some(Key::Int(v as u64))
        }
        k => return bad(format!("an unknown key kind {k}")),
    };
    let id_len = u32_at(r, 16);
    let id = if id_len == 0 {
        None
    } else {
        Some(span(u32_at(r, 12), id_len, "id")?)
    };
    Ok(Frame {
        len: len as u32,
        id,
        key,
    })
}

#[cfg(test)]
mod tests;
