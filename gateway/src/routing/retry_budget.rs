//! The retry budget of a route: retries may add at most `percent` of the route's requests in the last
//! `window_ms`, plus `min_retries` per window so a quiet route can still retry. When every target fails,
//! load on the providers grows by that fraction, not by `max_attempts` times.

use crate::config::RetryBudgetConfig;
use crate::routing::window::Window;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug)]
pub struct RetryBudget {
    cfg: RetryBudgetConfig,
    /// (requests, retries).
    window: Mutex<Window>,
    pub retries: AtomicU64,
    pub denied: AtomicU64,
}

impl RetryBudget {
    pub fn new(cfg: RetryBudgetConfig) -> RetryBudget {
        let window = Mutex::new(Window::new(cfg.window_ms));
        RetryBudget { cfg, window, retries: AtomicU64::new(0), denied: AtomicU64::new(0) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a request (its first attempt).
    pub fn request(&self, now: Instant) {
        self.lock().add(now, 1, 0);
    }

    /// Takes a retry from the budget, or says there is none left.
    pub fn try_retry(&self, now: Instant) -> bool {
        let mut w = self.lock();
        let (requests, retries) = w.sum(now);
        let allowed = u64::from(self.cfg.min_retries) + requests * u64::from(self.cfg.percent) / 100;
        if retries < allowed {
            w.add(now, 0, 1);
            drop(w);
            self.retries.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            drop(w);
            self.denied.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// (requests, retries) in the window.
    pub fn recent(&self, now: Instant) -> (u64, u64) {
        self.lock().sum(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stay_within_percent_plus_minimum() {
        let b = RetryBudget::new(RetryBudgetConfig { percent: 20, window_ms: 10_000, min_retries: 2 });
        let t = Instant::now();
        for _ in 0..100 {
            b.request(t);
        }
        let granted = (0..100).filter(|_| b.try_retry(t)).count();
        assert_eq!(granted, 2 + 20);
        assert_eq!(b.denied.load(Ordering::Relaxed), 78);
    }
}
