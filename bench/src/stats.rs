//! Percentiles, added latency and RPS ratios over the raw per-request samples of one load run, and the
//! median and spread of a value over the rounds of a run.

/// Nearest-rank percentile (`p` in 0..=100) of an ascending slice; `None` when there are no samples.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let idx = rank.clamp(1, sorted.len()) - 1;
    sorted.get(idx).copied()
}

/// What one target did at one concurrency: throughput and latency in microseconds.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub requests: usize,
    pub errors: u64,
    pub rps: f64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    /// Time to first body chunk; only for streaming runs.
    pub ttfb_p50_us: Option<f64>,
    pub ttfb_p99_us: Option<f64>,
}

fn to_us(ns: Option<u64>) -> Option<f64> {
    ns.map(|n| n as f64 / 1000.0)
}

/// Summarizes latencies (ns) of requests completed inside a window of `window_secs`.
pub fn summarize(mut latency_ns: Vec<u64>, mut ttfb_ns: Vec<u64>, errors: u64, window_secs: f64) -> RunSummary {
    latency_ns.sort_unstable();
    ttfb_ns.sort_unstable();
    let requests = latency_ns.len();
    let rps = if window_secs > 0.0 { requests as f64 / window_secs } else { 0.0 };
    RunSummary {
        requests,
        errors,
        rps,
        p50_us: to_us(percentile(&latency_ns, 50.0)),
        p99_us: to_us(percentile(&latency_ns, 99.0)),
        ttfb_p50_us: to_us(percentile(&ttfb_ns, 50.0)),
        ttfb_p99_us: to_us(percentile(&ttfb_ns, 99.0)),
    }
}

/// Latency a target adds over going direct (may be negative within noise).
pub fn added(target_us: Option<f64>, direct_us: Option<f64>) -> Option<f64> {
    Some(target_us? - direct_us?)
}

/// Target RPS as a fraction of direct RPS; `None` when direct did nothing.
pub fn rps_ratio(target_rps: f64, direct_rps: f64) -> Option<f64> {
    (direct_rps > 0.0).then(|| target_rps / direct_rps)
}

/// A value over the rounds of a run: its median (the mean of the middle two for an even count) and range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// How many rounds had the value.
    pub n: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

/// Median and min–max of `values` (NaNs ignored); `None` when there is nothing to summarize.
pub fn spread(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| !x.is_nan()).collect();
    v.sort_unstable_by(f64::total_cmp);
    let (&min, &max) = (v.first()?, v.last()?);
    let mid = v.len() / 2;
    let median = if v.len() % 2 == 1 { v[mid] } else { (v[mid - 1] + v[mid]) / 2.0 };
    Some(Spread { n: v.len(), median, min, max })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
        // 10 samples: p99 is the largest, p50 the 5th.
        let w: Vec<u64> = (1..=10).map(|x| x * 10).collect();
        assert_eq!(percentile(&w, 50.0), Some(50));
        assert_eq!(percentile(&w, 99.0), Some(100));
    }

    #[test]
    fn summary_sorts_and_converts_to_micros() {
        let lat = vec![3_000, 1_000, 2_000, 4_000];
        let s = summarize(lat, vec![], 1, 2.0);
        assert_eq!(s.requests, 4);
        assert_eq!(s.errors, 1);
        assert!((s.rps - 2.0).abs() < 1e-9);
        assert_eq!(s.p50_us, Some(2.0));
        assert_eq!(s.p99_us, Some(4.0));
        assert_eq!(s.ttfb_p50_us, None);
    }

    #[test]
    fn added_latency_and_ratio() {
        assert_eq!(added(Some(130.5), Some(100.0)), Some(30.5));
        assert_eq!(added(Some(90.0), Some(100.0)), Some(-10.0));
        assert_eq!(added(None, Some(100.0)), None);
        assert_eq!(rps_ratio(600.0, 1000.0), Some(0.6));
        assert_eq!(rps_ratio(600.0, 0.0), None);
    }

    #[test]
    fn spread_of_rounds() {
        let s = |v: &[f64]| spread(v.iter().copied());
        assert_eq!(s(&[]), None);
        assert_eq!(s(&[f64::NAN]), None);
        assert_eq!(s(&[7.0]), Some(Spread { n: 1, median: 7.0, min: 7.0, max: 7.0 }));
        // Odd count: the middle one, whatever the order they came in.
        assert_eq!(s(&[0.63, 0.40, 0.52]), Some(Spread { n: 3, median: 0.52, min: 0.40, max: 0.63 }));
        // Even count: the mean of the middle two.
        assert_eq!(s(&[4.0, 1.0, 10.0, 2.0]), Some(Spread { n: 4, median: 3.0, min: 1.0, max: 10.0 }));
        assert_eq!(s(&[1.0, f64::NAN, 3.0]), Some(Spread { n: 2, median: 2.0, min: 1.0, max: 3.0 }));
    }
}
