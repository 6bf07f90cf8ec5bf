//! The rounds of a run side by side: per scenario, target and concurrency, the median and range over
//! rounds of a value, and of a comparison made within each round (paired), which the box's drift between
//! rounds moves far less than a ratio of two medians.

use crate::report::Row;
use crate::stats::{spread, Spread};

/// The measured windows of every round of one run.
pub struct RoundsView<'a>(pub &'a [Row]);

impl<'a> RoundsView<'a> {
    fn windows<'b>(&'b self, scenario: &'b str, target: &'b str, c: usize) -> impl Iterator<Item = &'a Row> + 'b {
        self.0.iter().filter(move |r| r.scenario == scenario && r.target == target && r.concurrency == c)
    }

    /// Whether `target` was measured at `c` in `scenario` in any round.
    pub fn ran(&self, scenario: &str, target: &str, c: usize) -> bool {
        self.windows(scenario, target, c).next().is_some()
    }

    /// Median and range over rounds of `f` of the target's windows (rounds where `f` is `None` are left out).
    pub fn each(&self, scenario: &str, target: &str, c: usize, f: impl Fn(&Row) -> Option<f64>) -> Option<Spread> {
        spread(self.windows(scenario, target, c).filter_map(f))
    }

    /// Median and range over rounds of `f(target's window, other's window of the same round)`; a round that
    /// lacks either, or where `f` is `None`, is left out.
    pub fn paired(
        &self,
        scenario: &str,
        target: &str,
        other: &str,
        c: usize,
        f: impl Fn(&Row, &Row) -> Option<f64>,
    ) -> Option<Spread> {
        spread(self.windows(scenario, target, c).filter_map(|t| {
            let o = self.windows(scenario, other, c).find(|o| o.round == t.round)?;
            f(t, o)
        }))
    }

    /// Errors over all rounds.
    pub fn errors(&self, scenario: &str, target: &str, c: usize) -> u64 {
        self.windows(scenario, target, c).map(|r| r.summary.errors).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{rps_ratio, RunSummary};

    fn row(target: &'static str, round: usize, rps: f64) -> Row {
        Row {
            scenario: "non-stream",
            stream: false,
            target,
            concurrency: 32,
            round,
            summary: RunSummary {
                requests: rps as usize,
                errors: 1,
                rps,
                p50_us: Some(1e6 / rps),
                p99_us: None,
                ttfb_p50_us: None,
                ttfb_p99_us: None,
            },
            cpu_s: None,
        }
    }

    #[test]
    fn paired_ratios_follow_the_round_not_the_median() {
        // The box slows down in round 1 for both; the paired ratio stays at 0.5 while the ratio of the
        // medians (6000 ÷ 10000 = 0.6) would not.
        let rows = [
            row("bare", 0, 10_000.0),
            row("tollgate", 0, 5_000.0),
            row("tollgate", 1, 2_000.0),
            row("bare", 1, 4_000.0),
            row("bare", 2, 12_000.0),
            row("tollgate", 2, 6_000.0),
        ];
        let v = RoundsView(&rows);
        let rps = v.each("non-stream", "tollgate", 32, |r| Some(r.summary.rps)).unwrap();
        assert_eq!((rps.n, rps.median, rps.min, rps.max), (3, 5_000.0, 2_000.0, 6_000.0));
        let of_bare = v.paired("non-stream", "tollgate", "bare", 32, |t, b| rps_ratio(t.summary.rps, b.summary.rps));
        let of_bare = of_bare.unwrap();
        assert_eq!((of_bare.n, of_bare.median, of_bare.min, of_bare.max), (3, 0.5, 0.5, 0.5));
        assert_eq!(v.errors("non-stream", "tollgate", 32), 3);
        assert!(v.ran("non-stream", "bare", 32));
        assert!(!v.ran("non-stream", "bare", 1));
        assert!(!v.ran("stream", "bare", 32));
    }

    #[test]
    fn a_round_missing_one_side_is_left_out() {
        let rows = [row("bare", 0, 1_000.0), row("tollgate", 0, 900.0), row("tollgate", 1, 100.0)];
        let v = RoundsView(&rows);
        let r = v.paired("non-stream", "tollgate", "bare", 32, |t, b| rps_ratio(t.summary.rps, b.summary.rps));
        assert_eq!(r.map(|s| (s.n, s.median)), Some((1, 0.9)));
        assert_eq!(v.paired("non-stream", "tollgate", "before", 32, |_, _| Some(1.0)), None);
        // p99 is None in every window: nothing to summarize.
        assert_eq!(v.each("non-stream", "tollgate", 32, |r| r.summary.p99_us), None);
    }
}
