//! Active health: consecutive probe results against `rise` and `fall`.

/// The running verdict of one backend's probes.
#[derive(Debug, Clone)]
pub struct Verdict {
    rise: u32,
    fall: u32,
    passes: u32,
    fails: u32,
}

/// What one probe result changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing: the backend stays as it was.
    Same,
    /// `rise` passes in a row: back in service.
    BackInService,
    /// `fall` failures in a row: out of service.
    OutOfService,
}

impl Verdict {
    /// Counting towards `rise` consecutive passes and `fall` consecutive failures.
    pub fn new(rise: u32, fall: u32) -> Self {
        Verdict {
            rise,
            fall,
            passes: 0,
            fails: 0,
        }
    }

    /// Records one probe of a backend now `healthy` (or not); says whether that flips it.
    pub fn record(&mut self, passed: bool, healthy: bool) -> Change {
        if passed {
            self.passes += 1;
            self.fails = 0;
            if !healthy && self.passes >= self.rise {
                return Change::BackInService;
            }
        } else {
            self.fails += 1;
            self.passes = 0;
            if healthy && self.fails >= self.fall {
                return Change::OutOfService;
            }
        }
        Change::Same
    }

    /// Consecutive passes so far.
    pub fn passes(&self) -> u32 {
        self.passes
    }

    /// Consecutive failures so far.
    pub fn fails(&self) -> u32 {
        self.fails
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fall_takes_out_rise_brings_back() {
        let mut v = Verdict::new(2, 3);
        assert_eq!(v.record(false, true), Change::Same);
        assert_eq!(v.record(false, true), Change::Same);
        assert_eq!(
            v.record(true, true),
            Change::Same,
            "a pass resets the streak"
        );
        assert_eq!(v.record(false, true), Change::Same);
        assert_eq!(v.record(false, true), Change::Same);
        assert_eq!(v.record(false, true), Change::OutOfService);
        assert_eq!(v.record(true, false), Change::Same);
        assert_eq!(v.record(true, false), Change::BackInService);
    }
}
