//! ClickHouse reports from the daily rollup (`calls_daily`, kept by a materialized view): whole UTC days
//! come from the rollup and the partial days at either end from the raw table, in one query
//! (`UNION ALL`), so a month's showback or a budget's spend reads a few thousand rollup rows instead of
//! every call. On a cluster both names are Distributed tables, so the same text runs there.

use crate::clickhouse::{
    ch_err, date_bounds, group_sql, raw_totals, select_totals, showback_row, text_of, u64_of, ChBackend, TOTALS,
};
use crate::engine::ShowbackRow;
use crate::error::QueryError;
use crate::params::TimeRange;
use crate::rollup::{bucket_sql_clickhouse, DaySplit};
use std::collections::BTreeMap;
use tollgate_clickhouse::fetch_json;

/// A value bound to a `?` of the query.
#[derive(Clone)]
pub(crate) enum Bound {
    I(i64),
    S(String),
}

/// The raw-table condition for the pieces of the range outside the rollup's days, and its values.
pub(crate) fn edges_sql(split: &DaySplit, range: &TimeRange) -> (String, Vec<Bound>) {
    let (from_date, to_date) = date_bounds(range);
    let ors: Vec<&str> = split.edges.iter().map(|_| "(ts_start_us >= ? AND ts_start_us < ?)").collect();
    let mut binds: Vec<Bound> = split.edges.iter().flat_map(|(a, b)| [Bound::I(*a), Bound::I(*b)]).collect();
    binds.push(Bound::S(from_date));
    binds.push(Bound::S(to_date));
    (format!("({}) AND date >= ? AND date <= ?", ors.join(" OR ")), binds)
}

/// The outer sums over the union of the rollup part and the raw part, whose columns are the
/// [`TOTALS`] named `n_*`: no alias may shadow the rollup's own `calls` and `attempts` columns, which
/// ClickHouse would otherwise read as nested aggregates.
fn outer_sums() -> String {
    TOTALS.iter().map(|n| format!("sum(n_{n}) AS {n}")).collect::<Vec<_>>().join(", ")
}

/// The rollup part: billable requests (not retried, not refused), refused requests and attempts that
/// reached the gateway's upstream side (not refused), as the raw showback counts them.
fn rollup_sums() -> String {
    let refused = crate::report::refused_outcomes_sql();
    let exprs = [
        format!("toUInt64(sumIf(calls, toString(outcome) NOT IN ({refused})))"),
        format!("toUInt64(sumIf(attempts, toString(outcome) IN ({refused})))"),
        "sum(input_tokens)".into(),
        "sum(output_tokens)".into(),
        "sum(cached_input_tokens)".into(),
        "sum(cache_write_tokens)".into(),
        "sum(reasoning_tokens)".into(),
        "sum(cost_nanousd)".into(),
        format!("toUInt64(sumIf(attempts, toString(outcome) NOT IN ({refused})))"),
        "toUInt64(sum(cache_hits))".into(),
        "toUInt64(sum(saved_nanousd))".into(),
    ];
    select_totals(&exprs, "n_")
}

/// The raw part, for the days the rollup does not cover whole: the raw showback's own expressions.
fn raw_sums() -> String {
    select_totals(&raw_totals(), "n_")
}

/// `SELECT ... FROM (<rollup part> UNION ALL <raw part>)`: either part left out when it has nothing to do.
pub(crate) fn union(rollup: Option<String>, raw: Option<String>) -> String {
    match (rollup, raw) {
        (Some(a), Some(b)) => format!("{a} UNION ALL {b}"),
        (Some(a), None) => a,
        (None, Some(b)) => b,
        (None, None) => String::new(),
    }
}

impl ChBackend {
    pub(crate) fn bound(&self, sql: &str, binds: Vec<Bound>) -> clickhouse::query::Query {
        let mut q = self.client.query(sql);
        for b in binds {
            q = match b {
                Bound::I(v) => q.bind(v),
                Bound::S(v) => q.bind(v),
            };
        }
        q
    }

    /// The query `showback_hybrid` sends, with its values.
    fn showback_hybrid_query(
        &self,
        range: &TimeRange,
        split: &DaySplit,
        group: &[(&str, &str)],
    ) -> clickhouse::query::Query {
        let (select, by, order) = group_sql(group);
        let outer: String = group.iter().map(|(n, _)| format!("`g_{n}`, ")).collect();
        let mut binds = Vec::new();
        let rollup = split.days.as_ref().map(|(a, b)| {
            binds.push(Bound::S(a.clone()));
            binds.push(Bound::S(b.clone()));
            format!("SELECT {select}{} FROM calls_daily WHERE date >= ? AND date <= ? {by}", rollup_sums())
        });
        let raw = (!split.edges.is_empty()).then(|| {
            let (cond, b) = edges_sql(split, range);
            binds.extend(b);
            format!("SELECT {select}{} FROM calls WHERE {cond} {by}", raw_sums())
        });
        let sql = format!(
            "SELECT {outer}{} FROM ({}) {by} ORDER BY cost_nanousd DESC{order}",
            outer_sums(),
            union(rollup, raw)
        );
        self.bound(&sql, binds)
    }

    /// Showback from the rollup's whole days plus the raw table's partial days.
    pub async fn showback_hybrid(
        &self,
        range: &TimeRange,
        split: &DaySplit,
        group: &[(&str, &str)],
    ) -> Result<Vec<ShowbackRow>, QueryError> {
        let q = self.showback_hybrid_query(range, split, group);
        let rows = fetch_json(q, self.timeout).await.map_err(ch_err)?;
        Ok(rows.iter().map(|r| showback_row(r, group)).collect())
    }

    /// The query `latency_histograms` sends, with its values.
    fn histogram_query(
        &self,
        range: &TimeRange,
        split: &DaySplit,
        group: &[(&str, &str)],
        ttft: bool,
    ) -> clickhouse::query::Query {
        let (select, _, _) = group_sql(group);
        let keys: Vec<String> = group.iter().map(|(n, _)| format!("`g_{n}`")).chain(["b".to_string()]).collect();
        let by = format!("GROUP BY {}", keys.join(", "));
        let (map, col, extra) =
            if ttft { ("ttftMap", "ttft_ms", " AND ttft_ms > 0") } else { ("latencyMap", "latency_ms", "") };
        let mut binds = Vec::new();
        let rollup = split.days.as_ref().map(|(a, b)| {
            binds.extend([Bound::S(a.clone()), Bound::S(b.clone())]);
            format!(
                "SELECT {select}b, sum(c) AS n FROM calls_daily ARRAY JOIN {map}.bucket AS b, {map}.n AS c \
                 WHERE date >= ? AND date <= ? AND outcome = 'ok' {by}"
            )
        });
        let raw = (!split.edges.is_empty()).then(|| {
            let (cond, b) = edges_sql(split, range);
            binds.extend(b);
            format!(
                "SELECT {select}{bucket} AS b, count() AS n FROM calls WHERE {cond} AND outcome = 'ok'{extra} {by}",
                bucket = bucket_sql_clickhouse(col)
            )
        });
        let sql = format!(
            "SELECT {}, sum(n) AS n FROM ({}) {by} ORDER BY {}",
            keys.join(", "),
            union(rollup, raw),
            keys.join(", ")
        );
        self.bound(&sql, binds)
    }

    /// Latency (or TTFT) histograms of successful calls per group: (group values, (bucket, count)s).
    pub async fn latency_histograms(
        &self,
        range: &TimeRange,
        split: &DaySplit,
        group: &[(&str, &str)],
        ttft: bool,
    ) -> Result<BTreeMap<Vec<String>, Vec<(u16, u64)>>, QueryError> {
        let q = self.histogram_query(range, split, group, ttft);
        let rows = fetch_json(q, self.timeout).await.map_err(ch_err)?;
        let n = group.len();
        let mut out: BTreeMap<Vec<String>, Vec<(u16, u64)>> = BTreeMap::new();
        for r in &rows {
            let g: Vec<String> = (0..n).map(|i| text_of(r.get(i))).collect();
            let b = u64_of(r.get(n)).min(u64::from(u16::MAX)) as u16;
            out.entry(g).or_default().push((b, u64_of(r.get(n + 1))));
        }
        Ok(out)
    }

    /// The rollup queries as sent (values bound), for checking them on other ClickHouse releases.
    pub fn rollup_report_sql(&self, range: &TimeRange, split: &DaySplit, group: &[(&str, &str)]) -> Vec<String> {
        vec![
            self.showback_hybrid_query(range, split, group).sql_display().to_string(),
            self.histogram_query(range, split, group, false).sql_display().to_string(),
            self.histogram_query(range, split, group, true).sql_display().to_string(),
        ]
    }
}
