//! The query service on ClickHouse: the same reports as on DataFusion, with the same answers to the
//! nano-dollar and the same percentile definition (`quantileExact`: the value at 0-based rank ⌊p·n⌋).
//! Identifiers come from the fixed group-by list; values are bound (`?`, escaped by the client as typed
//! literals: ClickHouse 18.16 has no server-side query parameters). Every query is written to give the
//! same result types on 18.16 and on current releases (explicit casts).

use crate::engine::{LatencyRow, QueryConfig, ShowbackRow, SqlResult, Totals};
use crate::error::QueryError;
use crate::params::TimeRange;
use crate::routing_stats::{self, RoutingStatsRow};
use crate::sqlguard;
use serde_json::Value;
use std::time::Duration;
use tollgate_clickhouse::{fetch_doc, fetch_json, ChError, ClickHouseConfig};

pub struct ChBackend {
    cfg: ClickHouseConfig,
    pub(crate) client: clickhouse::Client,
    sql_client: clickhouse::Client,
    pub(crate) timeout: Duration,
}

/// The expression each group-by column reads, rendered as the text DataFusion gives for it.
fn group_expr(col: &str) -> String {
    match col {
        "stream" => "if(stream = 1, 'true', 'false')".into(),
        "date" | "endpoint" | "outcome" | "client_api" | "usage_source" => format!("toString(`{col}`)"),
        _ => format!("`{col}`"),
    }
}

pub(crate) fn group_sql(group: &[(&str, &str)]) -> (String, String, String) {
    if group.is_empty() {
        return (String::new(), String::new(), String::new());
    }
    let cols: Vec<String> = group.iter().map(|(name, col)| format!("{} AS `g_{name}`", group_expr(col))).collect();
    let by: Vec<String> = group.iter().map(|(name, _)| format!("`g_{name}`")).collect();
    let order: String = by.iter().map(|b| format!(", {b}")).collect();
    (format!("{}, ", cols.join(", ")), format!("GROUP BY {}", by.join(", ")), order)
}

/// The latest day ClickHouse's Date holds on every release (18.16's ends in 2105).
const LAST_DATE: &str = "2105-12-31";

pub(crate) fn date_bounds(r: &TimeRange) -> (String, String) {
    let clamp = |d: String| if d.as_str() > LAST_DATE { LAST_DATE.to_string() } else { d };
    (clamp(r.from_date()), clamp(r.to_date()))
}

pub(crate) fn ch_err(e: ChError) -> QueryError {
    match e {
        ChError::Rejected { code: 159, .. } => QueryError::Timeout(0),
        ChError::Rejected { code: 164, message } => QueryError::NotReadOnly(message),
        ChError::Rejected { message, .. } => QueryError::InvalidSql(message),
        ChError::Unavailable(m) => QueryError::Unavailable(m),
    }
}

pub(crate) fn u64_of(v: Option<&Value>) -> u64 {
    match v {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

pub(crate) fn text_of(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// The showback totals, in the order every ClickHouse showback query selects them (after the group
/// columns) and [`showback_row`] reads them back: one list, so a query and its reader cannot disagree.
pub(crate) const TOTALS: [&str; 11] = [
    "calls",
    "rejected",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_nanousd",
    "attempts",
    "cache_hits",
    "saved_nanousd",
];

/// The [`TOTALS`] over raw `calls` rows: a request counts once (its last attempt) in `calls`, every
/// attempt that reached the upstream side in `attempts`, the gateway's refusals in `rejected`.
pub(crate) fn raw_totals() -> [String; 11] {
    let refused = crate::report::refused_outcomes_sql();
    [
        format!("toUInt64(countIf(finish_reason != 'retried' AND toString(outcome) NOT IN ({refused})))"),
        format!("toUInt64(countIf(toString(outcome) IN ({refused})))"),
        "sum(input_tokens)".into(),
        "sum(output_tokens)".into(),
        "sum(cached_input_tokens)".into(),
        "sum(cache_write_tokens)".into(),
        "sum(reasoning_tokens)".into(),
        "sum(cost_nanousd)".into(),
        format!("toUInt64(countIf(toString(outcome) NOT IN ({refused})))"),
        "toUInt64(sum(cache_hit))".into(),
        "toUInt64(sum(saved_nanousd))".into(),
    ]
}

/// `expr AS <prefix><name>, ...` for expressions given in [`TOTALS`] order.
pub(crate) fn select_totals(exprs: &[String; 11], prefix: &str) -> String {
    exprs.iter().zip(TOTALS).map(|(e, n)| format!("{e} AS {prefix}{n}")).collect::<Vec<_>>().join(", ")
}

/// One showback row of a query that selected the group columns, then the [`TOTALS`].
pub(crate) fn showback_row(r: &[Value], group: &[(&str, &str)]) -> ShowbackRow {
    let n = group.len();
    let at = |i: usize| u64_of(r.get(n + i));
    ShowbackRow {
        group: group.iter().enumerate().map(|(i, (name, _))| ((*name).to_string(), text_of(r.get(i)))).collect(),
        totals: Totals {
            calls: at(0),
            rejected: at(1),
            input_tokens: at(2),
            output_tokens: at(3),
            cached_input_tokens: at(4),
            cache_write_tokens: at(5),
            reasoning_tokens: at(6),
            cost_nanousd: at(7),
            attempts: at(8),
            cache_hits: at(9),
            saved_nanousd: at(10),
        },
    }
}

fn triple(v: Option<&Value>) -> [u32; 3] {
    let a = v.and_then(|v| v.as_array()).cloned().unwrap_or_default();
    let at = |i: usize| u64_of(a.get(i)).min(u64::from(u32::MAX)) as u32;
    [at(0), at(1), at(2)]
}

impl ChBackend {
    pub fn new(cfg: ClickHouseConfig) -> ChBackend {
        ChBackend {
            client: cfg.client(),
            sql_client: cfg.sql_client(),
            timeout: Duration::from_millis(cfg.request_timeout_ms),
            cfg,
        }
    }

    fn ranged(&self, sql: &str, r: &TimeRange) -> clickhouse::query::Query {
        let (from_date, to_date) = date_bounds(r);
        self.client.query(sql).bind(r.from_us).bind(r.to_us).bind(from_date).bind(to_date)
    }

    fn showback_query(&self, range: &TimeRange, group: &[(&str, &str)]) -> clickhouse::query::Query {
        let (select, by, order) = group_sql(group);
        let sql = format!(
            "SELECT {select}{} FROM calls WHERE ts_start_us >= ? AND ts_start_us < ? AND date >= ? AND date <= ? {by} \
             ORDER BY cost_nanousd DESC{order}",
            select_totals(&raw_totals(), ""),
        );
        self.ranged(&sql, range)
    }

    fn latency_query(&self, range: &TimeRange, group: &[(&str, &str)]) -> clickhouse::query::Query {
        let (select, by, order) = group_sql(group);
        let sql = format!(
            "SELECT {select}count() AS calls, \
             arrayMap(x -> toUInt32(x), quantilesExact(0.5, 0.95, 0.99)(latency_ms)) AS lat, \
             countIf(ttft_ms > 0) AS ttft_calls, \
             arrayMap(x -> toUInt32(x), quantilesExactIf(0.5, 0.95, 0.99)(ttft_ms, ttft_ms > 0)) AS ttft \
             FROM calls WHERE ts_start_us >= ? AND ts_start_us < ? AND date >= ? AND date <= ? AND outcome = 'ok' {by} \
             ORDER BY calls DESC{order}"
        );
        self.ranged(&sql, range)
    }

    /// The report queries as sent (values bound), for checking them on other ClickHouse releases.
    pub fn report_sql(&self, range: &TimeRange, group: &[(&str, &str)]) -> Vec<String> {
        let mut v = vec![
            self.showback_query(range, group).sql_display().to_string(),
            self.latency_query(range, group).sql_display().to_string(),
            self.ranged(routing_stats::CLICKHOUSE_SQL, range).sql_display().to_string(),
        ];
        if crate::rollup::covers(group) {
            v.extend(self.rollup_report_sql(range, &crate::rollup::split(range), group));
        }
        v
    }

    pub async fn showback(&self, range: &TimeRange, group: &[(&str, &str)]) -> Result<Vec<ShowbackRow>, QueryError> {
        let rows = fetch_json(self.showback_query(range, group), self.timeout).await.map_err(ch_err)?;
        Ok(rows.iter().map(|r| showback_row(r, group)).collect())
    }

    pub async fn latency(&self, range: &TimeRange, group: &[(&str, &str)]) -> Result<Vec<LatencyRow>, QueryError> {
        let rows = fetch_json(self.latency_query(range, group), self.timeout).await.map_err(ch_err)?;
        let n = group.len();
        Ok(rows
            .iter()
            .map(|r| {
                let calls = u64_of(r.get(n));
                LatencyRow {
                    group: group
                        .iter()
                        .enumerate()
                        .map(|(i, (name, _))| ((*name).to_string(), text_of(r.get(i))))
                        .collect(),
                    calls,
                    latency_ms: if calls == 0 { [0; 3] } else { triple(r.get(n + 1)) },
                    ttft_ms: if u64_of(r.get(n + 2)) == 0 { None } else { Some(triple(r.get(n + 3))) },
                    percentiles: crate::rollup::PercentileMethod::Exact,
                }
            })
            .collect())
    }

    /// Per-target attempt statistics: the same integers as DataFusion's.
    pub async fn routing_stats(&self, range: &TimeRange) -> Result<Vec<RoutingStatsRow>, QueryError> {
        let rows = fetch_json(self.ranged(routing_stats::CLICKHOUSE_SQL, range), self.timeout).await.map_err(ch_err)?;
        Ok(rows
            .iter()
            .map(|r| {
                let ok = u64_of(r.get(8));
                RoutingStatsRow {
                    route: text_of(r.first()),
                    upstream: text_of(r.get(1)),
                    model: text_of(r.get(2)),
                    requests: u64_of(r.get(3)),
                    ok: u64_of(r.get(4)),
                    upstream_errors: u64_of(r.get(5)),
                    timeouts: u64_of(r.get(6)),
                    client_disconnects: u64_of(r.get(7)),
                    latency_ms: if ok == 0 { [0; 2] } else { routing_stats::p50_p95(triple(r.get(9))) },
                    ttft_ms: if u64_of(r.get(10)) == 0 {
                        None
                    } else {
                        Some(routing_stats::p50_p95(triple(r.get(11))))
                    },
                    input_tokens: u64_of(r.get(12)),
                    output_tokens: u64_of(r.get(13)),
                    cost_nanousd: u64_of(r.get(14)),
                    ok_output_tokens: u64_of(r.get(15)),
                    ok_generation_ms: u64_of(r.get(16)),
                }
            })
            .collect())
    }

    /// An analyst's query, read-only on the server (`readonly=1`), limited to the call log by
    /// [`sqlguard`], with the service's row cap and time limit.
    pub async fn sql(&self, sql: &str, q: &QueryConfig) -> Result<SqlResult, QueryError> {
        sqlguard::check(sql, &self.cfg.database)?;
        let text = sql.trim().trim_end_matches(';').trim_end();
        let secs = q.sql_timeout_ms.div_ceil(1000).max(1);
        let query = self
            .sql_client
            .query_raw(text)
            .with_setting("readonly", "1")
            .with_setting("max_execution_time", secs.to_string())
            .with_setting("max_result_rows", (q.sql_max_rows + 1).to_string())
            .with_setting("result_overflow_mode", "break");
        // The server stops at its own limit; the client gives it a second more before answering 504.
        let limit = Duration::from_millis(q.sql_timeout_ms + 1000);
        let doc = match fetch_doc(query, limit).await {
            Ok(d) => d,
            Err(ChError::Rejected { code: 159, .. }) => return Err(QueryError::Timeout(q.sql_timeout_ms)),
            Err(ChError::Unavailable(m)) if m.starts_with("no answer within") => {
                return Err(QueryError::Timeout(q.sql_timeout_ms))
            }
            Err(e) => return Err(ch_err(e)),
        };
        let columns: Vec<(String, String)> = doc
            .get("meta")
            .and_then(|m| m.as_array())
            .map(|m| m.iter().map(|c| (text_of(c.get("name")), text_of(c.get("type")))).collect())
            .unwrap_or_default();
        let data = doc.get("data").and_then(|d| d.as_array()).cloned().unwrap_or_default();
        let truncated = data.len() > q.sql_max_rows;
        let rows = data
            .into_iter()
            .take(q.sql_max_rows)
            .map(|r| {
                let vals = r.as_array().cloned().unwrap_or_default();
                let obj: serde_json::Map<String, Value> = columns.iter().map(|(n, _)| n.clone()).zip(vals).collect();
                Value::Object(obj)
            })
            .collect();
        Ok(SqlResult { columns, rows, truncated })
    }
}

/// The report queries the ClickHouse engine sends for this range and grouping, values bound.
pub fn clickhouse_report_sql(cfg: ClickHouseConfig, range: &TimeRange, group: &[(&str, &str)]) -> Vec<String> {
    ChBackend::new(cfg).report_sql(range, group)
}
