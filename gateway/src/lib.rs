//! The gateway: OpenAI- and Anthropic-format endpoints that route each call to one of its model's
//! targets (translating between the two formats when client and upstream differ) and meter every
//! upstream attempt. A request walks the phases of `pipeline` (authenticate → parse → `admission` →
//! `routing` → attempt through `providers` → `respond` → `finish`); this file holds the state and the
//! HTTP routes. `GatewayState::start` builds the state and the metering task's receiver.

pub mod admission;
pub mod billable;
pub mod budget;
pub mod call;
pub mod config;
mod cost_header;
mod edge;
mod error;
pub mod finish;
pub mod guards;
pub mod http_client;
pub mod ids;
pub mod inline_client;
mod keys;
pub mod listen;
pub mod metrics;
pub mod pipeline;
#[cfg(test)]
mod proptests;
pub mod providers;
pub mod reqlog;
pub mod respond;
pub mod routing;
mod self_wake;
pub mod ship;
pub mod sse;
pub mod translate;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use http::{header, HeaderMap};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use tollgate_events::{ClientApi, Endpoint, PriceTable};

pub use config::{hash_key, ConfigError, ValidatedConfig};
pub use error::{anthropic_error_response, openai_error_response, GatewayError};
pub use finish::meter::{run_metering, Meter, MeterReceiver};
pub use metrics::GatewayMetrics;

use config::{err, GatewaySettings, KeyConfig, PriceConfig, RouteConfig, UpstreamConfig};
use keys::KeyStore;
use pipeline::Pipeline;
use providers::Upstream;
use routing::RouteTable;

/// Checks the gateway's part of the config against the built-in prices (pure: no network, no files);
/// the error names the key.
pub fn validate(
    upstreams: &[UpstreamConfig],
    routes: &[RouteConfig],
    keys: &[KeyConfig],
    prices: &BTreeMap<String, PriceConfig>,
    settings: &GatewaySettings,
) -> Result<ValidatedConfig, ConfigError> {
    validate_with_prices(PriceTable::builtin(), upstreams, routes, keys, prices, settings)
}

/// As [`validate`], on top of `base` (the built-in table plus imported catalogs, read by the caller).
pub fn validate_with_prices(
    base: PriceTable,
    upstreams: &[UpstreamConfig],
    routes: &[RouteConfig],
    keys: &[KeyConfig],
    prices: &BTreeMap<String, PriceConfig>,
    settings: &GatewaySettings,
) -> Result<ValidatedConfig, ConfigError> {
    // Names that live in registries first: routes are built from them.
    for (i, u) in upstreams.iter().enumerate() {
        if providers::by_kind(&u.kind).is_none() {
            let kinds: Vec<&str> = providers::PROVIDERS.iter().map(|p| p.kind()).collect();
            return Err(err(
                format!("upstreams[{i}].kind"),
                format!("unknown kind `{}`; use one of {}", u.kind, kinds.join(", ")),
            ));
        }
    }
    for (i, r) in routes.iter().enumerate() {
        if !routing::strategy_known(&r.strategy) {
            let names: Vec<&str> = routing::STRATEGIES.iter().map(|(n, _)| *n).collect();
            return Err(err(
                format!("routes[{i}].strategy"),
                format!("unknown strategy `{}`; use one of {}", r.strategy, names.join(", ")),
            ));
        }
    }
    config::validate_with_prices(base, upstreams, routes, keys, prices, settings)
}

pub struct GatewayState {
    pub cfg: ValidatedConfig,
    pipeline: Pipeline,
    pub meter: Meter,
    /// Budgets and rate limits checked at admission.
    pub budgets: Arc<budget::BudgetSystem>,
    /// Context limits, injection rules, redaction and the response cache.
    pub guards: Arc<guards::Guards>,
}

impl GatewayState {
    /// Builds clients for every upstream (reading API keys from the environment) and the metering queue.
    /// `spill_path` is where events go when the queue is full.
    pub fn start(cfg: ValidatedConfig, spill_path: PathBuf) -> (Arc<GatewayState>, MeterReceiver) {
        let budgets = budget::BudgetSystem::disabled(Arc::new(cfg.prices.clone()));
        let metrics = Arc::new(GatewayMetrics::new(&Default::default(), cfg.model_routes.keys().map(String::as_str)));
        GatewayState::start_with_budgets(cfg, spill_path, budgets, metrics)
    }

    /// As [`GatewayState::start`], enforcing these budgets and rate limits, observing into `metrics`.
    pub fn start_with_budgets(
        cfg: ValidatedConfig,
        spill_path: PathBuf,
        budgets: Arc<budget::BudgetSystem>,
        metrics: Arc<GatewayMetrics>,
    ) -> (Arc<GatewayState>, MeterReceiver) {
        let guards = Arc::new(guards::Guards::disabled());
        GatewayState::start_with(cfg, spill_path, budgets, metrics, guards)
    }

    /// As [`GatewayState::start_with_budgets`], with these guards and response cache.
    pub fn start_with(
        cfg: ValidatedConfig,
        spill_path: PathBuf,
        budgets: Arc<budget::BudgetSystem>,
        metrics: Arc<GatewayMetrics>,
        guards: Arc<guards::Guards>,
    ) -> (Arc<GatewayState>, MeterReceiver) {
        let prices = Arc::new(tollgate_events::PriceBook::new(cfg.prices.clone()));
        let (meter, rx) = Meter::new(cfg.settings.event_queue_capacity, prices.clone(), spill_path, metrics);
        // Validation checked every kind, so no upstream is left out here.
        let upstreams: Vec<Arc<Upstream>> =
            cfg.upstreams.iter().cloned().filter_map(Upstream::new).map(Arc::new).collect();
        let routes = Arc::new(RouteTable::new(&cfg.routes, &upstreams, &prices));
        let pipeline = Pipeline {
            keys: KeyStore::new(&cfg.keys),
            admission: admission::steps(&budgets, &routes, &guards),
            routes,
            meter: meter.clone(),
            max_request_bytes: cfg.settings.max_request_bytes,
            body_read_timeout_ms: cfg.settings.body_read_timeout_ms,
            max_sse_line_bytes: cfg.settings.max_sse_line_bytes,
        };
        (Arc::new(GatewayState { cfg, pipeline, meter, budgets, guards }), rx)
    }

    /// Whether these headers carry a key allowed to read the query API.
    pub fn query_allowed(&self, headers: &HeaderMap) -> Result<(), GatewayError> {
        let k = self.pipeline.keys.authenticate(headers)?;
        if k.cfg.query {
            Ok(())
        } else {
            Err(GatewayError::QueryNotAllowed)
        }
    }

    /// Starts reading the store's routing statistics into learning routes (see `routing::stats`).
    pub fn start_routing_stats(&self, source: Arc<dyn routing::stats::RoutingStatsSource>) {
        let s = &self.cfg.settings;
        self.pipeline.routes.start_stats(
            source,
            std::time::Duration::from_millis(s.routing_stats_interval_ms),
            s.routing_stats_window_s,
        );
    }

    /// Starts scraping the metrics of the inference engines behind upstreams with an `engine`
    /// (for `least_busy`; see `routing::engine`).
    pub fn start_engine_polls(&self) {
        self.pipeline.routes.start_engines();
    }

    /// Retries, circuit breakers and inference-engine load, encoded into the metrics registry at scrape
    /// time. Holds the route table only (not the gateway, whose metering queue must close at shutdown).
    pub fn routes_encoder(
        &self,
    ) -> impl Fn(&mut prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result + Send + Sync + 'static {
        let routes = self.pipeline.routes.clone();
        move |e| {
            metrics::encode_routes(e, &routes.series())?;
            metrics::encode_engines(e, &routes.engine_series())
        }
    }
}

/// The metered LLM endpoints: the path, what a call to it is, and the API its clients speak. Each is
/// served by [`Pipeline::run`]; the edge's refusals (405, 431) are metered under the same names.
pub(crate) const METERED: [(&str, Endpoint, ClientApi); 10] = [
    ("/v1/chat/completions", Endpoint::Chat, ClientApi::Openai),
    ("/v1/completions", Endpoint::Completions, ClientApi::Openai),
    ("/v1/embeddings", Endpoint::Embeddings, ClientApi::Openai),
    ("/v1/messages", Endpoint::Messages, ClientApi::Anthropic),
    ("/v1/responses", Endpoint::Responses, ClientApi::Openai),
    ("/v1/audio/transcriptions", Endpoint::AudioTranscriptions, ClientApi::Openai),
    ("/v1/audio/translations", Endpoint::AudioTranslations, ClientApi::Openai),
    ("/v1/audio/speech", Endpoint::AudioSpeech, ClientApi::Openai),
    ("/v1/images/generations", Endpoint::Images, ClientApi::Openai),
    ("/v1/moderations", Endpoint::Moderations, ClientApi::Openai),
];

/// A call to one of the [`METERED`] endpoints: the edge's header check, then the pipeline. Reached through
/// the router, or directly from [`listen`]'s front door, which skips the router for these paths.
pub(crate) async fn metered(st: Arc<GatewayState>, req: Request, endpoint: Endpoint, client: ClientApi) -> Response {
    match edge::header_limit(&st, &req) {
        Some(refused) => refused,
        None => st.pipeline.run(req, endpoint, client).await,
    }
}

/// The metered endpoint a `POST` to `path` is.
pub(crate) fn metered_endpoint(path: &str) -> Option<(Endpoint, ClientApi)> {
    METERED.iter().find(|(p, ..)| *p == path).map(|&(_, e, c)| (e, c))
}

async fn count_tokens(State(st): State<Arc<GatewayState>>, req: Request) -> Response {
    if let Some(refused) = edge::header_limit(&st, &req) {
        return refused;
    }
    st.pipeline.count_tokens(req).await
}

/// `GET /v1/models`: the models this key may call.
async fn models(State(st): State<Arc<GatewayState>>, headers: HeaderMap) -> Response {
    let key = match st.pipeline.keys.authenticate(&headers) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let data: Vec<serde_json::Value> = st
        .pipeline
        .routes
        .routes
        .iter()
        .filter(|r| key.may_use(&r.spec.model))
        .map(|r| {
            let owner = r.targets.first().map(|t| t.upstream.cfg.name.as_str()).unwrap_or("tollgate");
            serde_json::json!({"id": r.spec.model, "object": "model", "created": 0, "owned_by": owner})
        })
        .collect();
    let body = serde_json::json!({"object": "list", "data": data});
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// `GET /v1/routes` (keys with `query = true`).
async fn routes(State(st): State<Arc<GatewayState>>, headers: HeaderMap) -> Response {
    if let Err(e) = st.query_allowed(&headers) {
        return e.into_response();
    }
    let body = routing::http::routes_json(&st.pipeline.routes);
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// The gateway's routes.
pub fn app(state: Arc<GatewayState>) -> Router {
    let mut llm = Router::new();
    for (path, endpoint, client) in METERED {
        llm = llm.route(
            path,
            post(move |State(st): State<Arc<GatewayState>>, req: Request| metered(st, req, endpoint, client)),
        );
    }
    llm.route("/v1/messages/count_tokens", post(count_tokens))
        .route("/v1/messages/{*rest}", any(edge::unknown_messages_path))
        .route("/v1/models", get(models))
        .route("/v1/routes", get(routes))
        .route("/v1/responses/{id}", get(billable::handlers::get_response).delete(billable::handlers::delete_response))
        .fallback(billable::handlers::unknown_endpoint)
        .route("/healthz", get(|| async { "ok" }))
        .method_not_allowed_fallback(edge::method_not_allowed)
        .with_state(state)
}
