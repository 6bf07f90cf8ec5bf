//! The call context: what one request carries from phase to phase (its key, body, parsed fields,
//! route, first event and per-request observers). Every phase reads and writes it; none owns it.

use crate::config::ValidatedKey;
use crate::finish::{CallGuard, PricedObserver};
use crate::routing::Route;
use bytes::Bytes;
use http::HeaderMap;
use serde::Deserialize;
use std::sync::Arc;
use tollgate_events::{ClientApi, Endpoint};

/// One request on its way through the phases.
pub struct CallCtx {
    pub endpoint: Endpoint,
    pub client: ClientApi,
    pub request_id: String,
    pub headers: HeaderMap,
    pub key: Option<Arc<ValidatedKey>>,
    /// The request body as it will be sent (an admission step may rewrite it).
    pub body: Bytes,
    pub meta: RequestMeta,
    pub stream: bool,
    /// The model the body names: the client's, or the one an admission step moved the call to.
    pub model: String,
    pub route: Option<Arc<Route>>,
    /// The first attempt's event, or the rejection's.
    pub guard: CallGuard,
    /// Told every priced event of the request (all its attempts).
    pub priced: Vec<Arc<dyn PricedObserver>>,
    /// The body parsed as JSON, by the first admission step that reads it (guards, cache).
    pub json: Option<serde_json::Value>,
}

/// The few request fields the gateway needs; everything else is forwarded untouched (or translated).
#[derive(Deserialize, Default)]
pub struct RequestMeta {
    pub model: Option<String>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<serde_json::Value>,
    /// Output bound for budget and rate-limit estimates (kept as JSON: a bad value is the upstream's
    /// to refuse, as before).
    #[serde(default)]
    pub max_tokens: Option<serde_json::Value>,
    #[serde(default)]
    pub max_completion_tokens: Option<serde_json::Value>,
    /// The Responses API's output bound.
    #[serde(default)]
    pub max_output_tokens: Option<serde_json::Value>,
}

impl RequestMeta {
    /// `max_tokens` or `max_completion_tokens`, when it is a number.
    pub fn output_bound(&self) -> Option<u64> {
        [&self.max_tokens, &self.max_completion_tokens, &self.max_output_tokens]
            .into_iter()
            .find_map(|v| v.as_ref().and_then(|v| v.as_u64()))
    }

    /// Whether an OpenAI client asked for usage in its stream.
    pub fn client_wants_usage(&self) -> bool {
        self.stream_options.as_ref().and_then(|o| o.get("include_usage")).and_then(|v| v.as_bool()).unwrap_or(false)
    }
}
