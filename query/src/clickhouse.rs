//! The query service on ClickHouse: the same reports as on DataFusion, with the same answers to the
//! nano-dollar and the same percentile definition (`quantileExact`: the value at 0-based rank ⌊p·n⌋).
//! Identifiers come from the fixed group-by list; values are bound (`?`, escaped by the client as typed
//! literals: ClickHouse 18.16 has no server-side query parameters). Every query is written to give the
//! same result types on 18.16 and on current releases (explicit casts).

use crate::engine::{LatencyRow, QueryConfig, ShowbackRow, SpendFilter, SqlResult, Totals};
use crate::error::QueryError;
use crate::params::TimeRange;
use crate::sqlguard;
use serde_json::Value;
use std::time::Duration;
use tollgate_clickhouse::{fetch_doc, fetch_json, ChError, ClickHouseConfig};

pub struct ChBackend {
    cfg: ClickHouseConfig,
    client: clickhouse::Client,
    sql_client: clickhouse::Client,
    timeout: Duration,
}

/// The expression each group-by column reads, rendered as the text DataFusion gives for it.
fn group_expr(col: &str) -> String {
    match col {
        "stream" => "if(stream = 1, 'true', 'false')".into(),
        "date" | "endpoint" | "outcome" | "client_api" | "usage_source" => format!("toString(`{col}`)"),
        _ => format!("`{col}`"),
    }
}

fn group_sql(group: &[(&str, &str)]) -> (String, String, String) {
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

fn date_bounds(r: &TimeRange) -> (String, String) {
    let clamp = |d: String| if d.as_str() > LAST_DATE { LAST_DATE.to_string() } else { d };
    (clamp(r.from_date()), clamp(r.to_date()))
}

fn ch_err(e: ChError) -> QueryError {
    match e {
        ChError::Rejected { code: 159, .. } => QueryError::Timeout(0),
        ChError::Rejected { code: 164, message } => QueryError::NotReadOnly(message),
        ChError::Rejected { message, .. } => QueryError::InvalidSql(message),
        ChError::Unavailable(m) => QueryError::Unavailable(m),
    }
}

fn u64_of(v: Option<&Value>) -> u64 {
    match v {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

fn text_of(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
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
            "SELECT {select}countIf(finish_reason != 'retried') AS calls, sum(input_tokens) AS input_tokens, \
             sum(output_tokens) AS output_tokens, \
             sum(cached_input_tokens) AS cached_input_tokens, sum(cache_write_tokens) AS cache_write_tokens, \
             sum(reasoning_tokens) AS reasoning_tokens, sum(cost_nanousd) AS cost_nanousd, count() AS attempts \
             FROM calls WHERE ts_start_us >= ? AND ts_start_us < ? AND date >= ? AND date <= ? {by} \
             ORDER BY cost_nanousd DESC{order}"
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
        vec![
            self.showback_query(range, group).sql_display().to_string(),
            self.latency_query(range, group).sql_display().to_string(),
        ]
    }

    pub async fn showback(&self, range: &TimeRange, group: &[(&str, &str)]) -> Result<Vec<ShowbackRow>, QueryError> {
        let rows = fetch_json(self.showback_query(range, group), self.timeout).await.map_err(ch_err)?;
        let n = group.len();
        Ok(rows
            .iter()
            .map(|r| ShowbackRow {
                group: group
                    .iter()
                    .enumerate()
                    .map(|(i, (name, _))| ((*name).to_string(), text_of(r.get(i))))
                    .collect(),
                totals: Totals {
                    calls: u64_of(r.get(n)),
                    input_tokens: u64_of(r.get(n + 1)),
                    output_tokens: u64_of(r.get(n + 2)),
                    cached_input_tokens: u64_of(r.get(n + 3)),
                    cache_write_tokens: u64_of(r.get(n + 4)),
                    reasoning_tokens: u64_of(r.get(n + 5)),
                    cost_nanousd: u64_of(r.get(n + 6)),
                    attempts: u64_of(r.get(n + 7)),
                },
            })
            .collect())
    }

    /// A budget's spend: the same number as DataFusion's, to the nano-dollar.
    pub async fn spend(&self, range: &TimeRange, filter: &SpendFilter) -> Result<u64, QueryError> {
        let base = "SELECT toUInt64(sum(cost_nanousd)) AS cost_nanousd FROM calls \
                    WHERE ts_start_us >= ? AND ts_start_us < ? AND date >= ? AND date <= ? AND ";
        let q = match filter {
            // `col` comes from the fixed list in `SpendFilter::scope`, never from a request.
            SpendFilter::Column(col, v) => self.ranged(&format!("{base}`{col}` = ?"), range).bind(v.as_str()),
            SpendFilter::Tag(k, v) => self
                .ranged(&format!("{base}tag_values[indexOf(tag_keys, ?)] = ?"), range)
                .bind(k.as_str())
                .bind(v.as_str()),
        };
        let rows = fetch_json(q, self.timeout).await.map_err(ch_err)?;
        Ok(rows.first().map(|r| u64_of(r.first())).unwrap_or(0))
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
