//! `GET /v1/routes` (keys with `query = true`): every route with its strategy, targets, weights,
//! breaker state and recent error rate, and its retry budget's use.

use super::RouteTable;
use std::time::Instant;

/// The routes as `/v1/routes` shows them.
pub fn routes_json(table: &RouteTable) -> serde_json::Value {
    let now = Instant::now();
    let routes: Vec<serde_json::Value> = table
        .routes
        .iter()
        .map(|r| {
            let targets: Vec<serde_json::Value> = r
                .targets
                .iter()
                .map(|t| {
                    let (calls, failures) = t.breaker.recent(now);
                    // Display only; counts stay integers.
                    let rate = if calls == 0 { 0.0 } else { (failures as f64 * 10_000.0 / calls as f64).round() / 10_000.0 };
                    serde_json::json!({
                        "upstream": t.upstream.cfg.name,
                        "provider": t.upstream.provider.kind(),
                        "model": t.model,
                        "weight": t.weight,
                        "breaker": t.breaker.state(now).as_str(),
                        "breaker_enabled": t.breaker.enabled(),
                        "breaker_opened": t.breaker.opened.load(std::sync::atomic::Ordering::Relaxed),
                        "recent_calls": calls,
                        "recent_failures": failures,
                        "recent_error_rate": rate,
                    })
                })
                .collect();
            let (requests, retries) = r.retry_budget.recent(now);
            serde_json::json!({
                "model": r.spec.model,
                "strategy": r.label,
                "configured": r.spec.configured,
                "max_attempts": r.spec.max_attempts,
                "sticky": r.spec.sticky.map(|s| match s { crate::config::Sticky::Key => "key", crate::config::Sticky::User => "user" }),
                "targets": targets,
                "retry_budget": {
                    "percent": r.spec.retry_budget.percent,
                    "window_ms": r.spec.retry_budget.window_ms,
                    "min_retries": r.spec.retry_budget.min_retries,
                    "recent_requests": requests,
                    "recent_retries": retries,
                },
            })
        })
        .collect();
    serde_json::json!({ "routes": routes })
}
