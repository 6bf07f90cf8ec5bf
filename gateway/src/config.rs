//! What the user writes in `tollgate.toml` for the gateway: upstreams, model routes, virtual keys and
//! price overrides, and `validate()`, which turns it into the checked form the gateway runs on (no I/O).
//! Names that live in registries (provider kinds, routing strategies) are checked one level up, in the
//! crate's `validate`, which sees both this file and the registries.

use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use tollgate_events::{PriceSpec, PriceTable};

/// An upstream model provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Name used in call events (`upstream`) and logs.
    pub name: String,
    /// `openai`, `anthropic` (native Messages API), `openai_compatible` (vLLM, TGI, Ollama, …) or
    /// `azure_openai`. Clients of either format reach any kind: requests and responses are translated
    /// when the client's format and the upstream's differ, and forwarded byte for byte when they match.
    #[serde(default = "default_kind")]
    pub kind: String,
    /// Base URL including the version prefix, e.g. `https://api.openai.com/v1`, `https://api.anthropic.com/v1`
    /// or `http://localhost:11434/v1`.
    /// For `azure_openai`: the resource URL, e.g. `https://my-resource.openai.azure.com`.
    pub base_url: String,
    /// Environment variable holding the provider's API key. Unset variable: the upstream is called
    /// without a key (fine for local servers) and a warning is logged at start.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Public model names served by this upstream. Each needs a price (built in, imported with
    /// `tollgate prices import`, or in `[prices]`).
    pub models: Vec<String>,
    /// A priced model whose price covers served models of this upstream that match no price (a local
    /// server that answers `llama3:8b` for `llama3`). Without it such calls are stored with
    /// `price_id = "unpriced"`, counted in `tollgate_unpriced_events_total` and logged.
    #[serde(default)]
    pub fallback_price: Option<String>,
    /// Whether this upstream serves OpenAI's Responses API (`/v1/responses`): if so, Responses calls are
    /// forwarded as they are; if not, they are translated to chat completions (or Messages). Default:
    /// true for `openai` and `azure_openai`, false for the others.
    #[serde(default)]
    pub responses_api: Option<bool>,
    /// `azure_openai` only: model name → deployment name (default: the model name).
    #[serde(default)]
    pub deployments: BTreeMap<String, String>,
    /// `azure_openai` only: the `api-version` query parameter.
    #[serde(default = "default_azure_api_version")]
    pub api_version: String,
    /// TCP+TLS connect timeout.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Time allowed until the upstream's response headers arrive.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Longest silence allowed between two body chunks of a response.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Ask for usage in streams (`stream_options.include_usage`) even when the client did not, and hide
    /// that extra chunk from such clients. Turn off for servers that reject `stream_options`; their
    /// streams are then metered by estimation.
    #[serde(default = "default_true")]
    pub stream_include_usage: bool,
    /// `anthropic` only: the `anthropic-version` header sent upstream when the client sent none (an
    /// Anthropic client's own header is forwarded).
    #[serde(default = "default_anthropic_version")]
    pub anthropic_version: String,
    /// `max_tokens` sent to an `anthropic` upstream when an OpenAI client gave none (Anthropic requires it).
    #[serde(default = "default_max_tokens")]
    pub default_max_tokens: u64,
    /// `openai_compatible` only: the inference engine behind it, `vllm` or `sglang`. The gateway then
    /// scrapes its Prometheus metrics (queue depth, running requests, KV-cache use) every
    /// `engine_poll_ms` for `least_busy` routes and shows them as `tollgate_engine_*` gauges.
    #[serde(default)]
    pub engine: Option<String>,
    /// Where the engine's Prometheus metrics are. Default: `base_url` without its `/v1`, plus `/metrics`
    /// (`http://gpu-1:8000/v1` → `http://gpu-1:8000/metrics`).
    #[serde(default)]
    pub metrics_url: Option<String>,
    /// How often the engine's metrics are scraped. A scrape has this long to finish (at most 2 s) and
    /// reads at most 4 MiB; readings older than three intervals are stale, and `least_busy` then counts
    /// the gateway's own calls in flight to the upstream instead.
    #[serde(default = "default_engine_poll_ms")]
    pub engine_poll_ms: u64,
}

impl UpstreamConfig {
    /// The engine's metrics URL (`metrics_url`, or derived from `base_url`).
    pub fn engine_metrics_url(&self) -> String {
        if let Some(u) = &self.metrics_url {
            return u.clone();
        }
        let base = self.base_url.trim_end_matches('/');
        format!("{}/metrics", base.strip_suffix("/v1").unwrap_or(base))
    }
}

/// The inference engines whose metrics `least_busy` reads.
pub const ENGINES: [&str; 2] = ["vllm", "sglang"];

/// The wire format an upstream (or a client) speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// OpenAI chat completions (also Azure OpenAI and OpenAI-compatible servers).
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
}

impl Wire {
    /// The format of the API a client called.
    pub fn of_client(client: tollgate_events::ClientApi) -> Wire {
        match client {
            tollgate_events::ClientApi::Openai => Wire::OpenAi,
            tollgate_events::ClientApi::Anthropic => Wire::Anthropic,
        }
    }
}

/// A model group: the public model name clients send and the targets that serve it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The public model name clients send. It may equal a model listed under an upstream: the route
    /// then replaces that upstream's one-target route.
    pub model: String,
    /// `weighted` (split by `weight`: A/B tests, canaries), `fallback` (in the order written),
    /// `least_cost` (cheapest predicted cost first), `least_latency` (lowest observed p95 first) or
    /// `least_busy` (least loaded first: the engine's queue and KV-cache use for upstreams with an
    /// `engine`, the gateway's own calls in flight otherwise).
    #[serde(default = "default_strategy")]
    pub strategy: String,
    /// Upstream + model pairs, each a separately billed, separately broken target.
    pub targets: Vec<TargetConfig>,
    /// Upstream calls per request at most, the first included. Default: one per target.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// `weighted` only: keep each `key` or `user` on one target (a hash of it picks the target), so one
    /// user sees one variant of an A/B test.
    #[serde(default)]
    pub sticky: Option<Sticky>,
    /// A `Retry-After` longer than this is not waited for: the next target is tried, or the client
    /// gets the 429.
    #[serde(default = "default_max_retry_wait_ms")]
    pub max_retry_wait_ms: u64,
    /// When a target stops being tried.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// How many retries the route may add on top of its requests.
    #[serde(default)]
    pub retry_budget: RetryBudgetConfig,
    /// `least_cost`: the lowest-quality target the route accepts, as `upstream/model`. Targets are
    /// written best first; those after this one are never chosen. Default: every target.
    #[serde(default)]
    pub quality_floor: Option<String>,
    /// `least_latency`: percent of calls sent first to another target than the fastest, so that a
    /// target that recovered is noticed again.
    #[serde(default = "default_explore_percent")]
    pub explore_percent: u32,
    /// `least_cost`, `least_latency`: how long one of the gateway's own calls counts in a target's
    /// statistics (the store's answer covers `routing_stats_window_s`).
    #[serde(default = "default_stats_window_ms")]
    pub stats_window_ms: u64,
}

/// One target of a route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// An upstream's `name`.
    pub upstream: String,
    /// The model name that upstream serves (recorded as `served_model`; needs a price).
    pub model: String,
    /// `weighted`: relative share of first attempts (e.g. 90 and 10). Ignored by `fallback`.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

/// Who a sticky weighted route keeps on one target.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Sticky {
    Key,
    User,
}

/// A circuit breaker per target: open after `consecutive_failures` failures in a row, or when at least
/// `min_requests` calls in the last `window_ms` failed at `error_rate_percent` or more; after
/// `cooldown_ms` one probe call goes through (half-open); its success closes the breaker.
/// Failures are 429s, 5xx, timeouts and connection errors; a 4xx such as 400 is the request's fault.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// 0 turns the breaker off.
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    /// 0 turns the error-rate rule off.
    #[serde(default = "default_error_rate_percent")]
    pub error_rate_percent: u32,
    #[serde(default = "default_breaker_min_requests")]
    pub min_requests: u32,
    #[serde(default = "default_window_ms")]
    pub window_ms: u64,
    #[serde(default = "default_cooldown_ms")]
    pub cooldown_ms: u64,
}

impl BreakerConfig {
    /// The breaker of a route nobody configured (a model listed under an upstream): off, as before
    /// routes existed.
    pub fn off() -> BreakerConfig {
        BreakerConfig { consecutive_failures: 0, error_rate_percent: 0, ..BreakerConfig::default() }
    }
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: default_consecutive_failures(),
            error_rate_percent: default_error_rate_percent(),
            min_requests: default_breaker_min_requests(),
            window_ms: default_window_ms(),
            cooldown_ms: default_cooldown_ms(),
        }
    }
}

/// Retries may add at most `percent` of the route's requests in the last `window_ms`, plus
/// `min_retries` per window so that a quiet route can still retry: an outage does not multiply load.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBudgetConfig {
    #[serde(default = "default_retry_percent")]
    pub percent: u32,
    #[serde(default = "default_window_ms")]
    pub window_ms: u64,
    #[serde(default = "default_min_retries")]
    pub min_retries: u32,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig {
            percent: default_retry_percent(),
            window_ms: default_window_ms(),
            min_retries: default_min_retries(),
        }
    }
}

/// A virtual API key: what clients send instead of a provider key, and who pays for their calls.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Stable id recorded in call events as `api_key_id`.
    pub id: String,
    /// `sha256:<hex>` of the key; print one with `tollgate hash-key <key>`. The key itself is never stored.
    pub hash: String,
    #[serde(default)]
    pub tenant: String,
    #[serde(default)]
    pub department: String,
    #[serde(default)]
    pub team: String,
    #[serde(default)]
    pub project: String,
    #[serde(default)]
    pub user: String,
    /// Free-form labels copied into every call event.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Models this key may call; empty means every configured model.
    #[serde(default)]
    pub models: Vec<String>,
    /// Let clients set `x-tollgate-project`, `x-tollgate-user` and `x-tollgate-tags` (`k=v,k=v`) per call.
    #[serde(default)]
    pub allow_attribution_headers: bool,
    /// May read the query API (`/v1/showback`, `/v1/latency`, `/v1/sql`), the page at `/ui`, and
    /// `/metrics` when `metrics.access = "key"`.
    #[serde(default)]
    pub query: bool,
    /// Add `x-tollgate-cost-usd` (the call's cost, exact decimal USD) to non-stream responses whose usage
    /// the provider reported. The gateway then reads such a response whole before answering.
    #[serde(default)]
    pub cost_header: bool,
}

/// A price override, USD per million tokens, written as a string (`"0.0375"`) or a number.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    pub input: Decimal,
    pub output: Decimal,
    /// Defaults to `input`.
    #[serde(default)]
    pub cached_input: Option<Decimal>,
    /// Defaults to `input`.
    #[serde(default)]
    pub cache_write: Option<Decimal>,
    /// Defaults to `output`.
    #[serde(default)]
    pub reasoning: Option<Decimal>,
    /// Cache writes with a 1-hour lifetime; defaults to `cache_write`.
    #[serde(default)]
    pub cache_write_1h: Option<Decimal>,
    /// RFC 3339 time or `YYYY-MM-DD` (UTC) from which this price applies; calls before it keep the
    /// catalog's price. Default: always.
    #[serde(default)]
    pub effective_from: Option<String>,
}

/// A decimal read as text so that no float rounding reaches money.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Decimal {
    Text(String),
    Int(u64),
    Float(f64),
}

impl Decimal {
    fn text(&self) -> String {
        match self {
            Decimal::Text(s) => s.clone(),
            Decimal::Int(i) => i.to_string(),
            // `Display` for f64 prints the shortest text that reads back to the same float, never in
            // exponent form: 0.0375 -> "0.0375".
            Decimal::Float(f) => f.to_string(),
        }
    }
}

/// Gateway tuning.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    /// Largest request body accepted.
    #[serde(default = "default_max_body_bytes")]
    pub max_request_bytes: usize,
    /// Capacity of the in-memory event queue between request handlers and the metering task. When it is
    /// full, events are appended to `spill_path` (never dropped, never blocking a client) and replayed
    /// when the queue drains; `tollgate_events_spilled_total` counts them.
    #[serde(default = "default_queue_capacity")]
    pub event_queue_capacity: usize,
    /// Longest upstream SSE line (and longest event `data` over several lines) read for metering. A
    /// longer one is passed to the client unread (a translated stream drops it), its event is not
    /// metered, and `tollgate_sse_lines_too_long_total` counts it. Bounds a stream's memory.
    #[serde(default = "default_max_sse_line_bytes")]
    pub max_sse_line_bytes: usize,
    /// Time a client has to send its request headers; the connection is closed after it.
    #[serde(default = "default_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// Time a client has to send its whole request body: past it, 408 `request_timeout` (and an event).
    #[serde(default = "default_body_read_timeout_ms")]
    pub body_read_timeout_ms: u64,
    /// Largest request headers (all names and values) on an LLM endpoint: past it, 431
    /// `headers_too_large` in the client's error shape and an event. Past 4x this (or more than 100
    /// header lines) the HTTP layer answers a bare 431 and closes the connection.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// How often learning routes (`least_cost`, `least_latency`) read `/v1/routing-stats` from the
    /// store (ClickHouse in a fleet) and blend it into their own recent view; 0 turns it off.
    #[serde(default = "default_routing_stats_interval_ms")]
    pub routing_stats_interval_ms: u64,
    /// The window those store statistics cover.
    #[serde(default = "default_routing_stats_window_s")]
    pub routing_stats_window_s: u64,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            max_request_bytes: default_max_body_bytes(),
            event_queue_capacity: default_queue_capacity(),
            max_sse_line_bytes: default_max_sse_line_bytes(),
            header_read_timeout_ms: default_header_read_timeout_ms(),
            body_read_timeout_ms: default_body_read_timeout_ms(),
            max_header_bytes: default_max_header_bytes(),
            routing_stats_interval_ms: default_routing_stats_interval_ms(),
            routing_stats_window_s: default_routing_stats_window_s(),
        }
    }
}

fn default_kind() -> String {
    "openai_compatible".into()
}
fn default_strategy() -> String {
    "fallback".into()
}
fn default_weight() -> u32 {
    1
}
fn default_engine_poll_ms() -> u64 {
    1000
}
fn default_explore_percent() -> u32 {
    5
}
fn default_stats_window_ms() -> u64 {
    60_000
}
fn default_routing_stats_interval_ms() -> u64 {
    10_000
}
fn default_routing_stats_window_s() -> u64 {
    900
}
fn default_max_retry_wait_ms() -> u64 {
    2_000
}
fn default_consecutive_failures() -> u32 {
    5
}
fn default_error_rate_percent() -> u32 {
    50
}
fn default_breaker_min_requests() -> u32 {
    20
}
fn default_window_ms() -> u64 {
    10_000
}
fn default_cooldown_ms() -> u64 {
    5_000
}
fn default_retry_percent() -> u32 {
    20
}
fn default_min_retries() -> u32 {
    3
}
fn default_azure_api_version() -> String {
    "2024-10-21".into()
}
fn default_anthropic_version() -> String {
    "2023-06-01".into()
}
fn default_max_tokens() -> u64 {
    4096
}
fn default_connect_timeout_ms() -> u64 {
    5_000
}
fn default_request_timeout_ms() -> u64 {
    600_000
}
fn default_idle_timeout_ms() -> u64 {
    300_000
}
fn default_true() -> bool {
    true
}
fn default_max_body_bytes() -> usize {
    32 * 1024 * 1024
}
fn default_queue_capacity() -> usize {
    16_384
}
fn default_max_sse_line_bytes() -> usize {
    8 * 1024 * 1024
}
fn default_header_read_timeout_ms() -> u64 {
    10_000
}
fn default_body_read_timeout_ms() -> u64 {
    60_000
}
fn default_max_header_bytes() -> usize {
    32 * 1024
}

/// A config problem, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

pub(crate) fn err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError { key: key.into(), message: message.into() }
}

/// Checked gateway config.
#[derive(Debug, Clone)]
pub struct ValidatedConfig {
    pub upstreams: Vec<UpstreamConfig>,
    pub keys: Vec<ValidatedKey>,
    pub prices: PriceTable,
    /// Public model name → index into `routes`.
    pub model_routes: HashMap<String, usize>,
    /// Every public model's route: models listed under upstreams first, then `[[routes]]`.
    pub routes: Vec<RouteSpec>,
    pub settings: GatewaySettings,
}

/// A checked route.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub model: String,
    pub strategy: String,
    pub targets: Vec<TargetSpec>,
    pub max_attempts: u32,
    pub sticky: Option<Sticky>,
    pub max_retry_wait_ms: u64,
    pub breaker: BreakerConfig,
    pub retry_budget: RetryBudgetConfig,
    /// Written under `[[routes]]`; false for a model listed under its upstream(s).
    pub configured: bool,
    /// Index of the lowest-quality target `least_cost` may choose.
    pub quality_floor: Option<usize>,
    pub explore_percent: u32,
    pub stats_window_ms: u64,
}

/// A checked target.
#[derive(Debug, Clone)]
pub struct TargetSpec {
    /// Index into `upstreams`.
    pub upstream: usize,
    pub model: String,
    pub weight: u32,
}

#[derive(Debug, Clone)]
pub struct ValidatedKey {
    pub cfg: KeyConfig,
    pub digest: [u8; 32],
}

/// Pure validation on top of `base` (the built-in table plus imported catalogs, read by the caller).
pub fn validate_with_prices(
    base: PriceTable,
    upstreams: &[UpstreamConfig],
    routes: &[RouteConfig],
    keys: &[KeyConfig],
    prices: &BTreeMap<String, PriceConfig>,
    settings: &GatewaySettings,
) -> Result<ValidatedConfig, ConfigError> {
    let mut table = base;
    for (model, p) in prices {
        let spec = PriceSpec {
            input: p.input.text(),
            output: p.output.text(),
            cached_input: p.cached_input.as_ref().map(Decimal::text),
            cache_write: p.cache_write.as_ref().map(Decimal::text),
            cache_write_1h: p.cache_write_1h.as_ref().map(Decimal::text),
            reasoning: p.reasoning.as_ref().map(Decimal::text),
            effective_from: p.effective_from.clone(),
        };
        table.set(model, &spec, "config").map_err(|e| err("prices", e.to_string()))?;
    }
    // Models listed under upstreams, each with its upstreams in config order.
    let mut listed: Vec<(String, Vec<usize>)> = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, u) in upstreams.iter().enumerate() {
        let key = |f: &str| format!("upstreams[{i}].{f}");
        if u.name.is_empty() {
            return Err(err(key("name"), "must not be empty"));
        }
        if !names.insert(u.name.clone()) {
            return Err(err(key("name"), format!("`{}` is used by two upstreams", u.name)));
        }
        if !(u.base_url.starts_with("http://") || u.base_url.starts_with("https://")) {
            return Err(err(key("base_url"), format!("`{}` must start with http:// or https://", u.base_url)));
        }
        if u.base_url.parse::<http::Uri>().is_err() {
            return Err(err(key("base_url"), format!("`{}` is not a valid URL", u.base_url)));
        }
        if u.models.is_empty() {
            return Err(err(key("models"), "list at least one model"));
        }
        if let Some(f) = &u.fallback_price {
            if table.get(f).is_none() {
                return Err(err(key("fallback_price"), format!("model `{f}` has no price")));
            }
            table.set_route_fallback(&u.name, f);
        }
        for m in &u.models {
            if table.get(m).is_none() && !crate::billable::glue::unit_prices().has_model(m) {
                return Err(err(key("models"), unpriced(m)));
            }
            match listed.iter_mut().find(|(name, _)| name == m) {
                Some((_, ups)) if ups.contains(&i) => {
                    return Err(err(key("models"), format!("model `{m}` is listed twice")));
                }
                Some((_, ups)) => ups.push(i),
                None => listed.push((m.clone(), vec![i])),
            }
        }
        for (t, v) in [
            ("connect_timeout_ms", u.connect_timeout_ms),
            ("request_timeout_ms", u.request_timeout_ms),
            ("idle_timeout_ms", u.idle_timeout_ms),
        ] {
            if v == 0 {
                return Err(err(key(t), "must be greater than 0"));
            }
        }
        if u.default_max_tokens == 0 {
            return Err(err(key("default_max_tokens"), "must be greater than 0"));
        }
        if u.anthropic_version.is_empty() || http::HeaderValue::from_str(&u.anthropic_version).is_err() {
            return Err(err(key("anthropic_version"), "must be a version like 2023-06-01"));
        }
        validate_engine(u, &key)?;
    }
    let (routes, model_routes) = validate_routes(upstreams, routes, &table, listed)?;
    let mut out_keys = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for (i, k) in keys.iter().enumerate() {
        let key = |f: &str| format!("keys[{i}].{f}");
        if k.id.is_empty() {
            return Err(err(key("id"), "must not be empty"));
        }
        if !ids.insert(k.id.clone()) {
            return Err(err(key("id"), format!("`{}` is used by two keys", k.id)));
        }
        let digest = parse_key_hash(&k.hash)
            .ok_or_else(|| err(key("hash"), "must be `sha256:` followed by 64 hex digits (see `tollgate hash-key`)"))?;
        for m in &k.models {
            if !model_routes.contains_key(m) {
                return Err(err(key("models"), format!("model `{m}` is not served by any upstream or route")));
            }
        }
        out_keys.push(ValidatedKey { cfg: k.clone(), digest });
    }
    for (name, v) in [
        ("event_queue_capacity", settings.event_queue_capacity as u64),
        ("max_request_bytes", settings.max_request_bytes as u64),
        ("header_read_timeout_ms", settings.header_read_timeout_ms),
        ("body_read_timeout_ms", settings.body_read_timeout_ms),
    ] {
        if v == 0 {
            return Err(err(format!("gateway.{name}"), "must be greater than 0"));
        }
    }
    // An SSE line shorter than this cannot carry an ordinary chunk; headers shorter cannot carry a key.
    if settings.max_sse_line_bytes < 4096 {
        return Err(err("gateway.max_sse_line_bytes", "must be at least 4096"));
    }
    if settings.max_header_bytes < 4096 {
        return Err(err("gateway.max_header_bytes", "must be at least 4096"));
    }
    Ok(ValidatedConfig {
        upstreams: upstreams.to_vec(),
        keys: out_keys,
        prices: table,
        model_routes,
        routes,
        settings: settings.clone(),
    })
}

/// `engine`, `metrics_url`, `engine_poll_ms` of one upstream.
fn validate_engine(u: &UpstreamConfig, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    if u.metrics_url.is_some() && u.engine.is_none() {
        return Err(err(key("metrics_url"), "set `engine` (vllm or sglang) to use the engine's metrics"));
    }
    let Some(engine) = &u.engine else { return Ok(()) };
    if !ENGINES.contains(&engine.as_str()) {
        return Err(err(key("engine"), format!("unknown engine `{engine}`; use one of {}", ENGINES.join(", "))));
    }
    if u.kind != "openai_compatible" {
        return Err(err(key("engine"), "only an `openai_compatible` upstream runs an inference engine"));
    }
    let url = u.engine_metrics_url();
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.parse::<http::Uri>().is_err() {
        return Err(err(key("metrics_url"), format!("`{url}` is not an http:// or https:// URL")));
    }
    if !(10..=600_000).contains(&u.engine_poll_ms) {
        return Err(err(key("engine_poll_ms"), "must be between 10 and 600000"));
    }
    Ok(())
}

fn unpriced(m: &str) -> String {
    format!("model `{m}` has no price; add [prices.\"{m}\"] with input and output USD per million tokens")
}

/// Checks `[[routes]]` and builds every public model's route: a model listed under one upstream is a
/// one-target route, under several a fallback route in config order; a `[[routes]]` entry of the same
/// name replaces it.
fn validate_routes(
    upstreams: &[UpstreamConfig],
    routes: &[RouteConfig],
    prices: &PriceTable,
    listed: Vec<(String, Vec<usize>)>,
) -> Result<(Vec<RouteSpec>, HashMap<String, usize>), ConfigError> {
    let mut configured = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, r) in routes.iter().enumerate() {
        let key = |f: &str| format!("routes[{i}].{f}");
        if r.model.is_empty() {
            return Err(err(key("model"), "must not be empty"));
        }
        if !seen.insert(r.model.clone()) {
            return Err(err(key("model"), format!("`{}` has two routes", r.model)));
        }
        if r.targets.is_empty() {
            return Err(err(key("targets"), "list at least one target"));
        }
        let mut targets = Vec::new();
        for (j, t) in r.targets.iter().enumerate() {
            let tkey = |f: &str| format!("routes[{i}].targets[{j}].{f}");
            let Some(up) = upstreams.iter().position(|u| u.name == t.upstream) else {
                return Err(err(tkey("upstream"), format!("no upstream is named `{}`", t.upstream)));
            };
            if prices.get(&t.model).is_none() && !crate::billable::glue::unit_prices().has_model(&t.model) {
                return Err(err(tkey("model"), unpriced(&t.model)));
            }
            if r.strategy == "weighted" && t.weight == 0 {
                return Err(err(tkey("weight"), "must be greater than 0 (remove the target to stop its traffic)"));
            }
            targets.push(TargetSpec { upstream: up, model: t.model.clone(), weight: t.weight });
        }
        let max_attempts = r.max_attempts.unwrap_or(targets.len() as u32);
        if !(1..=10).contains(&max_attempts) {
            return Err(err(key("max_attempts"), "must be between 1 and 10"));
        }
        if r.sticky.is_some() && r.strategy != "weighted" {
            return Err(err(key("sticky"), "only a `weighted` route can be sticky"));
        }
        let b = &r.breaker;
        if b.window_ms == 0 || b.cooldown_ms == 0 || r.retry_budget.window_ms == 0 {
            return Err(err(key("breaker"), "window_ms and cooldown_ms must be greater than 0"));
        }
        if b.error_rate_percent > 100 {
            return Err(err(key("breaker.error_rate_percent"), "must be at most 100"));
        }
        if r.explore_percent > 50 {
            return Err(err(key("explore_percent"), "must be at most 50"));
        }
        if r.stats_window_ms == 0 {
            return Err(err(key("stats_window_ms"), "must be greater than 0"));
        }
        let quality_floor = match &r.quality_floor {
            None => None,
            Some(_) if r.strategy != "least_cost" => {
                return Err(err(key("quality_floor"), "only a `least_cost` route has a quality floor"));
            }
            Some(f) => {
                Some(r.targets.iter().position(|t| format!("{}/{}", t.upstream, t.model) == *f).ok_or_else(|| {
                    err(key("quality_floor"), format!("`{f}` is not one of the route's targets (upstream/model)"))
                })?)
            }
        };
        configured.push(RouteSpec {
            model: r.model.clone(),
            strategy: r.strategy.clone(),
            targets,
            max_attempts,
            sticky: r.sticky,
            max_retry_wait_ms: r.max_retry_wait_ms,
            breaker: r.breaker.clone(),
            retry_budget: r.retry_budget.clone(),
            configured: true,
            quality_floor,
            explore_percent: r.explore_percent,
            stats_window_ms: r.stats_window_ms,
        });
    }
    let mut out: Vec<RouteSpec> = listed
        .into_iter()
        .filter(|(m, _)| !seen.contains(m))
        .map(|(model, ups)| RouteSpec {
            targets: ups.iter().map(|&u| TargetSpec { upstream: u, model: model.clone(), weight: 1 }).collect(),
            // One upstream: no retry, as a single upstream behaved before routes existed.
            max_attempts: if ups.len() > 1 { ups.len() as u32 } else { 1 },
            model,
            strategy: "fallback".into(),
            sticky: None,
            max_retry_wait_ms: default_max_retry_wait_ms(),
            breaker: BreakerConfig::off(),
            retry_budget: RetryBudgetConfig::default(),
            configured: false,
            quality_floor: None,
            explore_percent: default_explore_percent(),
            stats_window_ms: default_stats_window_ms(),
        })
        .collect();
    out.extend(configured);
    let by_model = out.iter().enumerate().map(|(i, r)| (r.model.clone(), i)).collect();
    Ok((out, by_model))
}

pub(crate) fn parse_key_hash(s: &str) -> Option<[u8; 32]> {
    let hex_part = s.strip_prefix("sha256:")?;
    let bytes = hex::decode(hex_part).ok()?;
    bytes.try_into().ok()
}

/// `sha256:<hex>` of a key, the form stored in config.
pub fn hash_key(key: &str) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(key.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(
        upstreams: &[UpstreamConfig],
        routes: &[RouteConfig],
        keys: &[KeyConfig],
        prices: &BTreeMap<String, PriceConfig>,
        settings: &GatewaySettings,
    ) -> Result<ValidatedConfig, ConfigError> {
        validate_with_prices(PriceTable::builtin(), upstreams, routes, keys, prices, settings)
    }

    fn upstream(models: &[&str]) -> UpstreamConfig {
        toml::from_str(&format!("name = \"u\"\nbase_url = \"http://localhost:1/v1\"\nmodels = {:?}", models)).unwrap()
    }

    #[test]
    fn unpriced_model_is_a_config_error_naming_the_key() {
        let e =
            validate(&[upstream(&["llama-3"])], &[], &[], &BTreeMap::new(), &GatewaySettings::default()).unwrap_err();
        assert_eq!(e.key, "upstreams[0].models");
        assert!(e.message.contains("llama-3"), "{e}");
    }

    #[test]
    fn price_override_makes_it_valid_and_exact() {
        let prices: BTreeMap<String, PriceConfig> =
            toml::from_str("[llama-3]\ninput = 0.0375\noutput = \"0.1\"\n").unwrap();
        let v = validate(&[upstream(&["llama-3"])], &[], &[], &prices, &GatewaySettings::default()).unwrap();
        let p = v.prices.get("llama-3").unwrap();
        assert_eq!((p.standard.base.input, p.standard.base.output), (37_500_000, 100_000_000));
        assert!(p.price_id.starts_with("llama-3@config-"), "{}", p.price_id);
    }

    #[test]
    fn anthropic_upstream_defaults_and_checks() {
        let u: UpstreamConfig = toml::from_str(
            "name = \"a\"\nkind = \"anthropic\"\nbase_url = \"https://api.anthropic.com/v1\"\nmodels = [\"claude-sonnet-4-5\"]",
        )
        .unwrap();
        assert_eq!(u.kind, "anthropic");
        assert_eq!((u.anthropic_version.as_str(), u.default_max_tokens), ("2023-06-01", 4096));
        let v = validate(std::slice::from_ref(&u), &[], &[], &BTreeMap::new(), &GatewaySettings::default()).unwrap();
        assert_eq!(v.model_routes["claude-sonnet-4-5"], 0);
        let zero = UpstreamConfig { default_max_tokens: 0, ..u };
        let e = validate(&[zero], &[], &[], &BTreeMap::new(), &GatewaySettings::default()).unwrap_err();
        assert_eq!(e.key, "upstreams[0].default_max_tokens");
    }

    #[test]
    fn engine_keys_are_checked_and_name_their_key() {
        let u = |extra: &str| -> UpstreamConfig {
            toml::from_str(&format!("name = \"g\"\nbase_url = \"http://gpu:8000/v1/\"\nmodels = [\"gpt-4o\"]\n{extra}"))
                .unwrap()
        };
        let check = |x: UpstreamConfig| validate(&[x], &[], &[], &BTreeMap::new(), &GatewaySettings::default());
        let ok = u("engine = \"sglang\"");
        assert_eq!((ok.engine_metrics_url().as_str(), ok.engine_poll_ms), ("http://gpu:8000/metrics", 1000));
        check(ok).unwrap();
        let own = u("engine = \"vllm\"\nmetrics_url = \"http://gpu:9000/m\"");
        assert_eq!(own.engine_metrics_url(), "http://gpu:9000/m");
        check(own).unwrap();
        for (extra, key) in [
            ("engine = \"tgi\"", "upstreams[0].engine"),
            ("engine = \"vllm\"\nkind = \"openai\"", "upstreams[0].engine"),
            ("metrics_url = \"http://gpu:8000/metrics\"", "upstreams[0].metrics_url"),
            ("engine = \"vllm\"\nmetrics_url = \"gpu:8000/metrics\"", "upstreams[0].metrics_url"),
            ("engine = \"vllm\"\nengine_poll_ms = 0", "upstreams[0].engine_poll_ms"),
        ] {
            assert_eq!(check(u(extra)).unwrap_err().key, key, "{extra}");
        }
    }

    #[test]
    fn bad_key_hash_names_the_key() {
        let k: KeyConfig = toml::from_str("id = \"a\"\nhash = \"plaintext\"").unwrap();
        let e =
            validate(&[upstream(&["gpt-4o"])], &[], &[k], &BTreeMap::new(), &GatewaySettings::default()).unwrap_err();
        assert_eq!(e.key, "keys[0].hash");
        assert_eq!(hash_key("abc"), "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    fn named(name: &str, models: &[&str]) -> UpstreamConfig {
        UpstreamConfig { name: name.into(), ..upstream(models) }
    }

    #[test]
    fn a_model_under_two_upstreams_is_a_fallback_route_and_routes_replace_it() {
        let ups = [named("a", &["gpt-4o"]), named("b", &["gpt-4o", "gpt-4o-mini"])];
        let v = validate(&ups, &[], &[], &BTreeMap::new(), &GatewaySettings::default()).unwrap();
        let r = &v.routes[v.model_routes["gpt-4o"]];
        assert_eq!((r.strategy.as_str(), r.max_attempts, r.configured), ("fallback", 2, false));
        assert_eq!(r.targets.iter().map(|t| t.upstream).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(v.routes[v.model_routes["gpt-4o-mini"]].max_attempts, 1);

        let routes: Vec<RouteConfig> = toml::from_str::<BTreeMap<String, Vec<RouteConfig>>>(
            "[[routes]]\nmodel = \"gpt-4o\"\nstrategy = \"weighted\"\nsticky = \"user\"\n\
             targets = [{ upstream = \"b\", model = \"gpt-4o\", weight = 90 }, { upstream = \"a\", model = \"gpt-4o-mini\", weight = 10 }]",
        )
        .unwrap()
        .remove("routes")
        .unwrap();
        let v = validate(&ups, &routes, &[], &BTreeMap::new(), &GatewaySettings::default()).unwrap();
        let r = &v.routes[v.model_routes["gpt-4o"]];
        assert!(r.configured);
        assert_eq!(r.targets.iter().map(|t| (t.upstream, t.weight)).collect::<Vec<_>>(), [(1, 90), (0, 10)]);
        assert_eq!(v.routes.len(), 2, "the listed gpt-4o gave way to the route");

        let bad = |toml_text: &str| {
            let routes =
                toml::from_str::<BTreeMap<String, Vec<RouteConfig>>>(toml_text).unwrap().remove("routes").unwrap();
            validate(&ups, &routes, &[], &BTreeMap::new(), &GatewaySettings::default()).unwrap_err().key
        };
        assert_eq!(
            bad("[[routes]]\nmodel = \"x\"\ntargets = [{ upstream = \"c\", model = \"gpt-4o\" }]"),
            "routes[0].targets[0].upstream"
        );
        assert_eq!(
            bad("[[routes]]\nmodel = \"x\"\ntargets = [{ upstream = \"a\", model = \"llama\" }]"),
            "routes[0].targets[0].model"
        );
        assert_eq!(bad("[[routes]]\nmodel = \"x\"\ntargets = []"), "routes[0].targets");
        assert_eq!(
            bad("[[routes]]\nmodel = \"x\"\nsticky = \"key\"\ntargets = [{ upstream = \"a\", model = \"gpt-4o\" }]"),
            "routes[0].sticky"
        );
        assert_eq!(
            bad("[[routes]]\nmodel = \"x\"\nmax_attempts = 0\ntargets = [{ upstream = \"a\", model = \"gpt-4o\" }]"),
            "routes[0].max_attempts"
        );
    }
}
