//! What the learning strategies know about each target: the gateway's own recent attempts (a ring of the
//! last few, fed at finish by an [`EndObserver`](crate::finish::EndObserver)) blended with the store's
//! answer to `/v1/routing-stats`, refreshed every `routing_stats_interval_ms` (the store sees every
//! gateway of a fleet; the ring reacts within a few calls).
//!
//! Blend: with `n` fresh local samples (younger than the route's `stats_window_ms`), a figure is
//! `w·local + (1-w)·store` with `w = min(n, BLEND_SAMPLES) / BLEND_SAMPLES`; without a store row it is the
//! local figure, without either it is unknown (a strategy tries unknown targets first, so it learns them).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tollgate_events::{CallEvent, Outcome};

/// Local attempts kept per target.
const RING: usize = 32;
/// Fresh local samples at which the local view alone decides.
pub const BLEND_SAMPLES: u32 = 5;
/// The latency a failed attempt counts as: a target that fails fast must not look fast.
pub const FAILURE_PENALTY_MS: u32 = 60_000;

/// One target's figures as the store reports them over its window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StoreStat {
    pub requests: u64,
    pub latency_p95_ms: u32,
    pub ttft_p95_ms: Option<u32>,
    pub mean_output_tokens: f64,
    pub error_rate: f64,
}

/// A row of the store's answer: which target it is about, and its figures.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreRow {
    pub route: String,
    pub upstream: String,
    pub model: String,
    pub stat: StoreStat,
}

pub type StatsFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<StoreRow>, String>> + Send + 'a>>;

/// Where the store's per-target statistics come from (the query service, on either engine).
pub trait RoutingStatsSource: Send + Sync + 'static {
    /// Per-target statistics over the last `window_s` seconds.
    fn routing_stats(&self, window_s: u64) -> StatsFuture<'_>;
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    latency_ms: u32,
    /// 0: no first token (not a stream, or a failure).
    ttft_ms: u32,
    output_tokens: u32,
    ok: bool,
}

#[derive(Debug, Default)]
struct Inner {
    ring: Vec<Sample>,
    next: usize,
    store: Option<StoreStat>,
}

/// A target's figures as a strategy sees them at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct View {
    /// Fresh local samples.
    pub local_samples: u32,
    /// p95 latency (failures counted as [`FAILURE_PENALTY_MS`]); `None`: nothing known yet.
    pub latency_p95_ms: Option<u32>,
    /// p95 time to first token of successful streams.
    pub ttft_p95_ms: Option<u32>,
    /// Mean output tokens of successful attempts.
    pub mean_output_tokens: Option<f64>,
}

/// Recent statistics of one target.
#[derive(Debug, Default)]
pub struct TargetStats {
    inner: Mutex<Inner>,
    /// When the store last answered for this target (µs since the epoch; 0: never).
    pub store_updated_us: AtomicI64,
}

/// Nearest-rank p95 (0-based rank ⌊0.95·n⌋, the store's definition) of `v`, which it reorders.
fn p95(v: &mut [u32]) -> Option<u32> {
    if v.is_empty() {
        return None;
    }
    let k = ((v.len() as f64 * 0.95) as usize).min(v.len() - 1);
    let (_, x, _) = v.select_nth_unstable(k);
    Some(*x)
}

fn blend(n: u32, local: Option<f64>, store: Option<f64>) -> Option<f64> {
    match (local, store) {
        (Some(l), Some(s)) => {
            let w = f64::from(n.min(BLEND_SAMPLES)) / f64::from(BLEND_SAMPLES);
            Some(w * l + (1.0 - w) * s)
        }
        (l, s) => l.or(s),
    }
}

impl TargetStats {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records how an attempt ended. Client hang-ups and rejections say nothing about the target.
    pub fn record(&self, ev: &CallEvent, now: Instant) {
        let ok = match ev.outcome {
            Outcome::Ok => true,
            Outcome::UpstreamError | Outcome::Timeout => false,
            _ => return,
        };
        let s = Sample {
            at: now,
            latency_ms: if ok { ev.latency_ms } else { ev.latency_ms.max(FAILURE_PENALTY_MS) },
            ttft_ms: if ok { ev.ttft_ms } else { 0 },
            output_tokens: u32::try_from(ev.output_tokens).unwrap_or(u32::MAX),
            ok,
        };
        let mut g = self.lock();
        if g.ring.len() < RING {
            g.ring.push(s);
        } else {
            let i = g.next;
            g.ring[i] = s;
        }
        g.next = (g.next + 1) % RING;
    }

    /// Replaces the store's figures.
    pub fn set_store(&self, stat: Option<StoreStat>, now_us: i64) {
        self.lock().store = stat;
        self.store_updated_us.store(now_us, Ordering::Relaxed);
    }

    /// The blended figures over samples younger than `window`.
    pub fn view(&self, now: Instant, window: Duration) -> View {
        let mut lat = [0u32; RING];
        let mut ttft = [0u32; RING];
        let (mut n, mut nt, mut ok, mut out) = (0usize, 0usize, 0u64, 0u64);
        let store = {
            let g = self.lock();
            for s in g.ring.iter().filter(|s| now.saturating_duration_since(s.at) <= window) {
                lat[n] = s.latency_ms;
                n += 1;
                if s.ok {
                    ok += 1;
                    out += u64::from(s.output_tokens);
                    if s.ttft_ms > 0 {
                        ttft[nt] = s.ttft_ms;
                        nt += 1;
                    }
                }
            }
            g.store
        };
        let n32 = n as u32;
        let local_lat = p95(&mut lat[..n]).map(f64::from);
        let local_ttft = p95(&mut ttft[..nt]).map(f64::from);
        let local_out = (ok > 0).then(|| out as f64 / ok as f64);
        let store_lat = store.filter(|s| s.requests > 0).map(|s| {
            // The store's p95 is over successes only: fold its error rate in as the local view does.
            if s.error_rate > 0.05 {
                f64::from(FAILURE_PENALTY_MS)
            } else {
                f64::from(s.latency_p95_ms)
            }
        });
        View {
            local_samples: n32,
            latency_p95_ms: blend(n32, local_lat, store_lat).map(|v| v.round() as u32),
            ttft_p95_ms: blend(nt as u32, local_ttft, store.and_then(|s| s.ttft_p95_ms).map(f64::from))
                .map(|v| v.round() as u32),
            mean_output_tokens: blend(
                ok as u32,
                local_out,
                store.filter(|s| s.requests > 0).map(|s| s.mean_output_tokens),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(outcome: Outcome, latency_ms: u32, ttft_ms: u32, output_tokens: u64) -> CallEvent {
        CallEvent { outcome, latency_ms, ttft_ms, output_tokens, ..Default::default() }
    }

    #[test]
    fn local_samples_decide_once_there_are_enough() {
        let s = TargetStats::default();
        let t0 = Instant::now();
        let w = Duration::from_secs(10);
        assert_eq!(s.view(t0, w).latency_p95_ms, None);
        s.set_store(
            Some(StoreStat {
                requests: 100,
                latency_p95_ms: 1000,
                ttft_p95_ms: Some(500),
                mean_output_tokens: 50.0,
                error_rate: 0.0,
            }),
            1,
        );
        assert_eq!(s.view(t0, w).latency_p95_ms, Some(1000));
        s.record(&ev(Outcome::Ok, 100, 0, 10), t0);
        // One local sample of five: 0.2·100 + 0.8·1000.
        assert_eq!(s.view(t0, w).latency_p95_ms, Some(820));
        for _ in 0..4 {
            s.record(&ev(Outcome::Ok, 100, 0, 10), t0);
        }
        let v = s.view(t0, w);
        assert_eq!((v.latency_p95_ms, v.mean_output_tokens), (Some(100), Some(10.0)));
        // Old samples leave the window; the store is what is left.
        assert_eq!(s.view(t0 + Duration::from_secs(11), w).latency_p95_ms, Some(1000));
    }

    #[test]
    fn failures_count_as_slow_and_hang_ups_not_at_all() {
        let s = TargetStats::default();
        let t0 = Instant::now();
        for _ in 0..19 {
            s.record(&ev(Outcome::Ok, 10, 5, 1), t0);
        }
        s.record(&ev(Outcome::ClientDisconnect, 1, 0, 0), t0);
        assert_eq!(s.view(t0, Duration::from_secs(1)).latency_p95_ms, Some(10));
        s.record(&ev(Outcome::UpstreamError, 3, 0, 0), t0);
        let v = s.view(t0, Duration::from_secs(1));
        assert_eq!((v.local_samples, v.latency_p95_ms, v.ttft_p95_ms), (20, Some(FAILURE_PENALTY_MS), Some(5)));
    }
}
