//! Repeated log lines, throttled: a line of one kind is written at most once a second per
//! thread. Every suppressed line is counted once: in the `suppressed` field of the next line
//! of its kind written, or, if none comes within a second, in a summary line written by
//! [`flush`] ("suppressed repeated lines", with the kind and the count). A flood of clients
//! failing the same way (a looping script, a garbage sender reconnecting) then costs a few
//! lines a second instead of one each. Kinds are told apart by their text with digits
//! ignored, so "closed with 812 bytes" and "closed with 90 bytes" are one kind.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

/// At most one line of a kind this often.
const INTERVAL: Duration = Duration::from_secs(1);
/// Kinds tracked per thread; past this, kinds idle for an interval are forgotten, and if
/// none is, lines are written unthrottled rather than tracked without bound.
const MAX_KINDS: usize = 1024;

struct Seen {
    last: Instant,
    suppressed: u64,
    /// The kind, as its first line said it (for the summary).
    kind: String,
}

thread_local! {
    static SEEN: RefCell<HashMap<u64, Seen>> = RefCell::new(HashMap::new());
}

fn kind_of(parts: &[&str]) -> u64 {
    let mut h = FIXED.with(|s| s.build_hasher());
    for p in parts {
        for b in p.bytes().filter(|b| !b.is_ascii_digit()) {
            h.write_u8(b);
        }
        h.write_u8(0);
    }
    h.finish()
}

thread_local! {
    /// The hasher's keys, per thread (kinds are per thread too).
    static FIXED: std::collections::hash_map::RandomState = Default::default();
}

/// Whether a line of the kind named by `parts` may be written now: `Some(n)`, with the
/// number of lines of its kind suppressed since the last one written, or `None` (counted as
/// suppressed).
pub(crate) fn admit(parts: &[&str]) -> Option<u64> {
    let kind = kind_of(parts);
    let now = Instant::now();
    SEEN.with(|seen| {
        let mut seen = seen.borrow_mut();
        if let Some(s) = seen.get_mut(&kind) {
            if now.duration_since(s.last) < INTERVAL {
                s.suppressed += 1;
                return None;
            }
            let n = std::mem::take(&mut s.suppressed);
            s.last = now;
            return Some(n);
        }
        if seen.len() >= MAX_KINDS {
            seen.retain(|_, s| now.duration_since(s.last) < INTERVAL);
            if seen.len() >= MAX_KINDS {
                return Some(0);
            }
        }
        seen.insert(
            kind,
            Seen {
                last: now,
                suppressed: 0,
                kind: parts.join(": "),
            },
        );
        Some(0)
    })
}

/// Reports the lines suppressed more than a second ago that no later line of their kind
/// has reported, one summary line per kind. Each worker calls it once a second.
pub(crate) fn flush() {
    let now = Instant::now();
    let due: Vec<(String, u64)> = SEEN.with(|seen| {
        seen.borrow_mut()
            .values_mut()
            .filter(|s| s.suppressed > 0 && now.duration_since(s.last) >= INTERVAL)
            .map(|s| {
                s.last = now;
                (s.kind.clone(), std::mem::take(&mut s.suppressed))
            })
            .collect()
    });
    for (kind, suppressed) in due {
        tracing::warn!(%kind, suppressed, "suppressed repeated lines");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_of_a_kind_a_second_with_the_count_of_the_rest() {
        assert_eq!(admit(&["l", "closed with 812 bytes"]), Some(0));
        for _ in 0..50 {
            assert_eq!(admit(&["l", "closed with 90 bytes"]), None);
        }
        // Another kind, or the same reason on another listener, is not held back.
        assert_eq!(admit(&["l", "script error"]), Some(0));
        assert_eq!(admit(&["m", "closed with 1 bytes"]), Some(0));
        std::thread::sleep(INTERVAL);
        assert_eq!(admit(&["l", "closed with 7 bytes"]), Some(50));
        assert_eq!(admit(&["l", "closed with 7 bytes"]), None);
    }

    #[test]
    fn what_no_later_line_reports_the_summary_does() {
        assert_eq!(admit(&["x", "flood"]), Some(0));
        assert_eq!(admit(&["x", "flood"]), None);
        assert_eq!(admit(&["x", "flood"]), None);
        flush(); // too soon: the next line of the kind may still report them
        SEEN.with(|s| assert!(s.borrow().values().any(|v| v.suppressed == 2)));
        std::thread::sleep(INTERVAL);
        flush();
        SEEN.with(|s| assert!(s.borrow().values().all(|v| v.suppressed == 0)));
        // Reported once: the next line starts counting afresh.
        assert_eq!(admit(&["x", "flood"]), None);
    }

    #[test]
    fn kinds_are_bounded() {
        for i in 0..(MAX_KINDS * 3) {
            let k = format!("kind {}", char::from_u32(0x100 + i as u32).unwrap());
            assert_eq!(admit(&[&k]), Some(0));
        }
        SEEN.with(|s| assert!(s.borrow().len() <= MAX_KINDS));
    }
}
