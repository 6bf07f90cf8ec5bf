//! Routing statistics per target (provider, upstream, served model) over a window: calls, failures,
//! latency and TTFT percentiles, output tokens and cost. What `least_latency` / `least_cost` routing and
//! circuit breakers blend with the gateway's own recent calls. Built from the showback and latency
//! reports, so it reads the rollup for whole days and the raw table for short windows, like they do.

use crate::engine::QueryService;
use crate::error::QueryError;
use crate::params::TimeRange;
use crate::rollup::PercentileMethod;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RoutingStatsRow {
    pub provider: String,
    pub upstream: String,
    pub model: String,
    /// Attempts that reached this target.
    pub calls: u64,
    /// Of which did not end `ok`.
    pub failures: u64,
    pub output_tokens: u64,
    pub cost_nanousd: u64,
    /// p50/p95/p99 over successful calls; `None` when there were none.
    pub latency_ms: Option<[u32; 3]>,
    pub ttft_ms: Option<[u32; 3]>,
    pub percentiles: Option<PercentileMethod>,
}

const TARGET: [(&str, &str); 3] = [("provider", "provider"), ("upstream", "upstream"), ("model", "served_model")];

impl QueryService {
    /// Statistics per routing target over `range`, busiest first.
    pub async fn routing_stats(&self, range: &TimeRange) -> Result<Vec<RoutingStatsRow>, QueryError> {
        let mut by_outcome = TARGET.to_vec();
        by_outcome.push(("outcome", "outcome"));
        let mut rows: BTreeMap<Vec<String>, RoutingStatsRow> = BTreeMap::new();
        for r in self.showback(range, &by_outcome).await? {
            let key: Vec<String> = r.group.iter().take(3).map(|(_, v)| v.clone()).collect();
            let e = rows.entry(key.clone()).or_insert_with(|| RoutingStatsRow {
                provider: key[0].clone(),
                upstream: key[1].clone(),
                model: key[2].clone(),
                ..RoutingStatsRow::default()
            });
            e.calls += r.totals.calls;
            e.output_tokens += r.totals.output_tokens;
            e.cost_nanousd += r.totals.cost_nanousd;
            if r.group.get(3).map(|(_, v)| v.as_str()) != Some("ok") {
                e.failures += r.totals.calls;
            }
        }
        for l in self.latency(range, &TARGET).await? {
            let key: Vec<String> = l.group.iter().map(|(_, v)| v.clone()).collect();
            if let Some(e) = rows.get_mut(&key) {
                e.latency_ms = Some(l.latency_ms);
                e.ttft_ms = l.ttft_ms;
                e.percentiles = Some(l.percentiles);
            }
        }
        let mut out: Vec<RoutingStatsRow> = rows.into_values().collect();
        out.sort_by(|a, b| {
            b.calls
                .cmp(&a.calls)
                .then_with(|| (&a.provider, &a.upstream, &a.model).cmp(&(&b.provider, &b.upstream, &b.model)))
        });
        Ok(out)
    }
}
