//! Reports from the daily rollup when the question allows it, on either engine, and latency percentiles
//! that scale: exact nearest rank up to `query.exact_percentiles_max_calls` calls, the rollup's latency
//! histogram above that (within 0.4%, said in the answer).
//!
//! DataFusion's rollup is the per-day summaries that compaction writes (`calls/date=D/summary.rollup`,
//! registered as `calls_daily`). A day has one only while its summary covers all its files, so every
//! rollup query also returns which days it read, and the raw table answers the rest of the range
//! (`date NOT IN` those days). Both come from the same scan, so a day is never read twice or missed.
//! ClickHouse's rollup is complete by construction (a materialized view); whole days come from it and
//! partial days from the raw table.

use crate::engine::{group_sql, group_values, u64_at, LatencyRow, QueryService, ShowbackRow, Totals};
use crate::error::QueryError;
use crate::params::TimeRange;
use crate::rollup::{bucket_sql_datafusion, covers, percentiles, split, DaySplit, PercentileMethod};
use arrow::array::RecordBatch;
use datafusion::scalar::ScalarValue;
use std::collections::{BTreeMap, BTreeSet};

type Histograms = BTreeMap<Vec<String>, Vec<(u16, u64)>>;

pub(crate) fn day_at(b: &RecordBatch, i: usize) -> Result<String, QueryError> {
    let c = crate::engine::column(b, "rollup_day")?;
    arrow::util::display::array_value_to_string(c, i).map_err(|e| QueryError::Internal(e.to_string()))
}

/// `AND date NOT IN ($n, …)` for the days the rollup answered, with their values.
pub(crate) fn not_covered(covered: &BTreeSet<String>, first_param: usize) -> (String, Vec<ScalarValue>) {
    if covered.is_empty() {
        return (String::new(), Vec::new());
    }
    let marks: Vec<String> = (0..covered.len()).map(|i| format!("${}", first_param + i)).collect();
    let values = covered.iter().map(|d| ScalarValue::Utf8(Some(d.clone()))).collect();
    (format!(" AND date NOT IN ({})", marks.join(", ")), values)
}

/// Group-by columns and `GROUP BY` for a query that also groups by the day: `(select, by)`.
fn day_group_sql(group: &[(&str, &str)], extra: &str) -> (String, String) {
    let (select, _) = group_sql(group);
    let mut by: Vec<String> = vec!["date".into()];
    for (_, col) in group.iter().filter(|(_, c)| *c != "date") {
        by.push(format!("\"{col}\""));
    }
    if !extra.is_empty() {
        by.push(extra.to_string());
    }
    (format!("date AS rollup_day, {select}"), format!("GROUP BY {}", by.join(", ")))
}

/// Rows sorted as the raw queries sort them: most expensive first, then by group values.
fn sort_showback(rows: &mut [ShowbackRow]) {
    rows.sort_by(|a, b| b.totals.cost_nanousd.cmp(&a.totals.cost_nanousd).then_with(|| a.group.cmp(&b.group)));
}

fn add(sum: &mut Totals, t: &Totals) {
    sum.calls += t.calls;
    sum.attempts += t.attempts;
    sum.rejected += t.rejected;
    sum.cache_hits += t.cache_hits;
    sum.saved_nanousd += t.saved_nanousd;
    sum.input_tokens += t.input_tokens;
    sum.output_tokens += t.output_tokens;
    sum.cached_input_tokens += t.cached_input_tokens;
    sum.cache_write_tokens += t.cache_write_tokens;
    sum.reasoning_tokens += t.reasoning_tokens;
    sum.cost_nanousd += t.cost_nanousd;
}

fn totals_at(b: &RecordBatch, i: usize) -> Result<Totals, QueryError> {
    Ok(Totals {
        calls: u64_at(b, "calls", i)?,
        attempts: u64_at(b, "attempts", i)?,
        rejected: u64_at(b, "rejected", i)?,
        cache_hits: u64_at(b, "cache_hits", i)?,
        saved_nanousd: u64_at(b, "saved_nanousd", i)?,
        input_tokens: u64_at(b, "input_tokens", i)?,
        output_tokens: u64_at(b, "output_tokens", i)?,
        cached_input_tokens: u64_at(b, "cached_input_tokens", i)?,
        cache_write_tokens: u64_at(b, "cache_write_tokens", i)?,
        reasoning_tokens: u64_at(b, "reasoning_tokens", i)?,
        cost_nanousd: u64_at(b, "cost_nanousd", i)?,
    })
}

/// The rollup's sums as the raw showback counts them: billable requests (not retried, not refused),
/// attempts (not refused) and refused requests.
fn rollup_sums() -> String {
    let refused = crate::report::refused_outcomes_sql();
    format!(
        "sum(CASE WHEN outcome IN ({refused}) THEN CAST(0 AS BIGINT UNSIGNED) ELSE calls END) AS calls, \
         sum(CASE WHEN outcome IN ({refused}) THEN CAST(0 AS BIGINT UNSIGNED) ELSE attempts END) AS attempts, \
         sum(CASE WHEN outcome IN ({refused}) THEN attempts ELSE CAST(0 AS BIGINT UNSIGNED) END) AS rejected, \
         sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, \
         sum(cached_input_tokens) AS cached_input_tokens, sum(cache_write_tokens) AS cache_write_tokens, \
         sum(reasoning_tokens) AS reasoning_tokens, sum(cost_nanousd) AS cost_nanousd, \
         sum(cache_hits) AS cache_hits, sum(saved_nanousd) AS saved_nanousd"
    )
}

/// The same over raw rows, for the days the rollup does not cover.
fn raw_sums() -> String {
    let refused = crate::report::refused_outcomes_sql();
    format!(
        "sum(CASE WHEN finish_reason = 'retried' OR outcome IN ({refused}) THEN 0 ELSE 1 END) AS calls, \
         sum(CASE WHEN outcome IN ({refused}) THEN 0 ELSE 1 END) AS attempts, \
         sum(CASE WHEN outcome IN ({refused}) THEN 1 ELSE 0 END) AS rejected, \
         sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, \
         sum(cached_input_tokens) AS cached_input_tokens, sum(cache_write_tokens) AS cache_write_tokens, \
         sum(reasoning_tokens) AS reasoning_tokens, sum(cost_nanousd) AS cost_nanousd, \
         sum(CASE WHEN cache_hit THEN 1 ELSE 0 END) AS cache_hits, sum(saved_nanousd) AS saved_nanousd"
    )
}

impl QueryService {
    /// Showback from the rollup where it can answer; `None` sends the caller to the raw table.
    pub(crate) async fn showback_from_rollup(
        &self,
        range: &TimeRange,
        group: &[(&str, &str)],
    ) -> Result<Option<Vec<ShowbackRow>>, QueryError> {
        if !self.config().rollups || !covers(group) {
            return Ok(None);
        }
        let s = split(range);
        if s.days.is_none() {
            return Ok(None);
        }
        if let Some(ch) = self.ch() {
            return ch.showback_hybrid(range, &s, group).await.map(Some);
        }
        // A file swapped by compaction between listing and reading: `run` plans that query again.
        self.showback_df(range, &s, group).await.map(Some)
    }

    async fn showback_df(
        &self,
        range: &TimeRange,
        s: &DaySplit,
        group: &[(&str, &str)],
    ) -> Result<Vec<ShowbackRow>, QueryError> {
        let Some((first, last)) = &s.days else { return Ok(Vec::new()) };
        let (select, by) = day_group_sql(group, "");
        let sql = format!("SELECT {select}{} FROM calls_daily WHERE date >= $1 AND date <= $2 {by}", rollup_sums());
        let params = vec![ScalarValue::Utf8(Some(first.clone())), ScalarValue::Utf8(Some(last.clone()))];
        let mut merged: BTreeMap<Vec<(String, String)>, Totals> = BTreeMap::new();
        let mut covered = BTreeSet::new();
        for b in self.run(&sql, params).await? {
            for i in 0..b.num_rows() {
                covered.insert(day_at(&b, i)?);
                add(merged.entry(group_values(&b, group, i)?).or_default(), &totals_at(&b, i)?);
            }
        }
        let (select, by) = group_sql(group);
        let (skip, skip_params) = not_covered(&covered, 5);
        let sql = format!(
            "SELECT {select}{sums} FROM calls WHERE ts_start >= $1 AND ts_start < $2 AND date >= $3 AND date <= $4{skip} {by}",
            sums = raw_sums()
        );
        let mut params = Self::range_params(range);
        params.extend(skip_params);
        for b in self.run(&sql, params).await? {
            for i in 0..b.num_rows() {
                let t = totals_at(&b, i)?;
                // Without a group the raw query returns one row of zeros over nothing: no new group.
                if group.is_empty() || t.attempts > 0 || t.rejected > 0 {
                    add(merged.entry(group_values(&b, group, i)?).or_default(), &t);
                }
            }
        }
        if group.is_empty() && merged.is_empty() {
            merged.insert(Vec::new(), Totals::default());
        }
        let mut rows: Vec<ShowbackRow> =
            merged.into_iter().map(|(group, totals)| ShowbackRow { group, totals }).collect();
        sort_showback(&mut rows);
        Ok(rows)
    }

    /// Latency percentiles that scale: the histogram (rollup + raw edges, or raw alone for columns the
    /// rollup lacks) gives every group's count; when the range holds at most
    /// `exact_percentiles_max_calls` calls the exact query answers instead.
    pub(crate) async fn latency_scaled(
        &self,
        range: &TimeRange,
        group: &[(&str, &str)],
    ) -> Result<Option<Vec<LatencyRow>>, QueryError> {
        let max = self.config().exact_percentiles_max_calls;
        if max == u64::MAX {
            return Ok(None);
        }
        let s = if self.config().rollups && covers(group) {
            split(range)
        } else {
            DaySplit { days: None, edges: vec![(range.from_us, range.to_us)] }
        };
        let lat = self.histograms(range, &s, group, false).await?;
        let total: u64 = lat.values().flat_map(|h| h.iter().map(|(_, n)| *n)).sum();
        if total <= max {
            return Ok(None);
        }
        let mut ttft = self.histograms(range, &s, group, true).await?;
        let mut rows: Vec<LatencyRow> = lat
            .into_iter()
            .map(|(g, mut h)| {
                let calls = h.iter().map(|(_, n)| *n).sum();
                let latency_ms = percentiles(&mut h).unwrap_or([0; 3]);
                let ttft_ms = ttft.get_mut(&g).and_then(|t| percentiles(t));
                LatencyRow {
                    group: group.iter().map(|(n, _)| (*n).to_string()).zip(g).collect(),
                    calls,
                    latency_ms,
                    ttft_ms,
                    percentiles: PercentileMethod::Histogram,
                }
            })
            .collect();
        rows.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| a.group.cmp(&b.group)));
        Ok(Some(rows))
    }

    async fn histograms(
        &self,
        range: &TimeRange,
        s: &DaySplit,
        group: &[(&str, &str)],
        ttft: bool,
    ) -> Result<Histograms, QueryError> {
        if let Some(ch) = self.ch() {
            return ch.latency_histograms(range, s, group, ttft).await;
        }
        self.histograms_df(range, s, group, ttft).await
    }

    async fn histograms_df(
        &self,
        range: &TimeRange,
        s: &DaySplit,
        group: &[(&str, &str)],
        ttft: bool,
    ) -> Result<Histograms, QueryError> {
        let mut out: Histograms = BTreeMap::new();
        let put = |b: &RecordBatch, i: usize, out: &mut Histograms| -> Result<(), QueryError> {
            let g: Vec<String> = group_values(b, group, i)?.into_iter().map(|(_, v)| v).collect();
            let bucket = u64_at(b, "b", i)?.min(u64::from(u16::MAX)) as u16;
            out.entry(g).or_default().push((bucket, u64_at(b, "n", i)?));
            Ok(())
        };
        let mut covered = BTreeSet::new();
        let (lists, col, extra) = if ttft {
            ("ttft_b, ttft_n", "ttft_ms", " AND ttft_ms > 0")
        } else {
            ("latency_b, latency_n", "latency_ms", "")
        };
        if let Some((first, last)) = &s.days {
            let cols: BTreeSet<&str> = group.iter().map(|(_, c)| *c).filter(|c| *c != "date").collect();
            let inner: String = cols.iter().map(|c| format!("\"{c}\", ")).collect();
            let (bl, nl) = lists.split_once(", ").unwrap_or((lists, lists));
            let (select, by) = day_group_sql(group, "bk");
            let sql = format!(
                "SELECT {select}CAST(bk AS BIGINT UNSIGNED) AS b, sum(n) AS n FROM (SELECT date, {inner}unnest({bl}) AS bk, \
                 unnest({nl}) AS n FROM calls_daily WHERE date >= $1 AND date <= $2 AND outcome = 'ok') {by}"
            );
            let params = vec![ScalarValue::Utf8(Some(first.clone())), ScalarValue::Utf8(Some(last.clone()))];
            for b in self.run(&sql, params).await? {
                for i in 0..b.num_rows() {
                    covered.insert(day_at(&b, i)?);
                    put(&b, i, &mut out)?;
                }
            }
        }
        let (select, by) = group_sql(group);
        let bucket = bucket_sql_datafusion(col);
        let by = if by.is_empty() { format!("GROUP BY {bucket}") } else { format!("{by}, {bucket}") };
        let (skip, skip_params) = not_covered(&covered, 5);
        let sql = format!(
            "SELECT {select}CAST({bucket} AS BIGINT UNSIGNED) AS b, count(*) AS n FROM calls \
             WHERE ts_start >= $1 AND ts_start < $2 AND date >= $3 AND date <= $4 AND outcome = 'ok'{extra}{skip} {by}"
        );
        let mut params = Self::range_params(range);
        params.extend(skip_params);
        for b in self.run(&sql, params).await? {
            for i in 0..b.num_rows() {
                put(&b, i, &mut out)?;
            }
        }
        Ok(out)
    }
}
