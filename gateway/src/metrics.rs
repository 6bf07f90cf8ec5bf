//! Gateway metrics in Prometheus text format: queue and spill counters, and per-model call, token and
//! cost counters (cost in nano-USD, an exact integer) updated by the metering task off the request path.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tollgate_events::CallEvent;

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
struct ModelCounters {
    calls: u64,
    input_tokens: u64,
    output_tokens: u64,
    cached_input_tokens: u64,
    reasoning_tokens: u64,
    cost_nanousd: u64,
    duration_ms_sum: u64,
    ttft_ms_sum: u64,
    ttft_count: u64,
}

#[derive(Default)]
pub struct GatewayMetrics {
    /// Call events created by request handlers.
    pub events_emitted: Counter,
    /// Events written to the spill file because the queue was full.
    pub events_spilled: Counter,
    /// Events read back from the spill file.
    pub events_replayed: Counter,
    /// Events that could be neither queued nor spilled (disk error). Should stay 0; logged loudly.
    pub events_lost: Counter,
    /// Events with tokens but no matching price (stored with `price_id = "unpriced"`).
    pub unpriced_events: Counter,
    /// Events whose provider-reported usage was capped (`usage_source = "capped"`).
    pub usage_capped: Counter,
    /// model → outcome → counters; looked up by `&str`, so the common case allocates nothing.
    by_model: Mutex<BTreeMap<String, BTreeMap<&'static str, ModelCounters>>>,
}

impl GatewayMetrics {
    /// Called by the metering task for each finished event.
    pub fn observe(&self, ev: &CallEvent) {
        let Ok(mut m) = self.by_model.lock() else { return };
        let model = if ev.served_model.is_empty() { &ev.requested_model } else { &ev.served_model };
        if !m.contains_key(model.as_str()) {
            m.insert(model.clone(), BTreeMap::new());
        }
        let Some(per_outcome) = m.get_mut(model.as_str()) else { return };
        let c = per_outcome.entry(ev.outcome.as_str()).or_default();
        c.calls += 1;
        c.input_tokens += ev.input_tokens;
        c.output_tokens += ev.output_tokens;
        c.cached_input_tokens += ev.cached_input_tokens;
        c.reasoning_tokens += ev.reasoning_tokens;
        c.cost_nanousd += ev.cost_nanousd;
        c.duration_ms_sum += u64::from(ev.latency_ms);
        if ev.ttft_ms > 0 {
            c.ttft_ms_sum += u64::from(ev.ttft_ms);
            c.ttft_count += 1;
        }
    }

    pub fn render(&self, out: &mut String, queue_depth: usize) {
        let scalar = |out: &mut String, name: &str, help: &str, kind: &str, v: u64| {
            tollgate_events::prom::write_scalar(out, name, kind, help, v);
        };
        scalar(
            out,
            "tollgate_events_emitted_total",
            "Call events created by the gateway.",
            "counter",
            self.events_emitted.get(),
        );
        scalar(
            out,
            "tollgate_events_spilled_total",
            "Call events spilled to disk because the event queue was full.",
            "counter",
            self.events_spilled.get(),
        );
        scalar(
            out,
            "tollgate_events_replayed_total",
            "Spilled call events replayed into the queue.",
            "counter",
            self.events_replayed.get(),
        );
        scalar(
            out,
            "tollgate_events_lost_total",
            "Call events that could be neither queued nor spilled.",
            "counter",
            self.events_lost.get(),
        );
        scalar(
            out,
            "tollgate_unpriced_events_total",
            "Call events with tokens whose model matched no price (price_id \"unpriced\", cost 0).",
            "counter",
            self.unpriced_events.get(),
        );
        scalar(
            out,
            "tollgate_usage_capped_total",
            "Call events whose provider-reported token counts were not believable and were capped.",
            "counter",
            self.usage_capped.get(),
        );
        scalar(
            out,
            "tollgate_event_queue_depth",
            "Events waiting in the gateway's metering queue.",
            "gauge",
            queue_depth as u64,
        );
        let Ok(m) = self.by_model.lock() else { return };
        type Family = (&'static str, &'static str, fn(&ModelCounters) -> u64);
        let families: [Family; 9] = [
            ("tollgate_calls_total", "Calls by model and outcome.", |c| c.calls),
            ("tollgate_input_tokens_total", "Input tokens (including cached).", |c| c.input_tokens),
            ("tollgate_output_tokens_total", "Output tokens (including reasoning).", |c| c.output_tokens),
            ("tollgate_cached_input_tokens_total", "Input tokens read from the provider's cache.", |c| {
                c.cached_input_tokens
            }),
            ("tollgate_reasoning_tokens_total", "Reasoning tokens.", |c| c.reasoning_tokens),
            ("tollgate_cost_nanousd_total", "Cost in nano-USD (USD x 1e9).", |c| c.cost_nanousd),
            ("gen_ai_client_operation_duration_milliseconds_sum", "Sum of call durations.", |c| c.duration_ms_sum),
            ("gen_ai_server_time_to_first_token_milliseconds_sum", "Sum of times to first token.", |c| c.ttft_ms_sum),
            ("gen_ai_server_time_to_first_token_milliseconds_count", "Calls with a first token.", |c| c.ttft_count),
        ];
        for (name, help, get) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (model, per_outcome) in m.iter() {
                for (outcome, c) in per_outcome {
                    let _ = writeln!(
                        out,
                        "{name}{{gen_ai_request_model=\"{}\",outcome=\"{outcome}\"}} {}",
                        escape(model),
                        get(c)
                    );
                }
            }
        }
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A route's routing series (configured routes only).
pub struct RouteSeries<'a> {
    pub route: &'a str,
    pub retries: u64,
    pub retries_denied: u64,
    pub targets: Vec<TargetSeries<'a>>,
}

pub struct TargetSeries<'a> {
    pub target: &'a str,
    /// 0 closed, 1 open, 2 half-open.
    pub state: u8,
    pub opened: u64,
}

/// Retries and circuit-breaker state per route and target.
pub fn render_routes(out: &mut String, routes: &[RouteSeries<'_>]) {
    if routes.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP tollgate_route_retries_total Retries granted by the route's retry budget.\n# TYPE tollgate_route_retries_total counter");
    for r in routes {
        let _ = writeln!(out, "tollgate_route_retries_total{{route=\"{}\"}} {}", escape(r.route), r.retries);
    }
    let _ = writeln!(out, "# HELP tollgate_route_retries_denied_total Retries refused because the retry budget was used up.\n# TYPE tollgate_route_retries_denied_total counter");
    for r in routes {
        let _ =
            writeln!(out, "tollgate_route_retries_denied_total{{route=\"{}\"}} {}", escape(r.route), r.retries_denied);
    }
    let _ = writeln!(out, "# HELP tollgate_breaker_state Circuit breaker per target: 0 closed, 1 open, 2 half-open.\n# TYPE tollgate_breaker_state gauge");
    for r in routes {
        for t in &r.targets {
            let _ = writeln!(
                out,
                "tollgate_breaker_state{{route=\"{}\",target=\"{}\"}} {}",
                escape(r.route),
                escape(t.target),
                t.state
            );
        }
    }
    let _ = writeln!(out, "# HELP tollgate_breaker_opened_total Times a target's circuit breaker opened.\n# TYPE tollgate_breaker_opened_total counter");
    for r in routes {
        for t in &r.targets {
            let _ = writeln!(
                out,
                "tollgate_breaker_opened_total{{route=\"{}\",target=\"{}\"}} {}",
                escape(r.route),
                escape(t.target),
                t.opened
            );
        }
    }
}
