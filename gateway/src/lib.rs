//! The gateway: OpenAI- and Anthropic-format endpoints that forward to configured upstreams (translating
//! between the two formats when client and upstream differ) and meter every call.
//! `app(state)` is the router; `GatewayState::start` builds the state and the metering task's receiver.

pub mod billable;
mod body;
pub mod budget;
pub mod config;
mod error;
mod keys;
pub mod meter;
pub mod metrics;
mod proxy;
pub mod ship;
pub mod translate;

use axum::routing::{get, post};
use axum::Router;
use http::HeaderMap;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

pub use config::{hash_key, validate, ConfigError, ValidatedConfig};
pub use error::{anthropic_error_response, openai_error_response, GatewayError};
pub use meter::{run_metering, Meter, MeterReceiver};
pub use metrics::GatewayMetrics;

use keys::KeyStore;
use proxy::Upstream;

pub struct GatewayState {
    pub cfg: ValidatedConfig,
    keys: KeyStore,
    upstreams: Vec<Arc<Upstream>>,
    by_model: HashMap<String, Arc<Upstream>>,
    pub meter: Meter,
    /// Budgets and rate limits checked at admission.
    pub budgets: Arc<budget::BudgetSystem>,
}

impl GatewayState {
    /// Builds clients for every upstream (reading API keys from the environment) and the metering queue.
    /// `spill_path` is where events go when the queue is full.
    pub fn start(cfg: ValidatedConfig, spill_path: PathBuf) -> (Arc<GatewayState>, MeterReceiver) {
        let budgets = budget::BudgetSystem::disabled(Arc::new(cfg.prices.clone()));
        GatewayState::start_with_budgets(cfg, spill_path, budgets)
    }

    /// As [`GatewayState::start`], enforcing these budgets and rate limits.
    pub fn start_with_budgets(
        cfg: ValidatedConfig,
        spill_path: PathBuf,
        budgets: Arc<budget::BudgetSystem>,
    ) -> (Arc<GatewayState>, MeterReceiver) {
        let metrics = Arc::new(GatewayMetrics::default());
        let (meter, rx) =
            Meter::new(cfg.settings.event_queue_capacity, Arc::new(cfg.prices.clone()), spill_path, metrics);
        let upstreams: Vec<Arc<Upstream>> = cfg.upstreams.iter().cloned().map(|u| Arc::new(Upstream::new(u))).collect();
        let by_model = cfg.model_routes.iter().map(|(m, i)| (m.clone(), upstreams[*i].clone())).collect();
        let keys = KeyStore::new(&cfg.keys);
        (Arc::new(GatewayState { cfg, keys, upstreams, by_model, meter, budgets }), rx)
    }

    fn route(&self, model: &str) -> Option<Arc<Upstream>> {
        self.by_model.get(model).cloned()
    }

    /// Whether these headers carry a key allowed to read the query API.
    pub fn query_allowed(&self, headers: &HeaderMap) -> Result<(), GatewayError> {
        let k = self.keys.authenticate(headers)?;
        if k.cfg.query {
            Ok(())
        } else {
            Err(GatewayError::QueryNotAllowed)
        }
    }
}

/// The gateway's routes.
pub fn app(state: Arc<GatewayState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(proxy::chat))
        .route("/v1/completions", post(proxy::completions))
        .route("/v1/embeddings", post(proxy::embeddings))
        .route("/v1/messages", post(proxy::messages))
        .route("/v1/messages/count_tokens", post(proxy::count_tokens))
        .route("/v1/models", get(proxy::models))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
}
