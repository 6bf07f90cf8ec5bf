//! HTTP routes of the query service: `/v1/showback`, `/v1/latency`, `/v1/sql`.

use crate::csv;
use crate::engine::{QueryService, ShowbackRow, Totals};
use crate::error::QueryError;
use crate::params::{month_range, parse_group_by, TimeRange};
use axum::body::Body;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use std::sync::Arc;
use tollgate_events::format_usd;

#[derive(Deserialize)]
struct ReportParams {
    from: Option<String>,
    to: Option<String>,
    group_by: Option<String>,
    format: Option<String>,
}

pub fn app(svc: Arc<QueryService>) -> Router {
    Router::new()
        .route("/v1/showback", get(showback))
        .route("/v1/latency", get(latency))
        .route("/v1/sql", post(sql))
        .route("/v1/chargeback", get(chargeback))
        .with_state(svc)
}

fn json(v: serde_json::Value) -> Response {
    ([(http::header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

fn totals_json(t: &Totals) -> serde_json::Value {
    serde_json::json!({
        "calls": t.calls,
        "attempts": t.attempts,
        "input_tokens": t.input_tokens,
        "output_tokens": t.output_tokens,
        "cached_input_tokens": t.cached_input_tokens,
        "cache_write_tokens": t.cache_write_tokens,
        "reasoning_tokens": t.reasoning_tokens,
        "cost_nanousd": t.cost_nanousd,
        "cost_usd": format_usd(t.cost_nanousd),
    })
}

/// Adds a row's totals into a running total (exact integers).
pub fn add_totals(sum: &mut Totals, t: &Totals) {
    sum.calls += t.calls;
    sum.attempts += t.attempts;
    sum.input_tokens += t.input_tokens;
    sum.output_tokens += t.output_tokens;
    sum.cached_input_tokens += t.cached_input_tokens;
    sum.cache_write_tokens += t.cache_write_tokens;
    sum.reasoning_tokens += t.reasoning_tokens;
    sum.cost_nanousd += t.cost_nanousd;
}

async fn showback(State(svc): State<Arc<QueryService>>, Query(p): Query<ReportParams>) -> Result<Response, QueryError> {
    let range = TimeRange::parse(p.from.as_deref(), p.to.as_deref())?;
    let group = parse_group_by(p.group_by.as_deref(), &["department", "team", "model"])?;
    let rows = svc.showback(&range, &group).await?;
    match p.format.as_deref().unwrap_or("json") {
        "json" => Ok(json(showback_json(&range, &group, &rows))),
        "csv" => Ok(csv_response(showback_csv(&group, &rows))),
        other => Err(QueryError::BadParameter(format!("`format` must be json or csv, got `{other}`"))),
    }
}

fn showback_json(range: &TimeRange, group: &[(&str, &str)], rows: &[ShowbackRow]) -> serde_json::Value {
    let mut total = Totals::default();
    let out: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            add_totals(&mut total, &r.totals);
            let mut o = totals_json(&r.totals);
            if let Some(m) = o.as_object_mut() {
                for (k, v) in &r.group {
                    m.insert(k.clone(), serde_json::Value::String(v.clone()));
                }
            }
            o
        })
        .collect();
    serde_json::json!({
        "from": TimeRange::render(range.from_us),
        "to": TimeRange::render(range.to_us),
        "group_by": group.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        "rows": out,
        "total": totals_json(&total),
    })
}

/// CSV for finance: one line per group, cost as exact decimal USD and as integer nano-USD.
pub fn showback_csv(group: &[(&str, &str)], rows: &[ShowbackRow]) -> String {
    let mut s = String::new();
    let mut header: Vec<&str> = group.iter().map(|(n, _)| *n).collect();
    header.extend([
        "calls",
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
        "cost_usd",
        "cost_nanousd",
    ]);
    csv::row(&mut s, header);
    for r in rows {
        let t = &r.totals;
        let nums = [
            t.calls.to_string(),
            t.input_tokens.to_string(),
            t.output_tokens.to_string(),
            t.cached_input_tokens.to_string(),
            t.cache_write_tokens.to_string(),
            t.reasoning_tokens.to_string(),
            format_usd(t.cost_nanousd),
            t.cost_nanousd.to_string(),
        ];
        let fields: Vec<&str> =
            r.group.iter().map(|(_, v)| v.as_str()).chain(nums.iter().map(String::as_str)).collect();
        csv::row(&mut s, fields);
    }
    s
}

fn csv_response(body: String) -> Response {
    Response::builder()
        .header(http::header::CONTENT_TYPE, "text/csv; charset=utf-8")
        .body(Body::from(body))
        .unwrap_or_else(|_| http::StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn latency(State(svc): State<Arc<QueryService>>, Query(p): Query<ReportParams>) -> Result<Response, QueryError> {
    let range = TimeRange::parse(p.from.as_deref(), p.to.as_deref())?;
    let group = parse_group_by(p.group_by.as_deref(), &["model"])?;
    let rows = svc.latency(&range, &group).await?;
    let out: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let mut o = serde_json::json!({
                "calls": r.calls,
                "latency_ms": {"p50": r.latency_ms[0], "p95": r.latency_ms[1], "p99": r.latency_ms[2]},
                "ttft_ms": r.ttft_ms.map(|t| serde_json::json!({"p50": t[0], "p95": t[1], "p99": t[2]})),
            });
            if let Some(m) = o.as_object_mut() {
                for (k, v) in &r.group {
                    m.insert(k.clone(), serde_json::Value::String(v.clone()));
                }
            }
            o
        })
        .collect();
    Ok(json(serde_json::json!({
        "from": TimeRange::render(range.from_us),
        "to": TimeRange::render(range.to_us),
        "group_by": group.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        "percentiles": "nearest rank: the value at 0-based rank floor(p*n) of the sorted values; successful calls only",
        "rows": out,
    })))
}

#[derive(Deserialize)]
struct ChargebackParams {
    month: Option<String>,
    by: Option<String>,
    format: Option<String>,
}

/// Who a chargeback line may be about.
const CHARGEBACK_BY: &[&str] = &["tenant", "department", "team", "project", "user", "key"];

/// `GET /v1/chargeback?month=YYYY-MM&by=department[,team,project]&format=csv|json`: the month's bill
/// per line (calls, tokens by kind, cost), with a total that is the exact sum of the lines. Months are
/// UTC calendar months.
async fn chargeback(
    State(svc): State<Arc<QueryService>>,
    Query(p): Query<ChargebackParams>,
) -> Result<Response, QueryError> {
    let month = p.month.ok_or_else(|| QueryError::BadParameter("`month` (YYYY-MM) is required".into()))?;
    let range = month_range(&month)?;
    let by = p.by.unwrap_or_else(|| "department".into());
    for n in by.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if !CHARGEBACK_BY.contains(&n) {
            return Err(QueryError::BadParameter(format!(
                "cannot charge back by `{n}`; use any of {}",
                CHARGEBACK_BY.join(", ")
            )));
        }
    }
    let group = parse_group_by(Some(&by), &["department"])?;
    let rows = svc.showback(&range, &group).await?;
    let mut total = Totals::default();
    for r in &rows {
        add_totals(&mut total, &r.totals);
    }
    match p.format.as_deref().unwrap_or("json") {
        "json" => {
            let mut v = showback_json(&range, &group, &rows);
            if let Some(m) = v.as_object_mut() {
                m.insert("month".into(), month.into());
                if let Some(lines) = m.remove("rows") {
                    m.insert("lines".into(), lines);
                }
            }
            Ok(json(v))
        }
        "csv" => {
            let mut s = showback_csv(&group, &rows);
            let nums = [
                total.calls.to_string(),
                total.input_tokens.to_string(),
                total.output_tokens.to_string(),
                total.cached_input_tokens.to_string(),
                total.cache_write_tokens.to_string(),
                total.reasoning_tokens.to_string(),
                format_usd(total.cost_nanousd),
                total.cost_nanousd.to_string(),
            ];
            let lead: Vec<&str> = (0..group.len()).map(|i| if i == 0 { "TOTAL" } else { "" }).collect();
            csv::row(&mut s, lead.into_iter().chain(nums.iter().map(String::as_str)));
            Ok(csv_response(s))
        }
        other => Err(QueryError::BadParameter(format!("`format` must be json or csv, got `{other}`"))),
    }
}

#[derive(Deserialize)]
struct SqlBody {
    sql: String,
}

/// `POST /v1/sql` with `{"sql": "..."}` (or the SQL as a plain-text body).
async fn sql(State(svc): State<Arc<QueryService>>, body: axum::body::Bytes) -> Result<Response, QueryError> {
    let text = match serde_json::from_slice::<SqlBody>(&body) {
        Ok(b) => b.sql,
        Err(_) => {
            String::from_utf8(body.to_vec()).map_err(|_| QueryError::BadParameter("body must be UTF-8".into()))?
        }
    };
    let res = svc.sql(&text).await?;
    let columns: Vec<serde_json::Value> =
        res.columns.iter().map(|(name, ty)| serde_json::json!({"name": name, "type": ty})).collect();
    let rows = res.rows;
    let row_count = rows.len();
    Ok(json(serde_json::json!({"columns": columns, "rows": rows, "row_count": row_count, "truncated": res.truncated})))
}
