//! HTTP routes of the query service: `/v1/showback`, `/v1/latency`, `/v1/sql`.

use crate::engine::QueryService;
use crate::error::QueryError;
use crate::params::{parse_group_by, TimeRange};
use crate::report::Report;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use std::sync::Arc;

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
        .route("/v1/routing-stats", get(routing_stats))
        .with_state(svc)
}

/// The same routes, each answering 503 with `why`: for a process that has no call log to answer from.
pub fn no_store_app(why: &'static str) -> Router {
    let refuse = move || async move { QueryError::Unavailable(why.to_string()) };
    Router::new()
        .route("/v1/showback", get(refuse))
        .route("/v1/latency", get(refuse))
        .route("/v1/sql", post(refuse))
        .route("/v1/chargeback", get(refuse))
}

fn json(v: serde_json::Value) -> Response {
    ([(http::header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

async fn showback(State(svc): State<Arc<QueryService>>, Query(p): Query<ReportParams>) -> Result<Response, QueryError> {
    let range = TimeRange::parse(p.from.as_deref(), p.to.as_deref())?;
    let report = Report::showback(&svc, range, p.group_by.as_deref(), &["department", "team", "model"]).await?;
    match p.format.as_deref().unwrap_or("json") {
        "json" => Ok(json(report.json())),
        "csv" => Ok(csv_response(report.csv(false))),
        other => Err(QueryError::BadParameter(format!("`format` must be json or csv, got `{other}`"))),
    }
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
        "percentiles": percentile_note(&rows),
        "rows": out,
    })))
}

/// Says how the latency answer's percentiles were computed (exact, or from the histogram and how close).
fn percentile_note(rows: &[crate::engine::LatencyRow]) -> serde_json::Value {
    let approx = rows.iter().any(|r| r.percentiles == crate::rollup::PercentileMethod::Histogram);
    if approx {
        serde_json::json!({
            "method": "histogram",
            "max_relative_error": crate::rollup::HISTOGRAM_RELATIVE_ERROR,
            "definition": "nearest rank over a latency histogram (values below 256 ms exact, larger ones within 0.4%); successful calls only",
        })
    } else {
        serde_json::json!({
            "method": "exact",
            "definition": "nearest rank: the value at 0-based rank floor(p*n) of the sorted values; successful calls only",
        })
    }
}

#[derive(Deserialize)]
struct ChargebackParams {
    month: Option<String>,
    by: Option<String>,
    format: Option<String>,
}

/// `GET /v1/chargeback?month=YYYY-MM&by=department[,team,project,model]&format=csv|json`: the month's
/// bill per line (billable and rejected calls, tokens by kind, cost exact and rounded), with a total
/// that is the exact sum of the lines. Months are UTC calendar months.
async fn chargeback(
    State(svc): State<Arc<QueryService>>,
    Query(p): Query<ChargebackParams>,
) -> Result<Response, QueryError> {
    let month = p.month.ok_or_else(|| QueryError::BadParameter("`month` (YYYY-MM) is required".into()))?;
    let report = Report::chargeback(&svc, &month, p.by.as_deref()).await?;
    match p.format.as_deref().unwrap_or("json") {
        "json" => {
            let mut v = report.json();
            if let Some(m) = v.as_object_mut() {
                m.insert("month".into(), month.into());
            }
            Ok(json(v))
        }
        "csv" => Ok(csv_response(report.csv(true))),
        other => Err(QueryError::BadParameter(format!("`format` must be json or csv, got `{other}`"))),
    }
}

#[derive(Deserialize)]
struct SqlBody {
    sql: String,
}

/// Largest `/v1/sql` body.
const MAX_SQL_BODY: usize = 2 * 1024 * 1024;

/// `POST /v1/sql` with `{"sql": "..."}` (or the SQL as a plain-text body).
async fn sql(State(svc): State<Arc<QueryService>>, body: Body) -> Result<Response, QueryError> {
    // Read here rather than through the `Bytes` extractor, whose refusal is plain text.
    let body = axum::body::to_bytes(body, MAX_SQL_BODY).await.map_err(|_| QueryError::BodyTooLarge(MAX_SQL_BODY))?;
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

#[derive(Deserialize)]
struct RoutingStatsParams {
    window: Option<String>,
    at: Option<String>,
}

/// `GET /v1/routing-stats?window=15m[&at=RFC3339]`: per route target (route, upstream, model), the
/// attempts of the window with their error classes, p50/p95 latency and TTFT, mean tokens and cost, and
/// tokens per second. What the gateway's least-cost and least-latency strategies blend in.
async fn routing_stats(
    State(svc): State<Arc<QueryService>>,
    Query(p): Query<RoutingStatsParams>,
) -> Result<Response, QueryError> {
    let range = crate::routing_stats::window(p.window.as_deref(), p.at.as_deref())?;
    let rows = svc.routing_stats(&range).await?;
    Ok(json(serde_json::json!({
        "from": TimeRange::render(range.from_us),
        "to": TimeRange::render(range.to_us),
        "percentiles": "nearest rank over successful attempts",
        "targets": rows.iter().map(|r| r.to_json()).collect::<Vec<_>>(),
    })))
}
