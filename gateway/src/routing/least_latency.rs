//! `least_latency`: the target with the lowest observed p95 first: time to first token for streams,
//! latency otherwise (failed attempts count as very slow, see [`super::stats`]). A target nothing is
//! known about goes first, so every target is learned. `explore_percent` of calls go first to one of
//! the others instead, so a target that became fast again is noticed.

use super::stats::FAILURE_PENALTY_MS;
use super::weighted::splitmix64;
use super::{Route, Strategy, Who};
use crate::config::RouteSpec;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct LeastLatencyStrategy {
    explore_percent: u64,
    window: Duration,
    /// Draw counter; its SplitMix64 mix decides exploration (no lock, no RNG dependency).
    draws: AtomicU64,
}

impl LeastLatencyStrategy {
    pub fn build(spec: &RouteSpec) -> Box<dyn Strategy> {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Box::new(LeastLatencyStrategy {
            explore_percent: u64::from(spec.explore_percent),
            window: Duration::from_millis(spec.stats_window_ms),
            draws: AtomicU64::new(seed),
        })
    }
}

impl Strategy for LeastLatencyStrategy {
    fn order(&self, route: &Route, who: &Who<'_>, out: &mut Vec<usize>) {
        let now = Instant::now();
        let mut scored: Vec<(u32, usize)> = route
            .targets
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let v = t.stats.view(now, self.window);
                let score = match (who.ask.stream, v.ttft_p95_ms, v.latency_p95_ms) {
                    // A stream's wait is its first token, unless the target mostly fails.
                    (true, Some(ttft), lat) if lat.is_none_or(|l| l < FAILURE_PENALTY_MS) => ttft,
                    (_, _, lat) => lat.unwrap_or(0),
                };
                (score, i)
            })
            .collect();
        scored.sort_unstable();
        out.extend(scored.into_iter().map(|(_, i)| i));
        let draw = splitmix64(self.draws.fetch_add(1, Ordering::Relaxed));
        if out.len() > 1 && draw % 100 < self.explore_percent {
            let j = 1 + ((draw / 100) % (out.len() as u64 - 1)) as usize;
            let explored = out.remove(j);
            out.insert(0, explored);
        }
    }

    fn learns(&self) -> bool {
        true
    }
}
