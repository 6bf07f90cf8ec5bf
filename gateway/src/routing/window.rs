//! A sliding window of two counters in ten buckets: what breakers (calls, failures) and retry budgets
//! (requests, retries) count over their last few seconds.

use std::time::Instant;

const BUCKETS: usize = 10;

#[derive(Debug)]
pub struct Window {
    base: Instant,
    bucket_ms: u64,
    /// (bucket number, a, b); a bucket whose number is stale counts as empty.
    buckets: [(u64, u64, u64); BUCKETS],
}

impl Window {
    pub fn new(window_ms: u64) -> Window {
        Window { base: Instant::now(), bucket_ms: (window_ms / BUCKETS as u64).max(1), buckets: [(0, 0, 0); BUCKETS] }
    }

    fn bucket_no(&self, now: Instant) -> u64 {
        let ms = u64::try_from(now.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX);
        ms / self.bucket_ms
    }

    /// Adds to the current bucket.
    pub fn add(&mut self, now: Instant, a: u64, b: u64) {
        let n = self.bucket_no(now);
        let slot = &mut self.buckets[(n % BUCKETS as u64) as usize];
        if slot.0 != n {
            *slot = (n, 0, 0);
        }
        slot.1 += a;
        slot.2 += b;
    }

    /// Sums over the window.
    pub fn sum(&self, now: Instant) -> (u64, u64) {
        let n = self.bucket_no(now);
        let oldest = n.saturating_sub(BUCKETS as u64 - 1);
        self.buckets
            .iter()
            .filter(|(no, _, _)| *no >= oldest && *no <= n)
            .fold((0, 0), |(a, b), (_, x, y)| (a + x, b + y))
    }

    pub fn clear(&mut self) {
        self.buckets = [(0, 0, 0); BUCKETS];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn old_buckets_fall_out_of_the_sum() {
        let mut w = Window::new(1000);
        let t0 = Instant::now();
        w.add(t0, 1, 0);
        w.add(t0 + Duration::from_millis(500), 2, 1);
        assert_eq!(w.sum(t0 + Duration::from_millis(900)), (3, 1));
        assert_eq!(w.sum(t0 + Duration::from_millis(1450)), (2, 1));
        assert_eq!(w.sum(t0 + Duration::from_millis(5000)), (0, 0));
    }
}
