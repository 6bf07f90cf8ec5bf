//! Budget routes: `GET /v1/budgets` and `/v1/budgets/{id}` (mounted behind the query API's key check;
//! each answer first refreshes the spend from the query service, so it is authoritative) and the admin
//! API behind admin keys: `GET /admin/budgets`, `POST /admin/budgets/{id}/cap` (`{"cap_usd": "12.50"}`),
//! `POST /admin/budgets/{id}/reset`, `POST /admin/reload`. Every admin change is logged with who and when.

use crate::budget::ledger::BudgetState;
use crate::budget::BudgetSystem;
use crate::error::openai_error_response;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http::{HeaderMap, StatusCode};
use std::sync::Arc;
use tollgate_events::format_usd;

pub fn rfc3339(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// One budget's state as the API shows it.
pub fn status_json(b: &BudgetState, now_us: i64) -> serde_json::Value {
    let g = b.lock();
    let def = &g.def;
    let cap = g.cap;
    let mut o = serde_json::json!({
        "id": b.id,
        "scope": b.scope.as_str(),
        "match": b.value,
        "period": def.period.period.as_str(),
        "time_zone": def.period.tz.name(),
        "action": match def.action { crate::budget::config::Action::Reject => "reject", crate::budget::config::Action::Downgrade => "downgrade" },
        "downgrade_to": def.downgrade_to,
        "soft_thresholds": def.soft_thresholds,
        "cap_nanousd": cap,
        "cap_usd": format_usd(cap),
        "synced_at": g.synced_at_us.map(rfc3339),
        "admitted": g.admitted,
        "rejected": g.rejected,
        "downgraded": g.downgraded,
    });
    let Some(w) = &g.win else {
        if let Some(m) = o.as_object_mut() {
            m.insert("state".into(), "inactive".into());
        }
        return o;
    };
    let spent = w.spent();
    let elapsed = (now_us - w.count_from_us).max(1) as u128;
    let length = (w.end_us - w.count_from_us).max(1) as u128;
    let burn_per_hour = (u128::from(spent) * 3_600_000_000 / elapsed).min(u128::from(u64::MAX)) as u64;
    let projected = (u128::from(spent) * length / elapsed).min(u128::from(u64::MAX)) as u64;
    let lowest = def.soft_thresholds.first().copied().unwrap_or(100);
    let state = if spent >= cap {
        "exceeded"
    } else if u128::from(spent) * 100 >= u128::from(cap) * u128::from(lowest) {
        "warning"
    } else {
        "ok"
    };
    // Percent is for display only; money stays in integers.
    let percent = (spent as f64 * 10_000.0 / cap as f64).round() / 100.0;
    if let Some(m) = o.as_object_mut() {
        for (k, v) in [
            ("window_start", rfc3339(w.start_us).into()),
            ("counting_from", rfc3339(w.count_from_us).into()),
            ("resets_at", rfc3339(w.end_us).into()),
            ("spent_nanousd", spent.into()),
            ("spent_usd", format_usd(spent).into()),
            ("spent_stored_nanousd", w.snapshot.into()),
            ("spent_unsynced_nanousd", w.local.into()),
            ("reserved_nanousd", w.reserved.into()),
            ("reserved_usd", format_usd(w.reserved).into()),
            ("percent", percent.into()),
            ("burn_rate_nanousd_per_hour", burn_per_hour.into()),
            ("projected_nanousd", projected.into()),
            ("projected_usd", format_usd(projected).into()),
            ("state", state.into()),
        ] {
            m.insert(k.into(), v);
        }
    }
    o
}

fn json(status: StatusCode, v: serde_json::Value) -> Response {
    (status, [(http::header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

fn not_found(id: &str) -> Response {
    openai_error_response(StatusCode::NOT_FOUND, &format!("no budget `{id}`"), "invalid_request_error", "not_found")
}

async fn refresh(sys: &BudgetSystem, b: &Arc<BudgetState>) {
    if let Some(src) = sys.source() {
        if let Err(error) = sys.sync_one(b, src.as_ref()).await {
            tracing::warn!(budget = %b.id, %error, "budget spend refresh failed");
        }
    }
}

async fn list(State(sys): State<Arc<BudgetSystem>>) -> Response {
    // One grouped refresh for all of them, not one store query per budget.
    sys.sync_all().await;
    let budgets = sys.budgets();
    let mut out = Vec::new();
    for b in budgets.iter() {
        out.push(status_json(b, sys.now_us()));
    }
    json(StatusCode::OK, serde_json::json!({ "budgets": out }))
}

async fn one(State(sys): State<Arc<BudgetSystem>>, Path(id): Path<String>) -> Response {
    let Some(b) = sys.budget(&id) else { return not_found(&id) };
    refresh(&sys, &b).await;
    json(StatusCode::OK, status_json(&b, sys.now_us()))
}

/// `/v1/budgets` routes (the caller adds the query API's authentication).
pub fn budget_routes(sys: Arc<BudgetSystem>) -> Router {
    Router::new().route("/v1/budgets", get(list)).route("/v1/budgets/{id}", get(one)).with_state(sys)
}

fn admin_denied() -> Response {
    openai_error_response(
        StatusCode::UNAUTHORIZED,
        "the admin API needs an admin key (`[[admin_keys]]`)",
        "invalid_request_error",
        "admin_key_required",
    )
}

async fn admin_list(State(sys): State<Arc<BudgetSystem>>, headers: HeaderMap) -> Response {
    if sys.admin(&headers).is_none() {
        return admin_denied();
    }
    list(State(sys)).await
}

#[derive(serde::Deserialize)]
struct CapBody {
    cap_usd: String,
}

async fn set_cap(
    State(sys): State<Arc<BudgetSystem>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(who) = sys.admin(&headers) else { return admin_denied() };
    let Some(b) = sys.budget(&id) else { return not_found(&id) };
    let bad = |m: String| openai_error_response(StatusCode::BAD_REQUEST, &m, "invalid_request_error", "invalid_body");
    let parsed: CapBody = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return bad(format!("expected {{\"cap_usd\": \"12.50\"}}: {e}")),
    };
    let cap = match tollgate_events::parse_usd_to_nano(&parsed.cap_usd) {
        Ok(c) if c > 0 => c,
        Ok(_) => return bad("`cap_usd` must be greater than 0".into()),
        Err(e) => return bad(format!("`cap_usd`: {e}")),
    };
    let old = match sys.set_cap(&b, cap) {
        Ok(old) => old,
        Err(e) => {
            tracing::error!(budget = %id, error = %e, "admin cap change not saved");
            return openai_error_response(StatusCode::INTERNAL_SERVER_ERROR, &e, "server_error", "not_saved");
        }
    };
    sys.audit(
        &who,
        "set_cap",
        &id,
        serde_json::json!({"old_cap_usd": format_usd(old), "new_cap_usd": format_usd(cap)}),
    );
    json(StatusCode::OK, status_json(&b, sys.now_us()))
}

async fn reset(State(sys): State<Arc<BudgetSystem>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let Some(who) = sys.admin(&headers) else { return admin_denied() };
    let Some(b) = sys.budget(&id) else { return not_found(&id) };
    let now = sys.now_us();
    let spent_before = {
        let mut g = b.lock();
        let before = g.win.as_ref().map(|w| w.spent()).unwrap_or(0);
        g.reset(now);
        before
    };
    sys.audit(&who, "reset_window", &id, serde_json::json!({"spent_before_usd": format_usd(spent_before)}));
    json(StatusCode::OK, status_json(&b, now))
}

async fn reload(State(sys): State<Arc<BudgetSystem>>, headers: HeaderMap) -> Response {
    let Some(who) = sys.admin(&headers) else { return admin_denied() };
    match sys.reload(&who) {
        Ok(()) => json(StatusCode::OK, serde_json::json!({"reloaded": true, "budgets": sys.budgets().len()})),
        Err(e) => openai_error_response(StatusCode::BAD_REQUEST, &e, "invalid_request_error", "invalid_config"),
    }
}

/// `/admin/*` routes; each handler checks the admin key itself.
pub fn admin_routes(sys: Arc<BudgetSystem>) -> Router {
    Router::new()
        .route("/admin/budgets", get(admin_list))
        .route("/admin/budgets/{id}/cap", post(set_cap))
        .route("/admin/budgets/{id}/reset", post(reset))
        .route("/admin/reload", post(reload))
        .with_state(sys)
}
