//! Token estimation for calls whose provider did not report usage (client hung up, stream cut, usage
//! omitted). OpenAI models use their own tiktoken encoding; every other model is counted with
//! `cl100k_base`, a documented approximation. Encodings load once, on first use, off the request path.

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

    fn encoding(&self, model: &str) -> Option<&CoreBPE> {
        let m = model.rsplit('/').next().unwrap_or(model);
        let o200k = m.starts_with("gpt-4o")
            || m.starts_with("gpt-4.1")
            || m.starts_with("gpt-5")
            || m.starts_with("o1")
            || m.starts_with("o3")
            || m.starts_with("o4");
        if o200k {
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

    /// Prompt tokens of an OpenAI chat request body (`messages` with string or part-list content;
    /// `input` of an embeddings request, string or list of strings).
    pub fn count_request(&self, model: &str, body: &serde_json::Value) -> u64 {
        if let Some(messages) = body.get("messages").and_then(|m| m.as_array()) {
            let mut n = TOKENS_PER_REPLY;
            for m in messages {
                n += TOKENS_PER_MESSAGE;
                if let Some(role) = m.get("role").and_then(|r| r.as_str()) {
                    n += self.count_text(model, role);
                }
                match m.get("content") {
                    Some(serde_json::Value::String(s)) => n += self.count_text(model, s),
                    Some(serde_json::Value::Array(parts)) => {
                        for p in parts {
                            if let Some(t) = p.get("text").and_then(|t| t.as_str()) {
                                n += self.count_text(model, t);
                            }
                        }
                    }
                    _ => {}
                }
                if let Some(calls) = m.get("tool_calls") {
                    n += self.count_text(model, &calls.to_string());
                }
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
}
