//! Servers that speak OpenAI's API (vLLM, SGLang, TGI, Ollama, …): bearer key when one is set, and the
//! classic `max_tokens` field, which they all accept.

use super::Provider;
use crate::config::Wire;

pub struct OpenAiCompatibleProvider;

impl Provider for OpenAiCompatibleProvider {
    fn kind(&self) -> &'static str {
        "openai_compatible"
    }

    fn wire(&self) -> Wire {
        Wire::OpenAi
    }
}
