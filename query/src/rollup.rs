//! What both engines share about answering from the daily rollup (`calls_daily`: ClickHouse's
//! materialized view, or the Parquet summaries that compaction writes beside each day's files): which
//! questions it can answer, how a time range splits into whole UTC days (from the rollup) and the rest
//! (from the raw table), and the latency histogram both store.
//!
//! Money from the rollup is the same sum of the same integers as from the raw table, so a report is
//! identical to the nano-dollar whichever path answered it.

use crate::params::TimeRange;

/// Columns the rollup keeps (besides `date`); a report grouping or filtering by anything else reads the
/// raw table.
pub use tollgate_events::ROLLUP_DIMENSIONS as ROLLUP_COLUMNS;

/// Whether the rollup holds every group-by column.
pub fn covers(group: &[(&str, &str)]) -> bool {
    group.iter().all(|(_, col)| *col == "date" || ROLLUP_COLUMNS.contains(col))
}

const DAY_US: i64 = 86_400_000_000;
/// No call is stored after this (the ClickHouse Date type of 18.16 ends in 2105): an open-ended range
/// (`to` = the end of time) has its whole days end here.
const LAST_US: i64 = 4_102_444_800_000_000; // 2100-01-01

/// A range split into whole UTC days, answered from the rollup, and the pieces before and after them,
/// answered from the raw table.
#[derive(Debug, Clone, PartialEq)]
pub struct DaySplit {
    /// First and last whole day, `YYYY-MM-DD`, when there is at least one.
    pub days: Option<(String, String)>,
    /// `[from, to)` pieces outside the whole days (at most two).
    pub edges: Vec<(i64, i64)>,
}

pub fn split(range: &TimeRange) -> DaySplit {
    let to = range.to_us.min(LAST_US);
    let first = range.from_us.div_euclid(DAY_US) + i64::from(range.from_us.rem_euclid(DAY_US) != 0);
    let end = to.div_euclid(DAY_US); // first day not wholly inside
    if first >= end {
        return DaySplit { days: None, edges: vec![(range.from_us, range.to_us)] };
    }
    let mut edges = Vec::new();
    if range.from_us < first * DAY_US {
        edges.push((range.from_us, first * DAY_US));
    }
    if end * DAY_US < range.to_us {
        edges.push((end * DAY_US, range.to_us));
    }
    let day = |d: i64| tollgate_events::date_of_day(d);
    DaySplit { days: Some((day(first), day(end - 1))), edges }
}

use tollgate_events::latency_bucket_value as bucket_value;

/// The largest relative difference between a percentile read from the histogram and the exact one.
pub const HISTOGRAM_RELATIVE_ERROR: f64 = 0.004;

/// ClickHouse: the bucket of an integer column.
pub fn bucket_sql_clickhouse(col: &str) -> String {
    format!(
        "toUInt16(if({col} < 256, {col}, (toUInt32(floor(log2({col}))) - 7) * 128 + \
         bitShiftRight({col}, toUInt32(floor(log2({col}))) - 7)))"
    )
}

/// DataFusion: the same bucket.
pub fn bucket_sql_datafusion(col: &str) -> String {
    format!(
        "CAST(CASE WHEN {col} < 256 THEN CAST({col} AS BIGINT) ELSE \
         (CAST(floor(log2(CAST({col} AS DOUBLE))) AS BIGINT) - 7) * 128 + \
         (CAST({col} AS BIGINT) >> (CAST(floor(log2(CAST({col} AS DOUBLE))) AS BIGINT) - 7)) END AS INT UNSIGNED)"
    )
}

/// p50/p95/p99 by nearest rank (0-based rank ⌊p·n⌋, as the exact path) from (bucket, count) pairs.
pub fn percentiles(hist: &mut [(u16, u64)]) -> Option<[u32; 3]> {
    hist.sort_unstable_by_key(|(b, _)| *b);
    let n: u64 = hist.iter().map(|(_, c)| *c).sum();
    if n == 0 {
        return None;
    }
    let pick = |p: f64| {
        let rank = ((p * n as f64) as u64).min(n - 1);
        let mut seen = 0;
        for (b, c) in hist.iter() {
            seen += c;
            if seen > rank {
                return bucket_value(*b);
            }
        }
        hist.last().map(|(b, _)| bucket_value(*b)).unwrap_or(0)
    };
    Some([pick(0.5), pick(0.95), pick(0.99)])
}

/// How a latency answer's percentiles were computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PercentileMethod {
    /// Nearest rank over every value.
    Exact,
    /// Nearest rank over the latency histogram: within [`HISTOGRAM_RELATIVE_ERROR`] of the exact value.
    Histogram,
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_events::latency_bucket as bucket;

    #[test]
    fn buckets_are_exact_below_256_and_within_the_bound_above() {
        for v in 0..256u32 {
            assert_eq!(bucket_value(bucket(v)), v);
        }
        let mut prev = bucket(255);
        for v in (256u32..5_000_000).step_by(7).chain([u32::MAX - 1, u32::MAX]) {
            let b = bucket(v);
            assert!(b >= prev, "monotone at {v}");
            prev = b;
            let got = f64::from(bucket_value(b));
            assert!((got - f64::from(v)).abs() / f64::from(v) <= HISTOGRAM_RELATIVE_ERROR, "{v} -> {got}");
        }
    }

    #[test]
    fn percentiles_match_nearest_rank_on_exact_buckets() {
        let mut h: Vec<(u16, u64)> = (1..=100u16).map(|v| (v, 1)).collect();
        assert_eq!(percentiles(&mut h), Some([51, 96, 100]));
        assert_eq!(percentiles(&mut []), None);
    }

    #[test]
    fn ranges_split_into_whole_days_and_edges() {
        let r = TimeRange::parse(Some("2026-11-01"), Some("2026-11-30")).unwrap();
        assert_eq!(split(&r), DaySplit { days: Some(("2026-11-01".into(), "2026-11-30".into())), edges: vec![] });
        let r = TimeRange::parse(Some("2026-11-01T06:00:00Z"), Some("2026-11-03T01:00:00Z")).unwrap();
        let s = split(&r);
        assert_eq!(s.days, Some(("2026-11-02".into(), "2026-11-02".into())));
        assert_eq!(s.edges, vec![(r.from_us, r.from_us + 18 * 3_600_000_000), (r.to_us - 3_600_000_000, r.to_us)]);
        let r = TimeRange::parse(Some("2026-11-01T06:00:00Z"), Some("2026-11-02T01:00:00Z")).unwrap();
        assert_eq!(split(&r).days, None);
        let open = TimeRange::parse(Some("2026-11-01"), None).unwrap();
        assert_eq!(split(&open).days, Some(("2026-11-01".into(), "2099-12-31".into())));
    }
}
