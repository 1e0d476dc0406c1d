//! One Luau VM per script per worker thread: sandbox, limits, the `sy` library, and the call.
//!
//! Size: about 500 lines, a tenth of them comments; loading, the limits and the call share
//! the VM's private state, so they stay together.

use super::{LuaSpec, OUT_RECORDS, RECORD};
use crate::error::CodecError;
use crate::frame::IdFormat;
use crate::protocol::Direction;
use mlua::{Buffer, Function, Lua, LuaOptions, StdLib, Table, Value};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::time::Duration;

/// What a script declares in its module table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptInfo {
    /// `correlation = "in_order" | "by_id" | "none"`, if declared.
    pub correlation: Option<String>,
    /// `id_format = "binary" | "text"` (default binary).
    pub id_format: IdFormat,
    /// `id_width`: bytes of a binary id field (default 4).
    pub id_width: usize,
    /// Whether it frames answers with its own `answers` function.
    pub has_answers: bool,
    /// Whether it answers failed requests with its own `error_reply` function.
    pub has_error_reply: bool,
    /// Whether its `error_reply` takes a fourth parameter, the request's bytes.
    pub error_reply_gets_request: bool,
    /// Whether it answers frames it marks `LOCAL` with its own `local_reply` function.
    pub has_local_reply: bool,
}

/// A loaded script on one thread.
pub(super) struct Vm {
    lua: Lua,
    scan: Function,
    answers: Option<Function>,
    error_reply: Option<Function>,
    local_reply: Option<Function>,
    input: RefCell<Buffer>,
    input_len: Cell<usize>,
    output: Buffer,
    /// A copy of the used part of `output`, taken in one read after each call.
    records: RefCell<Vec<u8>>,
    time_limit: Duration,
    /// Stops calls for a while after repeated failures.
    breaker: RefCell<Breaker>,
    /// The script's file, for logs.
    path: PathBuf,
}

/// Framing calls that fail in a row (error, time or memory limit) before the script is
/// suspended: a looping script costs its worker at most this many time limits in a row.
pub(super) const FAILURES_TO_SUSPEND: u32 = 5;
/// First suspension; it doubles while the script keeps failing right after, up to the
/// longest.
const FIRST_SUSPENSION: Duration = Duration::from_secs(1);
const LONGEST_SUSPENSION: Duration = Duration::from_secs(60);

/// The circuit breaker of one script VM: after [`FAILURES_TO_SUSPEND`] failed calls in a row
/// the script is not called until the suspension ends; one more failure right after doubles
/// the next suspension, a success resets it.
#[derive(Debug, Default)]
pub(super) struct Breaker {
    failures: u32,
    until: Option<std::time::Instant>,
    next: Option<Duration>,
    last_error: String,
    /// Whether the suspension in force has been reported.
    announced: bool,
}

impl Breaker {
    fn suspended(&self, now: std::time::Instant) -> bool {
        self.until.is_some_and(|u| now < u)
    }

    fn success(&mut self) {
        self.failures = 0;
        self.next = None;
    }

    /// Counts a failed call; returns the suspension it starts, if it starts one.
    fn failure(&mut self, now: std::time::Instant, error: &str) -> Option<Duration> {
        self.failures += 1;
        self.last_error = error.to_string();
        if self.failures < FAILURES_TO_SUSPEND {
            return None;
        }
        let d = self.next.unwrap_or(FIRST_SUSPENSION);
        self.until = Some(now + d);
        self.next = Some((d * 2).min(LONGEST_SUSPENSION));
        // After the suspension one more failure suspends again.
        self.failures = FAILURES_TO_SUSPEND - 1;
        self.announced = false;
        Some(d)
    }
}

/// What one call returned.
pub(super) struct Call<'a> {
    /// The frame records the script wrote, `RECORD` bytes each.
    pub(super) records: std::cell::Ref<'a, [u8]>,
    pub(super) need: Option<usize>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct VmKey {
    path: PathBuf,
    source: u64,
    time_limit: Duration,
    memory_limit: usize,
}

thread_local! {
    static VMS: RefCell<HashMap<VmKey, Weak<Vm>>> = RefCell::new(HashMap::new());
}

const PRELUDE: &str = include_str!("prelude.luau");

/// Bytes of input one `time_limit` covers: a framing call's work grows with the bytes it is
/// given, so a call on a whole large frame gets proportionally longer.
const BYTES_PER_LIMIT: usize = 64 << 10;
/// Most limits one call gets (a 64 MiB input).
const MOST_LIMITS: usize = 1024;

/// The limit of one framing call on `len` bytes: `time_limit` per 64 KiB, at least one.
pub(super) fn call_limit(time_limit: Duration, len: usize) -> Duration {
    let n = len.div_ceil(BYTES_PER_LIMIT).clamp(1, MOST_LIMITS);
    time_limit * n as u32
}

/// The prelude as one line: comments dropped, lines joined.
fn prelude_line() -> &'static str {
    static LINE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    LINE.get_or_init(|| {
        PRELUDE
            .lines()
            .map(|l| l.split("--").next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    })
}

fn source_hash(s: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

/// A Lua error as one line: the message, which starts with `file:line:` for errors raised
/// in the script.
fn describe(e: &mlua::Error) -> String {
    match e {
        mlua::Error::CallbackError { cause, .. } => describe(cause),
        mlua::Error::MemoryError(m) => format!("out of memory: {m}"),
        other => other
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
    }
}

impl Vm {
    /// This thread's VM for `spec`'s script, loading it on first use.
    pub(super) fn for_thread(spec: &LuaSpec) -> Result<Rc<Vm>, String> {
        let key = VmKey {
            path: spec.path.clone(),
            source: source_hash(&spec.source),
            time_limit: spec.time_limit,
            memory_limit: spec.memory_limit,
        };
        if let Some(vm) = VMS.with(|m| m.borrow().get(&key).and_then(Weak::upgrade)) {
            return Ok(vm);
        }
        let vm = Rc::new(Vm::load(&spec.path, &spec.source, spec.time_limit, spec.memory_limit)?.0);
        VMS.with(|m| {
            let mut m = m.borrow_mut();
            m.retain(|_, v| v.strong_count() > 0);
            m.insert(key, Rc::downgrade(&vm));
        });
        Ok(vm)
    }

    fn load(
        path: &Path,
        source: &str,
        time_limit: Duration,
        memory_limit: usize,
    ) -> Result<(Vm, ScriptInfo), String> {
        let libs = StdLib::TABLE
            | StdLib::STRING
            | StdLib::MATH
            | StdLib::BIT
            | StdLib::UTF8
            | StdLib::BUFFER;
        let lua = Lua::new_with(libs, LuaOptions::default()).map_err(|e| describe(&e))?;
        let setup = || -> mlua::Result<()> {
            lua.set_compiler(mlua::chunk::Compiler::new().set_optimization_level(2));
            let g = lua.globals();
            for name in [
                "require",
                "loadstring",
                "getfenv",
                "setfenv",
                "collectgarbage",
                "newproxy",
                "os",
                "debug",
            ] {
                g.raw_set(name, Value::Nil)?;
            }
            let sy = lua.create_table()?;
            sy.raw_set("find", lua.create_function(super::host::find)?)?;
            sy.raw_set("header", lua.create_function(super::host::header)?)?;
            sy.raw_set("RECORDS", OUT_RECORDS)?;
            g.raw_set("sy", sy)?;
            // From here on the libraries and `sy` are read-only for the script.
            lua.sandbox(true)?;
            Ok(())
        };
        setup().map_err(|e| format!("cannot set up the script VM: {}", describe(&e)))?;
        lua.set_memory_limit(memory_limit)
            .map_err(|e| describe(&e))?;
        super::interrupt::install(&lua).map_err(|e| describe(&e))?;
        let name = format!("@{}", path.display());
        super::interrupt::arm(time_limit.max(Duration::from_millis(100)));
        // The helpers go on the script's first line: same chunk (so they can be inlined),
        // same line numbers.
        let module: mlua::Result<Table> = lua
            .load(format!("{} {source}", prelude_line()))
            .set_name(name)
            .eval();
        super::interrupt::disarm();
        let module = module.map_err(|e| describe(&e))?;
        let scan: Function = match module.raw_get("scan") {
            Ok(Value::Function(f)) => f,
            _ => {
                return Err(format!(
                    "{}: the script must return a table with a `scan` function",
                    path.display()
                ))
            }
        };
        let optional = |name: &str| match module.raw_get(name) {
            Ok(Value::Function(f)) => Ok(Some(f)),
            Ok(Value::Nil) => Ok(None),
            _ => Err(format!("{}: `{name}` must be a function", path.display())),
        };
        let answers = optional("answers")?;
        let error_reply = optional("error_reply")?;
        let local_reply = optional("local_reply")?;
        let mut info = read_info(path, &module, answers.is_some())?;
        info.has_error_reply = error_reply.is_some();
        info.error_reply_gets_request = error_reply
            .as_ref()
            .is_some_and(|f| f.info().num_params >= 4);
        info.has_local_reply = local_reply.is_some();
        let input = lua
            .create_buffer_with_capacity(64 << 10)
            .map_err(|e| describe(&e))?;
        let output = lua
            .create_buffer_with_capacity(OUT_RECORDS * RECORD)
            .map_err(|e| describe(&e))?;
        let vm = Vm {
            lua,
            scan,
            answers,
            error_reply,
            local_reply,
            input: RefCell::new(input),
            input_len: Cell::new(64 << 10),
            output,
            records: RefCell::new(vec![0; OUT_RECORDS * RECORD]),
            time_limit,
            breaker: RefCell::new(Breaker::default()),
            path: path.to_path_buf(),
        };
        Ok((vm, info))
    }

    /// Why the script is not being called now, if it is suspended; `announce` is true the
    /// first time this is asked during a suspension (so it is logged once).
    pub(super) fn suspension(&self) -> Option<(String, bool)> {
        let reason = self.suspended_because()?;
        let announce = !std::mem::replace(&mut self.breaker.borrow_mut().announced, true);
        Some((reason, announce))
    }

    fn suspended_because(&self) -> Option<String> {
        let b = self.breaker.borrow();
        let now = std::time::Instant::now();
        let until = b.until.filter(|_| b.suspended(now))?;
        Some(format!(
            "script {} is suspended for {:.1?} more after {FAILURES_TO_SUSPEND} failed calls in a row (last: {})",
            self.path.display(),
            until - now,
            b.last_error
        ))
    }

    /// Runs the script's framing function over `data`; a suspended script is not called.
    pub(super) fn call(&self, direction: Direction, data: &[u8]) -> Result<Call<'_>, CodecError> {
        if let Some(reason) = self.suspended_because() {
            return Err(CodecError::Script(reason));
        }
        let r = self.call_script(direction, data);
        match &r {
            Err(CodecError::Script(e)) => {
                let started = self
                    .breaker
                    .borrow_mut()
                    .failure(std::time::Instant::now(), e);
                if let Some(d) = started {
                    tracing::error!(
                        script = %self.path.display(),
                        suspended_for = ?d,
                        last_error = %e,
                        "protocol script failed {FAILURES_TO_SUSPEND} calls in a row: not calling it for a while; its listeners refuse new connections meanwhile"
                    );
                }
            }
            // A verdict on the input (the client's fault) or a good call.
            _ => self.breaker.borrow_mut().success(),
        }
        r
    }

    fn call_script(&self, direction: Direction, data: &[u8]) -> Result<Call<'_>, CodecError> {
        let script = |m: String| CodecError::Script(m);
        if data.len() > self.input_len.get() {
            let size = data.len().next_power_of_two();
            let b = self
                .lua
                .create_buffer_with_capacity(size)
                .map_err(|e| script(describe(&e)))?;
            *self.input.borrow_mut() = b;
            self.input_len.set(size);
        }
        let input = self.input.borrow().clone();
        input.write_bytes(0, data);
        let f = match (direction, &self.answers) {
            (Direction::Answers, Some(a)) => a,
            _ => &self.scan,
        };
        super::interrupt::arm(call_limit(self.time_limit, data.len()));
        let r: mlua::Result<(Value, Value)> = f.call((input, data.len(), self.output.clone()));
        super::interrupt::disarm();
        let (first, second) = r.map_err(|e| {
            // Free what the failed call left behind (after running out of memory, the
            // next call must not inherit the garbage).
            let _ = self.lua.gc_collect();
            script(format!("script error: {}", describe(&e)))
        })?;
        let number = |v: &Value| match v {
            Value::Integer(i) => Some(*i as f64),
            Value::Number(n) => Some(*n),
            _ => None,
        };
        let count = match (&first, number(&first)) {
            (Value::Nil, _) => {
                let reason = match &second {
                    Value::String(s) => s.to_string_lossy().to_string(),
                    _ => "no reason given".to_string(),
                };
                return Err(CodecError::Rejected(reason));
            }
            (_, Some(n)) if n >= 0.0 && n <= OUT_RECORDS as f64 && n.fract() == 0.0 => n as usize,
            _ => {
                return Err(script(format!(
                    "script returned {first:?} instead of a frame count from 0 to {OUT_RECORDS}"
                )))
            }
        };
        let need = number(&second).filter(|n| *n >= 1.0).map(|n| n as usize);
        {
            use std::io::Read;
            let mut records = self.records.borrow_mut();
            self.output
                .clone()
                .cursor()
                .read_exact(&mut records[..count * RECORD])
                .map_err(|e| script(format!("reading the frame records: {e}")))?;
        }
        Ok(Call {
            records: std::cell::Ref::map(self.records.borrow(), |r| &r[..count * RECORD]),
            need,
        })
    }
}

impl Vm {
    /// Calls the script's `error_reply(id, key, reason, request)` under the time limit: the
    /// bytes it returns, `None` if it has no such function or returns nil, or why it failed.
    pub(super) fn error_reply(
        &self,
        f: &crate::frame::Failure<'_>,
    ) -> Result<Option<bytes::Bytes>, String> {
        let Some(func) = self.error_reply.as_ref() else {
            return Ok(None);
        };
        let call = || -> mlua::Result<Value> {
            let id = f.id.map(|b| self.lua.create_string(b)).transpose()?;
            let key = f.key.map(|b| self.lua.create_string(b)).transpose()?;
            let request = f.request.map(|b| self.lua.create_string(b)).transpose()?;
            super::interrupt::arm(self.time_limit);
            let r = func.call::<Value>((id, key, f.reason, request));
            super::interrupt::disarm();
            r
        };
        self.string_result("error_reply", call())
    }

    /// Calls the script's `local_reply(frame)` under the time limit: the answer it returns,
    /// `None` for nil (nothing is sent back), or why it failed.
    pub(super) fn local_reply(&self, frame: &[u8]) -> Result<Option<bytes::Bytes>, String> {
        let Some(func) = self.local_reply.as_ref() else {
            return Ok(None);
        };
        let call = || -> mlua::Result<Value> {
            let frame = self.lua.create_string(frame)?;
            super::interrupt::arm(self.time_limit);
            let r = func.call::<Value>(frame);
            super::interrupt::disarm();
            r
        };
        self.string_result("local_reply", call())
    }

    /// What a host-called function (`error_reply`, `local_reply`) returned: a string's
    /// bytes, `None` for nil or false, else why not.
    fn string_result(
        &self,
        name: &str,
        r: mlua::Result<Value>,
    ) -> Result<Option<bytes::Bytes>, String> {
        let script = self.path.display();
        match r {
            Ok(Value::String(s)) => Ok(Some(bytes::Bytes::copy_from_slice(&s.as_bytes()))),
            Ok(Value::Nil) | Ok(Value::Boolean(false)) => Ok(None),
            Ok(other) => Err(format!(
                "{script}: {name} returned {} instead of a string or nil",
                other.type_name()
            )),
            Err(e) => {
                let _ = self.lua.gc_collect();
                Err(format!("{script}: {name} failed: {}", describe(&e)))
            }
        }
    }
}

fn read_info(path: &Path, module: &Table, has_answers: bool) -> Result<ScriptInfo, String> {
    let field = |name: &str| -> Result<Option<String>, String> {
        match module.raw_get::<Value>(name) {
            Ok(Value::Nil) => Ok(None),
            Ok(Value::String(s)) => Ok(Some(s.to_string_lossy().to_string())),
            _ => Err(format!("{}: `{name}` must be a string", path.display())),
        }
    };
    let correlation = field("correlation")?;
    if let Some(c) = &correlation {
        if !["in_order", "by_id", "by_id_as_sent", "none"].contains(&c.as_str()) {
            return Err(format!(
                "{}: correlation `{c}` must be in_order, by_id, by_id_as_sent or none",
                path.display()
            ));
        }
    }
    let id_format = match field("id_format")?.as_deref() {
        None | Some("binary") => IdFormat::Binary,
        Some("text") => IdFormat::Text,
        Some(o) => {
            return Err(format!(
                "{}: id_format `{o}` must be binary or text",
                path.display()
            ))
        }
    };
    let id_width = match module.raw_get::<Value>("id_width") {
        Ok(Value::Nil) => 4,
        Ok(Value::Integer(n)) if (1..=8).contains(&n) => n as usize,
        Ok(Value::Number(n)) if (1.0..=8.0).contains(&n) && n.fract() == 0.0 => n as usize,
        _ => return Err(format!("{}: id_width must be 1 to 8", path.display())),
    };
    Ok(ScriptInfo {
        correlation,
        id_format,
        id_width,
        has_answers,
        has_error_reply: false,
        error_reply_gets_request: false,
        has_local_reply: false,
    })
}

/// Loads and runs a script once, as `switchyard check` and config loading do, and returns
/// what it declares; errors carry the file and line.
pub fn inspect(
    path: &Path,
    source: &str,
    time_limit: Duration,
    memory_limit: usize,
) -> Result<ScriptInfo, String> {
    Vm::load(path, source, time_limit, memory_limit).map(|(_, info)| info)
}
