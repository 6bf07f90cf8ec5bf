//! Anthropic's Messages API: `x-api-key`, and `anthropic-version` (the client's own when an Anthropic
//! client sent one, else the configured one) plus any `anthropic-beta` the client asked for.

use super::Provider;
use crate::config::{UpstreamConfig, Wire};
use http::{HeaderMap, HeaderName};
use tollgate_events::ClientApi;

pub struct AnthropicProvider;

impl Provider for AnthropicProvider {
    fn kind(&self) -> &'static str {
        "anthropic"
    }

    fn wire(&self) -> Wire {
        Wire::Anthropic
    }

    fn auth_header(&self, key: &str) -> (HeaderName, String) {
        (HeaderName::from_static("x-api-key"), key.to_string())
    }

    fn extra_headers(
        &self,
        mut builder: http::request::Builder,
        up: &UpstreamConfig,
        client: ClientApi,
        headers: &HeaderMap,
    ) -> http::request::Builder {
        let from_client = |name: &str| headers.get(name).filter(|_| client == ClientApi::Anthropic);
        builder = match from_client("anthropic-version") {
            Some(v) => builder.header("anthropic-version", v),
            None => builder.header("anthropic-version", up.anthropic_version.as_str()),
        };
        if let Some(v) = from_client("anthropic-beta") {
            builder = builder.header("anthropic-beta", v);
        }
        builder
    }
}
