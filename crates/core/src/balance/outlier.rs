//! Outlier ejection across a cluster: a backend's failures on real traffic (counted by
//! its [`crate::health::passive::Ejection`]) eject it for a period that doubles per
//! ejection, while the cluster's `max_ejected_percent` budget allows.

use super::cluster::Cluster;
use crate::clock::now_ms;
use crate::health::passive::ejection_period;

impl Cluster {
    /// One more consecutive failure (`what`) of backend `i`: ejects it when the
    /// count reaches the threshold and the cluster's ejection budget allows.
    pub fn report_failure(&self, i: usize, what: &str) {
        let Some(o) = self.settings.outlier else {
            return;
        };
        let b = &self.backends[i];
        if b.ejection.count_failure() < o.consecutive_failures {
            return;
        }
        let now = now_ms();
        if b.ejection.ejected(now) {
            return;
        }
        let ejected = self
            .backends
            .iter()
            .filter(|x| x.ejection.ejected(now))
            .count();
        let budget = self.backends.len() * o.max_ejected_percent as usize / 100;
        if ejected + 1 > budget {
            tracing::warn!(
                cluster = %self.settings.name,
                backend = %b.name,
                ejected,
                max_ejected_percent = o.max_ejected_percent,
                "outlier not ejected: the cluster's ejection budget is spent"
            );
            return;
        }
        // The period doubles with each ejection, up to max_ejection.
        let period = ejection_period(&o, b.ejection.ejections());
        b.ejection.eject(now + period);
        tracing::warn!(
            cluster = %self.settings.name,
            backend = %b.name,
            consecutive_failures = o.consecutive_failures,
            last_failure = what,
            ejected_for_ms = period,
            "backend ejected by outlier detection"
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::balance::policy::picker;
    use crate::clock::now_ms;
    use crate::testing::*;

    #[test]
    fn outliers_are_ejected_within_the_budget() {
        let c = cluster(
            "[cluster.outlier]\nconsecutive_failures = 3\nbase_ejection = \"1m\"\nmax_ejected_percent = 34",
            THREE,
        );
        let now = now_ms();
        c.report_failure(0, "reset");
        c.report_failure(0, "reset");
        assert!(!c.backends[0].ejection.ejected(now));
        c.report_failure(0, "reset");
        assert!(c.backends[0].ejection.ejected(now_ms()));
        // A second ejection would exceed 34% of 3 backends.
        for _ in 0..3 {
            c.report_failure(1, "refused");
        }
        assert!(!c.backends[1].ejection.ejected(now_ms()));
        let mut p = picker(c.settings.policy, 3, 0);
        for _ in 0..10 {
            assert_eq!(
                c.route(None, &mut *p, &|_: usize| true).backend(),
                Some(1),
                "only b is usable"
            );
        }
    }

    #[test]
    fn the_ejection_period_doubles_per_ejection_up_to_the_maximum() {
        // The documented sequence: base_ejection, then twice the last period, up to
        // max_ejection. (It once grew 4x: the ejection count was read by ejecting.)
        let c = cluster(
            "[cluster.outlier]\nconsecutive_failures = 1\nbase_ejection = \"10s\"\nmax_ejection = \"100s\"\nmax_ejected_percent = 100",
            THREE,
        );
        let b = &c.backends[0];
        let mut periods = Vec::new();
        for _ in 0..6 {
            let before = now_ms();
            c.report_failure(0, "reset");
            let until = b.ejection.until();
            // Rounded to whole seconds: the clock moves between the two reads.
            periods.push((until - before + 500) / 1000);
            b.ejection.end();
        }
        assert_eq!(periods, vec![10, 20, 40, 80, 100, 100]);
        assert_eq!(b.ejection.ejections(), 6);
    }
}
