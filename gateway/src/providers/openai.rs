//! OpenAI's API (`https://api.openai.com/v1`): bearer key, chat completions, completions, embeddings.

use super::Provider;
use crate::config::Wire;

pub struct OpenAiProvider;

impl Provider for OpenAiProvider {
    fn kind(&self) -> &'static str {
        "openai"
    }

    fn wire(&self) -> Wire {
        Wire::OpenAi
    }

    /// OpenAI's current models refuse `max_tokens` in favour of `max_completion_tokens`.
    fn max_tokens_field(&self) -> &'static str {
        "max_completion_tokens"
    }
}
