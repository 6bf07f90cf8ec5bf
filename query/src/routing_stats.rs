//! Routing statistics per route target (route, upstream, served model) over a recent window: what the
//! gateway's learning strategies (least cost, least latency) blend into their own recent view. Both
//! engines return the same raw integers (counts, sums, nearest-rank percentiles); every mean and rate is
//! derived from those integers here, so DataFusion and ClickHouse answers are identical by construction.

use crate::engine::PERCENTILES;
use crate::error::QueryError;
use crate::params::TimeRange;
use serde::Serialize;

/// Upstream attempts of one target in the window. Only events that reached an upstream count
/// (`upstream` not empty): rejections before any attempt say nothing about a target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RoutingStatsRow {
    pub route: String,
    pub upstream: String,
    pub model: String,
    /// Attempts sent to this target.
    pub requests: u64,
    pub ok: u64,
    /// The target's failures by class (what a breaker or a router should hold against it).
    pub upstream_errors: u64,
    pub timeouts: u64,
    /// Clients that hung up: not the target's fault, reported apart.
    pub client_disconnects: u64,
    /// Nearest-rank p50/p95 of `latency_ms` over successful attempts; zeros when none succeeded.
    pub latency_ms: [u32; 2],
    /// Nearest-rank p50/p95 of `ttft_ms` over successful attempts that produced content.
    pub ttft_ms: Option<[u32; 2]>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_nanousd: u64,
    /// Over successful attempts: output tokens and the milliseconds spent generating them
    /// (`latency_ms - ttft_ms`, at least 1 per attempt), for tokens per second.
    pub ok_output_tokens: u64,
    pub ok_generation_ms: u64,
}

impl RoutingStatsRow {
    /// Failed attempts (upstream errors and timeouts) per attempt, 0 when there were none.
    pub fn error_rate(&self) -> f64 {
        ratio(self.upstream_errors + self.timeouts, self.requests)
    }

    pub fn mean_input_tokens(&self) -> f64 {
        ratio(self.input_tokens, self.requests)
    }

    pub fn mean_output_tokens(&self) -> f64 {
        ratio(self.output_tokens, self.requests)
    }

    /// Exact integer mean (rounded down) of the cost per attempt, in nano-USD.
    pub fn mean_cost_nanousd(&self) -> u64 {
        self.cost_nanousd.checked_div(self.requests).unwrap_or(0)
    }

    pub fn tokens_per_second(&self) -> f64 {
        ratio(self.ok_output_tokens.saturating_mul(1000), self.ok_generation_ms)
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "route": self.route,
            "upstream": self.upstream,
            "model": self.model,
            "requests": self.requests,
            "ok": self.ok,
            "errors": {
                "upstream_error": self.upstream_errors,
                "timeout": self.timeouts,
                "client_disconnect": self.client_disconnects,
            },
            "error_rate": self.error_rate(),
            "latency_ms": {"p50": self.latency_ms[0], "p95": self.latency_ms[1]},
            "ttft_ms": self.ttft_ms.map(|t| serde_json::json!({"p50": t[0], "p95": t[1]})),
            "mean_input_tokens": self.mean_input_tokens(),
            "mean_output_tokens": self.mean_output_tokens(),
            "mean_cost_nanousd": self.mean_cost_nanousd(),
            "cost_nanousd": self.cost_nanousd,
            "tokens_per_second": self.tokens_per_second(),
        })
    }
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// The p50 and p95 of the nearest-rank triple the engines compute.
pub(crate) fn p50_p95(t: [u32; 3]) -> [u32; 2] {
    debug_assert_eq!(PERCENTILES[0], 0.5);
    debug_assert_eq!(PERCENTILES[1], 0.95);
    [t[0], t[1]]
}

/// The window a `/v1/routing-stats` request asks for: `window` (`900s`, `15m`, `2h`; default 15 min)
/// ending at `at` (RFC 3339; default now).
pub fn window(window: Option<&str>, at: Option<&str>) -> Result<TimeRange, QueryError> {
    let secs = match window {
        None => 15 * 60,
        Some(w) => parse_duration_secs(w)
            .ok_or_else(|| QueryError::BadParameter(format!("`window` must be like 900s, 15m or 2h, got `{w}`")))?,
    };
    if secs == 0 || secs > 31 * 86_400 {
        return Err(QueryError::BadParameter("`window` must be between 1s and 31 days".into()));
    }
    let to_us = match at {
        None => chrono::Utc::now().timestamp_micros(),
        Some(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map_err(|e| QueryError::BadParameter(format!("`at` must be RFC 3339: {e}")))?
            .timestamp_micros(),
    };
    Ok(TimeRange { from_us: to_us - secs as i64 * 1_000_000, to_us })
}

fn parse_duration_secs(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// The DataFusion query: one row per target, raw integers only.
pub(crate) const DATAFUSION_SQL: &str = "SELECT route, upstream, served_model AS model, \
     count(*) AS requests, \
     sum(CASE WHEN outcome = 'ok' THEN 1 ELSE 0 END) AS ok, \
     sum(CASE WHEN outcome = 'upstream_error' THEN 1 ELSE 0 END) AS upstream_errors, \
     sum(CASE WHEN outcome = 'timeout' THEN 1 ELSE 0 END) AS timeouts, \
     sum(CASE WHEN outcome = 'client_disconnect' THEN 1 ELSE 0 END) AS client_disconnects, \
     array_agg(latency_ms ORDER BY latency_ms) FILTER (WHERE outcome = 'ok') AS lat, \
     array_agg(ttft_ms ORDER BY ttft_ms) FILTER (WHERE outcome = 'ok' AND ttft_ms > 0) AS ttft, \
     sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, sum(cost_nanousd) AS cost_nanousd, \
     sum(CASE WHEN outcome = 'ok' THEN CAST(output_tokens AS BIGINT) ELSE 0 END) AS ok_output_tokens, \
     sum(CASE WHEN outcome = 'ok' THEN CASE WHEN latency_ms > ttft_ms THEN CAST(latency_ms - ttft_ms AS BIGINT) \
         ELSE 1 END ELSE 0 END) AS ok_generation_ms \
     FROM calls WHERE ts_start >= $1 AND ts_start < $2 AND date >= $3 AND date <= $4 AND upstream <> '' \
     GROUP BY route, upstream, served_model ORDER BY route, upstream, model";

/// The ClickHouse query: the same columns, types cast so 18.16 and current releases agree. Aliases never
/// reuse a column's name: ClickHouse resolves aliases query-wide, so `sum(x) AS x` would nest aggregates.
pub(crate) const CLICKHOUSE_SQL: &str = "SELECT route, upstream, served_model AS model, \
     toUInt64(count()) AS requests, \
     toUInt64(countIf(outcome = 'ok')) AS ok, \
     toUInt64(countIf(outcome = 'upstream_error')) AS upstream_errors, \
     toUInt64(countIf(outcome = 'timeout')) AS timeouts, \
     toUInt64(countIf(outcome = 'client_disconnect')) AS client_disconnects, \
     toUInt64(countIf(outcome = 'ok')) AS ok_calls, \
     arrayMap(x -> toUInt32(x), quantilesExactIf(0.5, 0.95, 0.99)(latency_ms, outcome = 'ok')) AS lat, \
     toUInt64(countIf(outcome = 'ok' AND ttft_ms > 0)) AS ttft_calls, \
     arrayMap(x -> toUInt32(x), quantilesExactIf(0.5, 0.95, 0.99)(ttft_ms, outcome = 'ok' AND ttft_ms > 0)) AS ttft, \
     toUInt64(sum(input_tokens)) AS sum_input_tokens, toUInt64(sum(output_tokens)) AS sum_output_tokens, \
     toUInt64(sum(cost_nanousd)) AS sum_cost_nanousd, \
     toUInt64(sumIf(output_tokens, outcome = 'ok')) AS ok_output_tokens, \
     toUInt64(sumIf(if(latency_ms > ttft_ms, toUInt64(latency_ms - ttft_ms), toUInt64(1)), outcome = 'ok')) \
         AS ok_generation_ms \
     FROM calls WHERE ts_start_us >= ? AND ts_start_us < ? AND date >= ? AND date <= ? AND upstream != '' \
     GROUP BY route, upstream, served_model ORDER BY route, upstream, model";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_and_bound() {
        let r = window(Some("15m"), Some("2026-11-30T10:00:00Z")).unwrap();
        assert_eq!(r.to_us - r.from_us, 900_000_000);
        let r2 = window(Some("2h"), Some("2026-11-30T10:00:00Z")).unwrap();
        assert_eq!((r2.to_us, r2.to_us - r2.from_us), (r.to_us, 7_200_000_000));
        assert!(window(Some("0s"), None).is_err());
        assert!(window(Some("15 parsecs"), None).is_err());
        assert!(window(Some("99999999999999999999d"), None).is_err());
        assert!(window(None, Some("yesterday")).is_err());
    }

    #[test]
    fn derived_figures_come_from_integers() {
        let r = RoutingStatsRow {
            requests: 4,
            upstream_errors: 1,
            timeouts: 1,
            cost_nanousd: 10,
            ok_output_tokens: 300,
            ok_generation_ms: 1500,
            input_tokens: 6,
            ..Default::default()
        };
        assert_eq!(r.error_rate(), 0.5);
        assert_eq!(r.mean_cost_nanousd(), 2);
        assert_eq!(r.tokens_per_second(), 200.0);
        assert_eq!(r.mean_input_tokens(), 1.5);
        assert_eq!(RoutingStatsRow::default().tokens_per_second(), 0.0);
    }
}
