//! The gateway's metrics, registered into the process's one registry: OpenTelemetry GenAI histograms
//! (`gen_ai_client_token_usage`, `gen_ai_client_operation_duration_seconds`,
//! `gen_ai_server_time_to_first_token_seconds`, `gen_ai_server_time_per_output_token_seconds`), tollgate's
//! cost and token counters, the gateway overhead histogram, in-flight requests and the metering queue.
//! `observe` is called by the metering task for each finished event, off the request path.
//!
//! Label values that clients choose are bounded: a requested model the config does not name is `other`,
//! and every other client- or upstream-given value (served model, attribution, error type) keeps its
//! first `metrics.max_label_values` distinct values and counts the rest under `other`.

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use tollgate_events::prom::{self, Kind, LabelCap, MetricsConfig};
use tollgate_events::{CallEvent, Endpoint, Outcome};

/// The response model of a call that reached no upstream: empty (absent from the exposition), shared.
static NO_RESPONSE_MODEL: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(""));

/// The OpenTelemetry GenAI attributes of one call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GenAiLabels {
    pub gen_ai_operation_name: &'static str,
    pub gen_ai_provider_name: &'static str,
    pub gen_ai_request_model: Arc<str>,
    pub gen_ai_response_model: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    #[prometheus(flatten)]
    call: GenAiLabels,
    /// Empty (absent) on success; the outcome otherwise, a closed set.
    error_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    #[prometheus(flatten)]
    call: GenAiLabels,
    gen_ai_token_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    gen_ai_operation_name: &'static str,
    gen_ai_provider_name: &'static str,
    gen_ai_request_model: Arc<str>,
    outcome: &'static str,
}

type Labelled<L, M = Counter> = Family<L, M>;
type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;
/// Attribution labels chosen by `metrics.cost_labels`, then model and provider.
type CostLabels = Vec<(&'static str, Arc<str>)>;

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
    /// Panics caught while metering an event (the event was still emitted).
    pub metering_panics: Counter,
    /// Upstream SSE lines (or multi-line events) over `gateway.max_sse_line_bytes`, passed on unread.
    pub sse_lines_too_long: Counter,
    /// Client requests cut by the body-read timeout.
    pub client_read_timeouts: Counter,
    /// Requests being served (a `CallGuard` alive).
    pub in_flight: Gauge,
    /// Events waiting for the metering task, as seen at its last tick.
    pub queue_depth: Gauge,
    duration: Histograms<DurationLabels>,
    token_usage: Histograms<TokenLabels>,
    ttft: Histograms<GenAiLabels>,
    tpot: Histograms<GenAiLabels>,
    overhead: Histogram,
    tokens: Labelled<TokenLabels>,
    requests: Labelled<RequestLabels>,
    cost: Labelled<CostLabels>,
    saved: Labelled<CostLabels>,
    models: LabelCap,
    served_models: LabelCap,
    cost_fields: Vec<(&'static str, LabelCap)>,
    /// The series one kind of call updates, found once: `observe` then touches atomics only, instead of
    /// hashing the labels and taking each family's lock about ten times per event. Bounded like the
    /// labels themselves (known models or `other`, capped response models, a closed set of outcomes).
    handles: std::sync::Mutex<HashMap<(GenAiLabels, &'static str), CallSeries, foldhash::fast::RandomState>>,
}

/// The series of one (labels, outcome) pair. A series is made on first use, as `get_or_create` would:
/// the exposition shows no series a call never touched.
struct CallSeries {
    /// The labels of the key (the series' constructors need them after the key moved into the map).
    call: GenAiLabels,
    requests: Option<Counter>,
    duration: Option<Histogram>,
    token_usage: [Option<Histogram>; 2],
    tokens: [Option<Counter>; 5],
    ttft: Option<Histogram>,
    tpot: Option<Histogram>,
    /// The cost and saving counters of the last attribution seen with these labels: the raw values of
    /// `metrics.cost_labels`' fields, compared (no lock, no allocation) before the labels are built again.
    cost: Option<CostSeries>,
}

struct CostSeries {
    attribution: Vec<String>,
    cost: Option<Counter>,
    saved: Option<Counter>,
}

/// A cached series, or the family's one for these labels (the handle shares its atomics).
fn series<'a, L, M: Clone, C: prometheus_client::metrics::family::MetricConstructor<M>>(
    slot: &'a mut Option<M>,
    family: &Family<L, M, C>,
    labels: impl FnOnce() -> L,
) -> &'a M
where
    L: Clone + std::hash::Hash + Eq,
{
    slot.get_or_insert_with(|| family.get_or_create(&labels()).clone())
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        GatewayMetrics::new(&MetricsConfig::default(), std::iter::empty())
    }
}

impl GatewayMetrics {
    /// `models`: the model names the config routes; any other requested model is labelled `other`.
    pub fn new<'a>(cfg: &MetricsConfig, models: impl IntoIterator<Item = &'a str>) -> GatewayMetrics {
        let models: Vec<&str> = models.into_iter().collect();
        let cost_fields = cfg
            .cost_labels
            .iter()
            .filter_map(|l| prom::COST_LABEL_FIELDS.iter().find(|f| **f == l.as_str()))
            .map(|f| (*f, LabelCap::new(cfg.max_label_values)))
            .collect();
        GatewayMetrics {
            events_emitted: Counter::default(),
            events_spilled: Counter::default(),
            events_replayed: Counter::default(),
            events_lost: Counter::default(),
            unpriced_events: Counter::default(),
            usage_capped: Counter::default(),
            metering_panics: Counter::default(),
            sse_lines_too_long: Counter::default(),
            client_read_timeouts: Counter::default(),
            in_flight: Gauge::default(),
            queue_depth: Gauge::default(),
            duration: Family::new_with_constructor(|| Histogram::new(prom::OPERATION_DURATION_BUCKETS)),
            token_usage: Family::new_with_constructor(|| Histogram::new(prom::TOKEN_USAGE_BUCKETS)),
            ttft: Family::new_with_constructor(|| Histogram::new(prom::TIME_TO_FIRST_TOKEN_BUCKETS)),
            tpot: Family::new_with_constructor(|| Histogram::new(prom::TIME_PER_OUTPUT_TOKEN_BUCKETS)),
            overhead: Histogram::new(prom::OVERHEAD_BUCKETS),
            tokens: Family::default(),
            requests: Family::default(),
            cost: Family::default(),
            saved: Family::default(),
            models: LabelCap::with_known(0, models.iter().copied()),
            served_models: LabelCap::with_known(cfg.max_label_values, models.iter().copied()),
            cost_fields,
            handles: Default::default(),
        }
    }

    /// Puts every gateway family into the process's registry. Routing and circuit-breaker families
    /// (the routing phase's own metrics) are registered next to these by whoever owns them, into the
    /// same registry.
    pub fn register(&self, r: &mut Registry) {
        r.register_with_unit(
            "gen_ai_client_operation_duration",
            "GenAI operation duration as the client saw it (OpenTelemetry gen_ai.client.operation.duration)",
            Unit::Seconds,
            self.duration.clone(),
        );
        r.register(
            "gen_ai_client_token_usage",
            "Input and output tokens per call (OpenTelemetry gen_ai.client.token.usage)",
            self.token_usage.clone(),
        );
        r.register_with_unit(
            "gen_ai_server_time_to_first_token",
            "Time to the first content of successful streamed calls (OpenTelemetry gen_ai.server.time_to_first_token)",
            Unit::Seconds,
            self.ttft.clone(),
        );
        r.register_with_unit(
            "gen_ai_server_time_per_output_token",
            "Time per output token after the first, successful streamed calls (OpenTelemetry gen_ai.server.time_per_output_token)",
            Unit::Seconds,
            self.tpot.clone(),
        );
        r.register_with_unit(
            "tollgate_gateway_overhead",
            "Time the gateway added to a call (before sending upstream and after the upstream's headers)",
            Unit::Seconds,
            self.overhead.clone(),
        );
        r.register(
            "tollgate_tokens",
            "Tokens by kind: input (incl. cached), output (incl. reasoning), cache_read, cache_write, reasoning",
            self.tokens.clone(),
        );
        r.register("tollgate_requests", "Call events by outcome", self.requests.clone());
        r.register("tollgate_cost_nanousd", "Cost in nano-USD (USD x 1e9), exact integers", self.cost.clone());
        r.register(
            "tollgate_cache_saved_nanousd",
            "Cost in nano-USD that response-cache hits saved",
            self.saved.clone(),
        );
        r.register("tollgate_requests_in_flight", "Requests being served", self.in_flight.clone());
        r.register(
            "tollgate_event_queue_depth",
            "Events waiting in the gateway's metering queue",
            self.queue_depth.clone(),
        );
        r.register("tollgate_events_emitted", "Call events created by the gateway", self.events_emitted.clone());
        r.register(
            "tollgate_events_spilled",
            "Call events spilled to disk because the event queue was full",
            self.events_spilled.clone(),
        );
        r.register(
            "tollgate_events_replayed",
            "Spilled call events replayed into the queue",
            self.events_replayed.clone(),
        );
        r.register(
            "tollgate_unpriced_events",
            "Call events with tokens whose model matched no price (price_id unpriced, cost 0)",
            self.unpriced_events.clone(),
        );
        r.register(
            "tollgate_usage_capped",
            "Call events whose provider-reported token counts were not believable and were capped",
            self.usage_capped.clone(),
        );
        r.register(
            "tollgate_events_lost",
            "Call events that could be neither queued nor spilled",
            self.events_lost.clone(),
        );
        r.register(
            "tollgate_metering_panics",
            "Panics caught while metering an event; the event was still emitted",
            self.metering_panics.clone(),
        );
        r.register(
            "tollgate_sse_lines_too_long",
            "Upstream SSE lines over gateway.max_sse_line_bytes, passed on without being read",
            self.sse_lines_too_long.clone(),
        );
        r.register(
            "tollgate_client_read_timeouts",
            "Client requests cut by gateway.body_read_timeout_ms",
            self.client_read_timeouts.clone(),
        );
    }

    /// The GenAI attributes of an event, with bounded model labels.
    pub fn labels(&self, ev: &CallEvent) -> GenAiLabels {
        GenAiLabels {
            gen_ai_operation_name: operation_name(ev.endpoint),
            gen_ai_provider_name: provider_name(&ev.provider),
            gen_ai_request_model: self.models.known_or_other(&ev.requested_model),
            // Only calls routed to an upstream have a response model; a rejected call's `served_model` is
            // still just what the client asked for.
            gen_ai_response_model: if ev.served_model.is_empty() || ev.provider.is_empty() {
                NO_RESPONSE_MODEL.clone()
            } else {
                self.served_models.bound(&ev.served_model)
            },
        }
    }

    /// Called by the metering task for each finished event.
    pub fn observe(&self, ev: &CallEvent) {
        let ok = ev.outcome == Outcome::Ok;
        let error_type = if ok { "" } else { ev.outcome.as_str() };
        let mut all = self.handles.lock().unwrap_or_else(|p| p.into_inner());
        let h = all.entry((self.labels(ev), ev.outcome.as_str())).or_insert_with_key(|(call, _)| CallSeries {
            call: call.clone(),
            requests: None,
            duration: None,
            token_usage: Default::default(),
            tokens: Default::default(),
            ttft: None,
            tpot: None,
            cost: None,
        });
        let call = &h.call;
        series(&mut h.requests, &self.requests, || RequestLabels {
            gen_ai_operation_name: call.gen_ai_operation_name,
            gen_ai_provider_name: call.gen_ai_provider_name,
            gen_ai_request_model: call.gen_ai_request_model.clone(),
            outcome: ev.outcome.as_str(),
        })
        .inc();
        series(&mut h.duration, &self.duration, || DurationLabels { call: call.clone(), error_type })
            .observe(f64::from(ev.latency_ms) / 1e3);
        let kinds = [
            ("input", ev.input_tokens),
            ("output", ev.output_tokens),
            ("cache_read", ev.cached_input_tokens),
            ("cache_write", ev.cache_write_tokens),
            ("reasoning", ev.reasoning_tokens),
        ];
        let any_usage = ev.input_tokens > 0 || ev.output_tokens > 0;
        for (i, (kind, n)) in kinds.into_iter().enumerate() {
            let labels = || TokenLabels { call: call.clone(), gen_ai_token_type: kind };
            // The histogram is the convention's (input and output, for calls that used tokens).
            if i < 2 && any_usage {
                series(&mut h.token_usage[i], &self.token_usage, labels).observe(n as f64);
            }
            if n > 0 {
                series(&mut h.tokens[i], &self.tokens, labels).inc_by(n);
            }
        }
        if ok && ev.stream && ev.ttft_ms > 0 {
            series(&mut h.ttft, &self.ttft, || call.clone()).observe(f64::from(ev.ttft_ms) / 1e3);
            if ev.output_tokens > 1 && ev.latency_ms > ev.ttft_ms {
                let per = f64::from(ev.latency_ms - ev.ttft_ms) / 1e3 / (ev.output_tokens - 1) as f64;
                series(&mut h.tpot, &self.tpot, || call.clone()).observe(per);
            }
        }
        if ev.cost_nanousd > 0 || ev.saved_nanousd > 0 {
            let same = |c: &CostSeries| {
                c.attribution.iter().zip(&self.cost_fields).all(|(v, (field, _))| v == attribution(ev, field))
            };
            if !h.cost.as_ref().is_some_and(same) {
                h.cost = Some(CostSeries {
                    attribution: self.cost_fields.iter().map(|(field, _)| attribution(ev, field).to_owned()).collect(),
                    cost: None,
                    saved: None,
                });
            }
            if let Some(c) = h.cost.as_mut() {
                let labels = || {
                    let mut labels = CostLabels::with_capacity(self.cost_fields.len() + 2);
                    labels.extend(
                        self.cost_fields.iter().map(|(field, cap)| (*field, cap.bound(attribution(ev, field)))),
                    );
                    labels.push(("gen_ai_request_model", call.gen_ai_request_model.clone()));
                    labels.push(("gen_ai_provider_name", Arc::from(call.gen_ai_provider_name)));
                    labels
                };
                if ev.cost_nanousd > 0 {
                    series(&mut c.cost, &self.cost, labels).inc_by(ev.cost_nanousd);
                }
                if ev.saved_nanousd > 0 {
                    series(&mut c.saved, &self.saved, labels).inc_by(ev.saved_nanousd);
                }
            }
        }
        drop(all);
        if ev.upstream_latency_ms > 0 {
            self.overhead.observe(f64::from(ev.gateway_overhead_us) / 1e6);
        }
    }
}

fn attribution<'a>(ev: &'a CallEvent, field: &str) -> &'a str {
    match field {
        "tenant" => &ev.tenant,
        "department" => &ev.department,
        "team" => &ev.team,
        "project" => &ev.project,
        "user" => &ev.user,
        "api_key_id" => &ev.api_key_id,
        _ => "",
    }
}

/// `gen_ai.operation.name` for an endpoint (the convention's well-known values where one applies).
pub fn operation_name(e: Endpoint) -> &'static str {
    match e {
        // The Responses API generates as chat does (the convention has no name of its own for it).
        Endpoint::Chat | Endpoint::Messages | Endpoint::Responses => "chat",
        Endpoint::Completions => "text_completion",
        Endpoint::Embeddings => "embeddings",
        Endpoint::Models => "models",
        Endpoint::Other => "other",
        // No well-known value: the endpoint's own name.
        Endpoint::AudioTranscriptions
        | Endpoint::AudioTranslations
        | Endpoint::AudioSpeech
        | Endpoint::Images
        | Endpoint::Moderations => e.as_str(),
    }
}

/// `gen_ai.provider.name` for an upstream kind (the convention's well-known values where one applies).
pub fn provider_name(p: &str) -> &'static str {
    match p {
        "" => "",
        "openai" => "openai",
        "anthropic" => "anthropic",
        "azure_openai" => "azure.ai.openai",
        "openai_compatible" => "openai_compatible",
        _ => prom::OTHER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(m: &GatewayMetrics) -> String {
        let mut r = Registry::default();
        m.register(&mut r);
        prom::encode(&r, false)
    }

    #[test]
    fn unknown_and_huge_models_collapse_into_other() {
        let m = GatewayMetrics::new(&MetricsConfig { max_label_values: 3, ..Default::default() }, ["gpt-4o"]);
        for i in 0..50 {
            let ev = CallEvent {
                requested_model: format!("{}{i}", "x".repeat(1 << 20)).into(),
                served_model: format!("{}{i}", "y".repeat(1 << 20)).into(),
                outcome: Outcome::InvalidRequest,
                ..Default::default()
            };
            m.observe(&ev);
        }
        for i in 0..50 {
            m.observe(&CallEvent {
                requested_model: format!("m{i}").into(),
                served_model: format!("s{i}").into(),
                provider: "openai".into(),
                ..Default::default()
            });
        }
        let text = scrape(&m);
        assert!(text.len() < 64 * 1024, "scrape is {} bytes", text.len());
        assert!(text.contains("gen_ai_request_model=\"other\""), "{text}");
        assert!(!text.contains("m49") && !text.contains("xxxx"));
        assert!(text.contains("gen_ai_response_model=\"s0\"") && !text.contains("gen_ai_response_model=\"s3\""));
    }

    #[test]
    fn cost_is_labelled_by_the_configured_attribution() {
        let cfg = MetricsConfig { cost_labels: vec!["team".into()], max_label_values: 1, ..Default::default() };
        let m = GatewayMetrics::new(&cfg, ["gpt-4o"]);
        let ev = |team: &str, cost| CallEvent {
            team: team.into(),
            requested_model: "gpt-4o".into(),
            provider: "openai".into(),
            cost_nanousd: cost,
            ..Default::default()
        };
        m.observe(&ev("core", 1_000_000_007));
        m.observe(&ev("core", 3));
        m.observe(&ev("ml", 5));
        m.observe(&ev("web", 7));
        // Back to an attribution seen before (the series remembers only the last one): the same counter.
        m.observe(&ev("core", 11));
        m.observe(&CallEvent { saved_nanousd: 13, ..ev("ml", 0) });
        m.observe(&CallEvent { saved_nanousd: 17, ..ev("core", 0) });
        let text = scrape(&m);
        assert!(
            text.contains("tollgate_cost_nanousd_total{team=\"core\",gen_ai_request_model=\"gpt-4o\",gen_ai_provider_name=\"openai\"} 1000000021"),
            "{text}"
        );
        assert!(text.contains("tollgate_cache_saved_nanousd_total{team=\"core\",gen_ai_request_model=\"gpt-4o\",gen_ai_provider_name=\"openai\"} 17"), "{text}");
        assert!(text.contains("tollgate_cache_saved_nanousd_total{team=\"other\",gen_ai_request_model=\"gpt-4o\",gen_ai_provider_name=\"openai\"} 13"), "{text}");
        assert!(text.contains("tollgate_cost_nanousd_total{team=\"other\",gen_ai_request_model=\"gpt-4o\",gen_ai_provider_name=\"openai\"} 12"), "{text}");
    }
}

/// A route's routing series (configured routes only).
pub struct RouteSeries<'a> {
    pub route: &'a str,
    /// The route's strategy (a label of its decisions).
    pub strategy: &'a str,
    pub retries: u64,
    pub retries_denied: u64,
    pub targets: Vec<TargetSeries<'a>>,
}

pub struct TargetSeries<'a> {
    pub target: &'a str,
    /// 0 closed, 1 open, 2 half-open.
    pub state: u8,
    pub opened: u64,
    /// Calls whose first attempt the strategy gave this target.
    pub decisions: u64,
    /// Attempts in flight, for routes whose strategy counts them (`least_busy`).
    pub in_flight: Option<u64>,
}

/// An inference engine's last reading, as `least_busy` sees it.
pub struct EngineSeries<'a> {
    pub upstream: &'a str,
    pub engine: &'a str,
    pub reading: Option<crate::routing::engine::EngineReading>,
    pub stale: bool,
    pub errors: u64,
}

/// Inference-engine gauges per upstream with an `engine`, encoded at scrape time. Figures are the last
/// reading's (absent before the first); `tollgate_engine_metrics_stale` says whether `least_busy` still
/// uses it.
pub fn encode_engines(e: &mut DescriptorEncoder, engines: &[EngineSeries<'_>]) -> std::fmt::Result {
    fn labels<'a>(s: &EngineSeries<'a>) -> Vec<(&'a str, &'a str)> {
        vec![("upstream", s.upstream), ("engine", s.engine)]
    }
    let figure = |f: fn(&crate::routing::engine::EngineReading) -> f64| {
        engines.iter().filter_map(move |s| Some((labels(s), f(s.reading.as_ref()?)))).collect::<Vec<_>>()
    };
    prom::encode_family(
        e,
        "tollgate_engine_queue_depth",
        "Requests waiting in the inference engine's queue, as last scraped from its metrics.",
        Kind::Gauge,
        figure(|r| r.waiting),
    )?;
    prom::encode_family(
        e,
        "tollgate_engine_requests_running",
        "Requests in the inference engine's running batch, as last scraped from its metrics.",
        Kind::Gauge,
        figure(|r| r.running),
    )?;
    prom::encode_family(
        e,
        "tollgate_engine_kv_usage",
        "KV-cache use of the inference engine (0 to 1), as last scraped from its metrics.",
        Kind::Gauge,
        figure(|r| r.kv_usage),
    )?;
    prom::encode_family(
        e,
        "tollgate_engine_metrics_stale",
        "1 when the engine's last reading is missing or older than three poll intervals (least_busy then counts calls in flight).",
        Kind::Gauge,
        engines.iter().map(|s| (labels(s), if s.stale { 1.0 } else { 0.0 })),
    )?;
    prom::encode_family(
        e,
        "tollgate_engine_scrape_errors",
        "Scrapes of the engine's metrics that failed (connection, status, timeout, size, no queue depth).",
        Kind::Counter,
        engines.iter().map(|s| (labels(s), s.errors as f64)),
    )
}

/// Retries and circuit-breaker state per route and target, encoded at scrape time into the registry.
pub fn encode_routes(e: &mut DescriptorEncoder, routes: &[RouteSeries<'_>]) -> std::fmt::Result {
    let per_route = |f: fn(&RouteSeries<'_>) -> u64| {
        routes.iter().map(move |r| (vec![("route", r.route)], f(r) as f64)).collect::<Vec<_>>()
    };
    let per_target = |f: fn(&TargetSeries<'_>) -> u64| {
        routes
            .iter()
            .flat_map(|r| r.targets.iter().map(move |t| (vec![("route", r.route), ("target", t.target)], f(t) as f64)))
            .collect::<Vec<_>>()
    };
    prom::encode_family(
        e,
        "tollgate_route_retries",
        "Retries granted by the route's retry budget.",
        Kind::Counter,
        per_route(|r| r.retries),
    )?;
    prom::encode_family(
        e,
        "tollgate_route_retries_denied",
        "Retries refused because the retry budget was used up.",
        Kind::Counter,
        per_route(|r| r.retries_denied),
    )?;
    prom::encode_family(
        e,
        "tollgate_breaker_state",
        "Circuit breaker per target: 0 closed, 1 open, 2 half-open.",
        Kind::Gauge,
        per_target(|t| u64::from(t.state)),
    )?;
    prom::encode_family(
        e,
        "tollgate_breaker_opened",
        "Times a target's circuit breaker opened.",
        Kind::Counter,
        per_target(|t| t.opened),
    )?;
    let decisions: Vec<_> = routes
        .iter()
        .flat_map(|r| {
            r.targets.iter().map(move |t| {
                (vec![("route", r.route), ("strategy", r.strategy), ("target", t.target)], t.decisions as f64)
            })
        })
        .collect();
    prom::encode_family(
        e,
        "tollgate_route_decisions",
        "Calls whose first attempt the route's strategy sent to this target.",
        Kind::Counter,
        decisions,
    )?;
    let in_flight: Vec<_> = routes
        .iter()
        .flat_map(|r| {
            r.targets
                .iter()
                .filter_map(move |t| Some((vec![("route", r.route), ("target", t.target)], t.in_flight? as f64)))
        })
        .collect();
    prom::encode_family(
        e,
        "tollgate_route_in_flight",
        "Attempts in flight per target, for routes that balance on them (least_busy).",
        Kind::Gauge,
        in_flight,
    )
}
