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

mod host;
mod interrupt;
mod vm;

pub use vm::{inspect, ScriptInfo};

use crate::error::CodecError;
use crate::error::Invalid;
use crate::frame::{Failure, Flags, Frame, FrameSet, Key, Span};
use crate::protocol::{Capabilities, Correlation, Direction, Framer, Protocol};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use vm::Vm;

/// A script call's default time limit (per 64 KiB of input): the heaviest shipped examples
/// frame a 16 KiB read in about 0.6 ms here (`cargo bench --bench framing`, BENCHMARKS.md),
/// so this leaves an eightfold margin for a busy machine, while a looping script stalls its
/// worker for at most five of these before it is suspended.
pub const DEFAULT_TIME_LIMIT: Duration = Duration::from_millis(5);
/// A script VM's default memory cap.
pub const DEFAULT_MEMORY_LIMIT: usize = 64 << 20;

/// The codec table of `kind = "lua"`, as written in the config file.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    script: Option<String>,
    time_limit: Option<String>,
    memory_limit: Option<u64>,
}

impl Config {
    /// Loads the script (relative paths against `base`, the config file's folder) and runs
    /// its top level once, as `switchyard check` does; errors name the key and, for the
    /// script, its file and line.
    pub fn spec(&self, base: &Path) -> Result<LuaSpec, Invalid> {
        let script = self
            .script
            .as_ref()
            .ok_or_else(|| ("script".to_string(), "is required".to_string()))?;
        let path = base.join(script);
        let source = std::fs::read_to_string(&path).map_err(|e| {
            (
                "script".to_string(),
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let time_limit = match &self.time_limit {
            None => DEFAULT_TIME_LIMIT,
            Some(s) => match humantime::parse_duration(s) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => return Err(("time_limit".into(), "must be longer than 0s".into())),
                Err(e) => {
                    return Err((
                        "time_limit".into(),
                        format!("`{s}` is not a duration such as \"30s\" or \"250ms\": {e}"),
                    ))
                }
            },
        };
        let memory_limit = self
            .memory_limit
            .map_or(DEFAULT_MEMORY_LIMIT, |m| m as usize);
        if memory_limit < 1 << 20 {
            return Err((
                "memory_limit".into(),
                format!("must be at least {}, got {memory_limit}", 1 << 20),
            ));
        }
        let info = inspect(&path, &source, time_limit, memory_limit)
            .map_err(|e| ("script".to_string(), e))?;
        Ok(LuaSpec {
            path,
            source: source.into(),
            time_limit,
            memory_limit,
            info,
        })
    }
}

/// A loaded, validated protocol script.
#[derive(Debug, Clone)]
pub struct LuaSpec {
    /// The script file (resolved against the config file's folder).
    pub path: PathBuf,
    /// Its source, read when the config was loaded.
    pub source: Arc<str>,
    /// Longest a single call may run (per 64 KiB of input).
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
            && self.time_limit == other.time_limit
            && self.memory_limit == other.memory_limit
    }
}

/// A protocol script: each worker thread runs its own VM of it.
#[derive(Debug, Clone, PartialEq)]
pub struct LuaProtocol {
    spec: LuaSpec,
}

impl LuaProtocol {
    /// The protocol of the loaded script `spec`.
    pub fn new(spec: LuaSpec) -> Self {
        LuaProtocol { spec }
    }
}

impl Protocol for LuaProtocol {
    fn kind(&self) -> &'static str {
        "lua"
    }

    fn capabilities(&self) -> Capabilities {
        let correlation = match self.spec.info.correlation.as_deref() {
            Some("in_order") => Some(Correlation::InOrder),
            Some("by_id") => Some(Correlation::ById),
            Some("none") => Some(Correlation::None),
            Some("by_id_as_sent") => Some(Correlation::ByIdAsSent),
            _ => None,
        };
        Capabilities {
            keys: true,
            ids: true,
            id_format: self.spec.info.id_format,
            id_width: self.spec.info.id_width,
            interprets: false,
            correlation,
        }
    }

    fn framer(&self, direction: Direction, max: usize) -> Result<Box<dyn Framer>, CodecError> {
        Ok(Box::new(LuaCodec::new(&self.spec, direction, max)?))
    }

    /// The script's `error_reply(id, key, reason)`, run on this thread's VM.
    fn error_answer(&self, f: &Failure<'_>) -> Result<Option<bytes::Bytes>, String> {
        if !self.spec.info.has_error_reply {
            return Ok(None);
        }
        Vm::for_thread(&self.spec)?.error_reply(f)
    }

    fn error_answer_needs_key(&self) -> bool {
        self.spec.info.has_error_reply
    }

    fn error_answer_needs_id(&self) -> bool {
        self.spec.info.has_error_reply
    }

    /// A script whose `error_reply` takes a fourth parameter is given the request's bytes.
    fn error_answer_needs_request(&self) -> bool {
        self.spec.info.error_reply_gets_request
    }

    /// The script's `local_reply(frame)`, run on this thread's VM.
    fn local_answer(&self, frame: &[u8]) -> Result<Option<bytes::Bytes>, String> {
        if !self.spec.info.has_local_reply {
            return Err(format!(
                "{}: a frame was marked LOCAL but the script has no local_reply function",
                self.spec.path.display()
            ));
        }
        Vm::for_thread(&self.spec)?.local_reply(frame)
    }
}

/// Size of one frame record in the `out` buffer.
const RECORD: usize = 32;
/// Frames one call can report; a fuller read is scanned in several calls.
pub(crate) const OUT_RECORDS: usize = 4096;

/// The `lua` framer: one per connection, sharing its worker's VM.
pub struct LuaCodec {
    vm: Rc<Vm>,
    direction: Direction,
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
    /// A framer for `spec`'s `direction` on this thread's VM for the script (created on
    /// first use).
    pub fn new(spec: &LuaSpec, direction: Direction, max_frame: usize) -> Result<Self, CodecError> {
        let vm = Vm::for_thread(spec).map_err(CodecError::Script)?;
        Ok(LuaCodec {
            vm,
            direction,
            max_frame,
            need: 0,
        })
    }
}

impl Framer for LuaCodec {
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
    let flags = r[21];
    if flags & !Flags::ALL != 0 {
        return bad(format!("unknown flags {flags:#x} (mark takes ONE_WAY, PROVISIONAL, ENDS_SESSION, ANSWER, REQUEST, LOCAL, DROP)"));
    }
    if flags & Flags::ANSWER != 0 && flags & Flags::REQUEST != 0 {
        return bad("a frame marked both ANSWER and REQUEST".into());
    }
    let key = match r[20] {
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
        flags: Flags(flags),
    })
}

#[cfg(test)]
mod tests;
