//! A circuit breaker per target: closed (calls pass) → open after `consecutive_failures` failures in a
//! row, or an error rate of `error_rate_percent` over at least `min_requests` calls in the window →
//! after `cooldown_ms`, half-open: exactly one probe call passes; its success closes the breaker, its
//! failure opens it for another cool-down, and a probe that ends neither way (the client's own 400, a
//! hang-up) lets the next call probe instead.

use crate::config::BreakerConfig;
use crate::routing::window::Window;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How an attempt ended, for the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Success,
    Failure,
    /// Says nothing about the target's health.
    Neutral,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }

    /// The gauge value in `/metrics`.
    pub fn code(self) -> u8 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: State,
    open_until: Instant,
    probe_in_flight: bool,
    consecutive: u32,
    /// (calls, failures).
    window: Window,
}

#[derive(Debug)]
pub struct Breaker {
    cfg: BreakerConfig,
    enabled: bool,
    inner: Mutex<Inner>,
    /// Times it opened.
    pub opened: AtomicU64,
}

impl Breaker {
    pub fn new(cfg: BreakerConfig) -> Breaker {
        let enabled = cfg.consecutive_failures > 0 || cfg.error_rate_percent > 0;
        let inner = Inner {
            state: State::Closed,
            open_until: Instant::now(),
            probe_in_flight: false,
            consecutive: 0,
            window: Window::new(cfg.window_ms),
        };
        Breaker { cfg, enabled, inner: Mutex::new(inner), opened: AtomicU64::new(0) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a call may go to this target now; in half-open state only the one probe may.
    pub fn try_pass(&self, now: Instant) -> bool {
        if !self.enabled {
            return true;
        }
        let mut g = self.lock();
        match g.state {
            State::Closed => true,
            State::Open if now >= g.open_until => {
                g.state = State::HalfOpen;
                g.probe_in_flight = true;
                true
            }
            State::Open => false,
            State::HalfOpen if g.probe_in_flight => false,
            State::HalfOpen => {
                g.probe_in_flight = true;
                true
            }
        }
    }

    /// Records how a call that passed ended.
    pub fn record(&self, verdict: Verdict, now: Instant) {
        if !self.enabled {
            return;
        }
        let mut g = self.lock();
        match verdict {
            Verdict::Neutral => {
                if g.state == State::HalfOpen {
                    g.probe_in_flight = false;
                }
                return;
            }
            Verdict::Success => {
                g.window.add(now, 1, 0);
                g.consecutive = 0;
                if g.state == State::HalfOpen {
                    g.state = State::Closed;
                    g.probe_in_flight = false;
                    g.window.clear();
                }
            }
            Verdict::Failure => {
                g.window.add(now, 1, 1);
                g.consecutive = g.consecutive.saturating_add(1);
                let (calls, failed) = g.window.sum(now);
                let by_count = self.cfg.consecutive_failures > 0 && g.consecutive >= self.cfg.consecutive_failures;
                let by_rate = self.cfg.error_rate_percent > 0
                    && calls >= u64::from(self.cfg.min_requests.max(1))
                    && failed * 100 >= calls * u64::from(self.cfg.error_rate_percent);
                let trip = match g.state {
                    State::HalfOpen => true,
                    State::Closed => by_count || by_rate,
                    // A call admitted before the breaker opened ends late: nothing changes.
                    State::Open => false,
                };
                if trip {
                    g.state = State::Open;
                    g.open_until = now + Duration::from_millis(self.cfg.cooldown_ms);
                    g.probe_in_flight = false;
                    g.consecutive = 0;
                    self.opened.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// The state as shown (an open breaker past its cool-down shows half-open: the next call probes).
    pub fn state(&self, now: Instant) -> State {
        if !self.enabled {
            return State::Closed;
        }
        let g = self.lock();
        match g.state {
            State::Open if now >= g.open_until => State::HalfOpen,
            s => s,
        }
    }

    /// (calls, failures) in the window.
    pub fn recent(&self, now: Instant) -> (u64, u64) {
        self.lock().window.sum(now)
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(consecutive: u32, rate: u32) -> Breaker {
        Breaker::new(BreakerConfig {
            consecutive_failures: consecutive,
            error_rate_percent: rate,
            min_requests: 4,
            window_ms: 10_000,
            cooldown_ms: 100,
        })
    }

    #[test]
    fn opens_after_consecutive_failures_then_probes_once_and_closes() {
        let b = breaker(3, 0);
        let t = Instant::now();
        for _ in 0..2 {
            assert!(b.try_pass(t));
            b.record(Verdict::Failure, t);
        }
        b.record(Verdict::Success, t);
        for _ in 0..3 {
            assert!(b.try_pass(t));
            b.record(Verdict::Failure, t);
        }
        assert_eq!(b.state(t), State::Open);
        assert!(!b.try_pass(t + Duration::from_millis(50)));
        let later = t + Duration::from_millis(150);
        assert!(b.try_pass(later), "the probe passes");
        assert!(!b.try_pass(later), "only one probe at a time");
        b.record(Verdict::Neutral, later);
        assert!(b.try_pass(later), "a neutral probe lets the next call probe");
        b.record(Verdict::Failure, later);
        assert_eq!(b.state(later), State::Open);
        let again = later + Duration::from_millis(150);
        assert!(b.try_pass(again));
        b.record(Verdict::Success, again);
        assert_eq!(b.state(again), State::Closed);
        assert_eq!(b.opened.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn opens_on_error_rate_over_min_requests() {
        let b = breaker(0, 50);
        let t = Instant::now();
        b.record(Verdict::Failure, t);
        b.record(Verdict::Success, t);
        b.record(Verdict::Failure, t);
        assert_eq!(b.state(t), State::Closed, "3 calls are under min_requests");
        b.record(Verdict::Failure, t);
        assert_eq!(b.state(t), State::Open);
        assert!(breaker(0, 0).try_pass(t) && !breaker(0, 0).enabled());
    }
}
