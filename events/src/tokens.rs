//! Token estimation for calls whose provider did not report usage (client hung up, stream cut, usage
//! omitted). OpenAI models use their own tiktoken encoding; every other model (Claude, Llama, …) is
//! counted with `cl100k_base`, a documented approximation that events mark `estimated_approx`
//! ([`TokenEstimator::is_exact`]). Encodings load once, on first use, off the request path.
//! Request bodies may be in OpenAI's chat format or Anthropic's Messages format.

use std::sync::OnceLock;
use tiktoken_rs::CoreBPE;

/// Counts tokens with the right encoding for a model.
#[derive(Default)]
pub struct TokenEstimator {
    o200k: OnceLock<Option<CoreBPE>>,
    cl100k: OnceLock<Option<CoreBPE>>,
}

/// Chat formats add a few tokens per message for role and separators (OpenAI's published rule of thumb).
const TOKENS_PER_MESSAGE: u64 = 3;
const TOKENS_PER_REPLY: u64 = 3;

impl TokenEstimator {
    pub fn new() -> TokenEstimator {
        TokenEstimator::default()
    }

    fn is_o200k(model: &str) -> bool {
        let m = model.rsplit('/').next().unwrap_or(model);
        m.starts_with("gpt-4o")
            || m.starts_with("gpt-4.1")
            || m.starts_with("gpt-5")
            || m.starts_with("o1")
            || m.starts_with("o3")
            || m.starts_with("o4")
    }

    /// Whether `model` is counted with its own tokenizer. False for Claude and every other model that is
    /// not OpenAI's: those are counted with `cl100k_base` as an approximation.
    pub fn is_exact(model: &str) -> bool {
        let m = model.rsplit('/').next().unwrap_or(model);
        Self::is_o200k(m) || m.starts_with("gpt-") || m.starts_with("text-embedding-")
    }

    fn encoding(&self, model: &str) -> Option<&CoreBPE> {
        if Self::is_o200k(model) {
            self.o200k.get_or_init(|| tiktoken_rs::o200k_base().ok()).as_ref()
        } else {
            self.cl100k.get_or_init(|| tiktoken_rs::cl100k_base().ok()).as_ref()
        }
    }

    /// Tokens in a plain text for `model`. Falls back to bytes/4 if an encoding failed to load.
    pub fn count_text(&self, model: &str, text: &str) -> u64 {
        match self.encoding(model) {
            Some(bpe) => bpe.encode_ordinary(text).len() as u64,
            None => (text.len() as u64).div_ceil(4),
        }
    }

    /// Prompt tokens of a request body: OpenAI chat (`messages` with string or part-list content, tool
    /// calls), Anthropic Messages (`system`, content blocks: text, `tool_use` input, `tool_result`
    /// content; `tools`), or an embeddings request (`input`, string or list of strings).
    pub fn count_request(&self, model: &str, body: &serde_json::Value) -> u64 {
        if let Some(messages) = body.get("messages").and_then(|m| m.as_array()) {
            let mut n = TOKENS_PER_REPLY;
            if let Some(system) = body.get("system") {
                n += TOKENS_PER_MESSAGE + self.count_content(model, system);
            }
            for m in messages {
                n += TOKENS_PER_MESSAGE;
                if let Some(role) = m.get("role").and_then(|r| r.as_str()) {
                    n += self.count_text(model, role);
                }
                if let Some(content) = m.get("content") {
                    n += self.count_content(model, content);
                }
                if let Some(calls) = m.get("tool_calls") {
                    n += self.count_text(model, &calls.to_string());
                }
            }
            if let Some(tools) = body.get("tools").filter(|t| !t.is_null()) {
                n += self.count_text(model, &tools.to_string());
            }
            return n;
        }
        match body.get("input") {
            Some(serde_json::Value::String(s)) => self.count_text(model, s),
            Some(serde_json::Value::Array(items)) => {
                items.iter().map(|i| i.as_str().map(|s| self.count_text(model, s)).unwrap_or(1)).sum()
            }
            _ => 0,
        }
    }

    /// A message's content: a string, or a list of parts/blocks of either format.
    fn count_content(&self, model: &str, content: &serde_json::Value) -> u64 {
        match content {
            serde_json::Value::String(s) => self.count_text(model, s),
            serde_json::Value::Array(parts) => parts
                .iter()
                .map(|p| {
                    let text = p.get("text").and_then(|t| t.as_str()).map(|t| self.count_text(model, t)).unwrap_or(0);
                    // Anthropic `tool_use` arguments and `tool_result` content.
                    let input = p.get("input").map(|i| self.count_text(model, &i.to_string())).unwrap_or(0);
                    let result = match p.get("type").and_then(|t| t.as_str()) {
                        Some("tool_result") => p.get("content").map(|c| self.count_content(model, c)).unwrap_or(0),
                        _ => 0,
                    };
                    text + input + result
                })
                .sum(),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_with_the_models_encoding() {
        let t = TokenEstimator::new();
        assert_eq!(t.count_text("gpt-4o", "hello world"), 2);
        assert_eq!(t.count_text("gpt-3.5-turbo", "hello world"), 2);
        let body = serde_json::json!({"messages":[{"role":"user","content":"hello world"}]});
        // 3 (reply) + 3 (message) + 1 ("user") + 2
        assert_eq!(t.count_request("gpt-4o", &body), 9);
        let emb = serde_json::json!({"input":["hello world","hello"]});
        assert_eq!(t.count_request("text-embedding-3-small", &emb), 3);
    }

    #[test]
    fn counts_anthropic_bodies_and_says_which_models_are_approximate() {
        let t = TokenEstimator::new();
        let body = serde_json::json!({
            "system": "hello world",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hello world"}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "hello"}]},
            ]
        });
        // 3 (reply) + system 3+2 + user 3+1+2 + assistant 3+1+1 ("{}") + user 3+1+1
        assert_eq!(t.count_request("claude-sonnet-4-5", &body), 3 + 5 + 6 + 5 + 5);
        assert!(TokenEstimator::is_exact("gpt-4o-mini") && TokenEstimator::is_exact("gpt-3.5-turbo"));
        assert!(TokenEstimator::is_exact("openai/o3") && TokenEstimator::is_exact("text-embedding-3-small"));
        assert!(!TokenEstimator::is_exact("claude-sonnet-4-5") && !TokenEstimator::is_exact("llama3.1:8b"));
    }
}
