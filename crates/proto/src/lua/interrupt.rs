//! The per-call time limit, enforced from Luau's interrupt callback, which fires at every
//! safepoint (loop back-edges, calls and returns) including inside native code.
//!
//! This is the crate's only `unsafe` code, for speed: mlua's safe `Lua::set_interrupt` wraps
//! every safepoint in a protected Rust callback. Measured with `switchyard bench --script
//! examples/scripts/binary64.lua` (2 rounds × 2 s, 8 × 32 pipelined 64 B messages): the
//! proxy with the script reached 0.73× the native codec's messages/s through mlua's
//! interrupt, and 0.92× with no interrupt at all; the raw callback below costs next to
//! nothing on top of the latter (figures in BENCHMARKS.md).

#![allow(unsafe_code)]

use mlua::ffi::{self, lua_State};
use mlua::Lua;
use std::cell::Cell;
use std::os::raw::c_int;
use std::time::{Duration, Instant};

/// Safepoints between two clock reads.
const CHECK_EVERY: u32 = 64;

thread_local! {
    /// The running call's deadline on this thread (one script call runs at a time per
    /// thread), and its limit for the message.
    static DEADLINE: Cell<Option<(Instant, Duration)>> = const { Cell::new(None) };
    static TICKS: Cell<u32> = const { Cell::new(0) };
}

/// Installs the interrupt on `lua`.
pub(super) fn install(lua: &Lua) -> mlua::Result<()> {
    // SAFETY: `exec_raw` hands us this VM's main state. We write only the `interrupt` field
    // of its callback table, which mlua leaves alone unless `Lua::set_interrupt` is called,
    // and this crate never calls it.
    unsafe {
        lua.exec_raw::<()>((), |state| {
            (*ffi::lua_callbacks(state)).interrupt = Some(on_interrupt);
        })
    }
}

/// Arms the limit for the call about to run on this thread.
pub(super) fn arm(limit: Duration) {
    TICKS.with(|t| t.set(0));
    DEADLINE.with(|d| d.set(Some((Instant::now() + limit, limit))));
}

/// Disarms it after the call.
pub(super) fn disarm() {
    DEADLINE.with(|d| d.set(None));
}

/// Raises a Lua error ("file:line: time limit … exceeded") once the deadline has passed.
///
/// # Safety
/// Called by Luau at a safepoint of `state`, where raising an error is allowed: Luau
/// unwinds to the protected call mlua made. No Rust value with a destructor is alive when
/// `lua_error` is reached.
unsafe extern "C-unwind" fn on_interrupt(state: *mut lua_State, gc: c_int) {
    // Garbage-collector steps also interrupt (gc >= 0): not a place to stop.
    if gc >= 0 {
        return;
    }
    let t = TICKS.with(|t| {
        let v = t.get().wrapping_add(1);
        t.set(v);
        v
    });
    if t % CHECK_EVERY != 0 {
        return;
    }
    let Some(limit) = DEADLINE
        .with(|d| d.get())
        .and_then(|(at, limit)| (Instant::now() > at).then_some(limit))
    else {
        return;
    };
    // Disarm first: the error handler may run Lua code.
    DEADLINE.with(|d| d.set(None));
    // SAFETY: `state` is the interrupted state; the stack has room for the two strings
    // (Luau keeps LUA_MINSTACK free at safepoints), and the message is copied into Lua
    // before the Rust String is dropped, so nothing needs dropping when `lua_error` unwinds.
    unsafe {
        ffi::luaL_where(state, 0);
        let msg = format!("time limit {limit:?} exceeded");
        ffi::lua_pushlstring(state, msg.as_ptr().cast(), msg.len());
        drop(msg);
        ffi::lua_concat(state, 2);
        ffi::lua_error(state);
    }
}
