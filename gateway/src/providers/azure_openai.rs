//! Azure OpenAI: OpenAI's format at `{resource}/openai/deployments/{deployment}{path}?api-version=…`,
//! with the key in an `api-key` header.

use super::Provider;
use crate::config::{UpstreamConfig, Wire};
use http::HeaderName;

pub struct AzureOpenAiProvider;

impl Provider for AzureOpenAiProvider {
    fn kind(&self) -> &'static str {
        "azure_openai"
    }

    fn wire(&self) -> Wire {
        Wire::OpenAi
    }

    fn auth_header(&self, key: &str) -> (HeaderName, String) {
        (HeaderName::from_static("api-key"), key.to_string())
    }

    fn url(&self, up: &UpstreamConfig, base: &str, model: &str, path: &str) -> String {
        // Azure's Responses API is not per deployment: `/openai/responses[/{id}]?api-version=…`, the
        // deployment named in the body's `model`.
        if path.starts_with("/responses") {
            let sep = if path.contains('?') { '&' } else { '?' };
            return format!("{base}/openai{path}{sep}api-version={}", up.api_version);
        }
        let dep = up.deployments.get(model).map(String::as_str).unwrap_or(model);
        format!("{base}/openai/deployments/{dep}{path}?api-version={}", up.api_version)
    }
}
