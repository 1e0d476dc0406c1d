//! The per-call time limit, enforced from Luau's interrupt callback, which fires at every
//! safepoint (loop back-edges, calls and returns) including inside native code.
//!
//! The limit counts the CPU time the worker thread spends in the call, not wall time: a
//! worker the kernel preempts mid-call (a busy machine, more threads than cores) must not
//! fail a healthy script. The cheap wall clock is what the safepoints read; only once the
//! wall-clock deadline has passed is the thread's CPU clock read, and the deadline moved by
//! what the call has not used of its limit.
//!
//! Reading the thread's CPU clock is a real system call (about 0.3 µs here; Linux has no
//! vDSO path for it), too dear for every call. So a call does not read it when it starts:
//! it reuses the thread's last reading if that is younger than an eighth of the limit, and
//! subtracts the wall time since that reading from what it measures (the thread cannot have
//! run longer than that in between). The measure is therefore never above the CPU time the
//! call really used, so a healthy script is never failed by it, and a runaway one is stopped
//! at most an eighth of its limit late.
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

/// The running call's limit on this thread.
#[derive(Debug, Clone, Copy)]
struct Armed {
    /// Wall-clock instant after which the CPU clock is consulted.
    check_at: Instant,
    /// The limit for the call.
    limit: Duration,
    /// A reading of the thread's CPU clock taken at or before the call began.
    cpu_start: Duration,
    /// Wall time between that reading and the call's start: at most this much of
    /// `now - cpu_start` was spent before the call.
    slack: Duration,
}

/// A reading of this thread's CPU clock and the wall-clock instant just before it.
#[derive(Debug, Clone, Copy)]
struct Reading {
    at: Instant,
    cpu: Duration,
}

thread_local! {
    /// The running call's limit on this thread (one script call runs at a time per
    /// thread).
    static DEADLINE: Cell<Option<Armed>> = const { Cell::new(None) };
    static TICKS: Cell<u32> = const { Cell::new(0) };
    /// The last reading of this thread's CPU clock, shared by the calls that follow it.
    static LAST: Cell<Option<Reading>> = const { Cell::new(None) };
}

/// Reads this thread's CPU clock now and keeps the reading for the calls that follow.
fn read_now(at: Instant) -> Reading {
    let r = Reading {
        at,
        cpu: thread_cpu(),
    };
    LAST.with(|l| l.set(Some(r)));
    r
}

/// This thread's CPU time so far.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID exists on every
    // Linux this runs on. On failure `ts` stays zero, which only makes the limit lenient.
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Whether the armed call has used up its limit now; if not, moves its wall-clock check to
/// the earliest instant it could have.
fn exceeded(now: Instant) -> Option<Duration> {
    let armed = DEADLINE.with(|d| d.get())?;
    if now <= armed.check_at {
        return None;
    }
    let used = read_now(now)
        .cpu
        .saturating_sub(armed.cpu_start)
        .saturating_sub(armed.slack);
    if used >= armed.limit {
        return Some(armed.limit);
    }
    // Preempted for a while: the call still has `limit - used` of CPU time.
    DEADLINE.with(|d| {
        d.set(Some(Armed {
            check_at: now + (armed.limit - used),
            ..armed
        }))
    });
    None
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
    let now = Instant::now();
    let fresh = LAST
        .with(|l| l.get())
        .filter(|r| now.saturating_duration_since(r.at) <= limit / 8);
    let reading = fresh.unwrap_or_else(|| read_now(now));
    let armed = Armed {
        check_at: now + limit,
        limit,
        cpu_start: reading.cpu,
        slack: now.saturating_duration_since(reading.at),
    };
    DEADLINE.with(|d| d.set(Some(armed)));
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
    let Some(limit) = exceeded(Instant::now()) else {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Time the thread does not run (preempted, here: asleep) does not count; time it
    /// spends computing does.
    #[test]
    fn the_limit_counts_cpu_time_not_wall_time() {
        let limit = Duration::from_millis(5);
        arm(limit);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(exceeded(Instant::now()), None, "asleep is not running");
        let moved = DEADLINE.with(|d| d.get()).expect("still armed").check_at;
        assert!(moved > Instant::now(), "the wall-clock check moved on");
        let spin = Instant::now();
        let mut x = 0u64;
        let mut over = None;
        while spin.elapsed() < Duration::from_secs(2) && over.is_none() {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            over = exceeded(Instant::now());
        }
        std::hint::black_box(x);
        disarm();
        assert_eq!(over, Some(limit), "5 ms of computing exceeds the limit");
        // The CPU time of arming and sleeping (microseconds) counts too.
        let spun = spin.elapsed();
        assert!(
            spun >= limit * 9 / 10,
            "not before the limit is used: {spun:?}"
        );
    }

    /// A call that reuses an earlier reading of the CPU clock is not charged for the CPU
    /// time spent between that reading and its start.
    #[test]
    fn a_shared_reading_does_not_charge_earlier_work() {
        let spin_for = |d: Duration| {
            let t = Instant::now();
            let mut x = 0u64;
            while t.elapsed() < d {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            std::hint::black_box(x);
        };
        let limit = Duration::from_millis(80);
        LAST.with(|l| l.set(None));
        arm(limit);
        disarm();
        let first = LAST
            .with(|l| l.get())
            .expect("the first call reads the clock");
        spin_for(Duration::from_millis(9));
        arm(limit);
        let armed = DEADLINE.with(|d| d.get()).expect("armed");
        if Instant::now().saturating_duration_since(first.at) <= limit / 8 {
            assert_eq!(armed.cpu_start, first.cpu, "the reading is reused");
            assert!(armed.slack >= Duration::from_millis(9));
        }
        // 75 ms of computing, less than the limit, however much ran before the call (without
        // the slack, the 9 ms before it would count and make 84).
        spin_for(Duration::from_millis(75));
        let t = armed.check_at + Duration::from_millis(1);
        assert_eq!(exceeded(t), None, "75 ms of 80 are not over the limit");
        disarm();
    }
}
