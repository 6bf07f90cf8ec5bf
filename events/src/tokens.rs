//! Token estimation for calls whose provider did not report usage (client hung up, stream cut, usage
//! omitted). OpenAI models use their own encoding (counted by `bpe.rs`); every other model (Claude, Llama, …) is
//! counted with `cl100k_base`, a documented approximation that events mark `estimated_approx`
//! ([`TokenEstimator::is_exact`]). Encodings load once, on first use, off the request path.
//! Request bodies may be in OpenAI's chat format or Anthropic's Messages format.

use crate::bpe::{Bpe, CL100K_BASE, O200K_BASE};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

/// Counts tokens with the right encoding for a model. A handle without state (the encodings are the
/// process's, loaded on first use): make one wherever tokens are counted.
#[derive(Clone, Copy, Default)]
pub struct TokenEstimator {
    _private: (),
}

/// The encodings, loaded once for the whole process (the metering task and the context-window guard each
/// hold an estimator; with tables per estimator `serve` once loaded o200k twice).
static O200K: OnceLock<Option<Bpe>> = OnceLock::new();
static CL100K: OnceLock<Option<Bpe>> = OnceLock::new();

/// Chat formats add a few tokens per message for role and separators (OpenAI's published rule of thumb).
const TOKENS_PER_MESSAGE: u64 = 3;
const TOKENS_PER_REPLY: u64 = 3;

/// Longest text handed to the tokenizer at once. The encodings' split patterns need a backtracking
/// matcher, which gives up past its limit (tiktoken-rs panicked on a prompt of ~1.1M spaces to an o200k
/// model); short pieces keep every call far below it, and cutting where a word starts keeps the count
/// that of the whole text.
const PIECE: usize = 16 * 1024;
/// How far back from `PIECE` a word start is looked for before cutting anywhere.
const PIECE_SLACK: usize = 1024;

/// A token count and whether any part of it had to fall back to the bytes/4 approximation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub tokens: u64,
    pub approx: bool,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.tokens = self.tokens.saturating_add(other.tokens);
        self.approx |= other.approx;
    }

    /// The bytes/4 approximation of `n` bytes of text.
    pub fn bytes(n: u64) -> Tally {
        Tally { tokens: n.div_ceil(4), approx: true }
    }
}

/// Where to end the next piece of `text` (longer than `PIECE`): before a space that starts a word, else
/// at a char boundary.
fn piece_end(text: &str) -> usize {
    let bytes = text.as_bytes();
    let mut end = PIECE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let floor = end.saturating_sub(PIECE_SLACK).max(1);
    (floor..end)
        .rev()
        .find(|&i| {
            bytes[i] == b' '
                && !bytes[i - 1].is_ascii_whitespace()
                && bytes.get(i + 1).is_some_and(|b| b.is_ascii_alphanumeric())
        })
        .unwrap_or(end)
}

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

    fn encoding(&self, model: &str) -> Option<&'static Bpe> {
        if Self::is_o200k(model) {
            O200K.get_or_init(|| Bpe::load(&O200K_BASE)).as_ref()
        } else {
            CL100K.get_or_init(|| Bpe::load(&CL100K_BASE)).as_ref()
        }
    }

    /// Tokens in a plain text for `model`. Falls back to bytes/4 if an encoding failed to load.
    pub fn count_text(&self, model: &str, text: &str) -> u64 {
        self.tally_text(model, text).tokens
    }

    /// As [`TokenEstimator::count_text`], saying whether the count is partly a bytes/4 approximation:
    /// the tokenizer is run on pieces of at most `PIECE` bytes, and a piece it gives up on or panics on
    /// (neither should happen) is counted in bytes instead of taking the caller down.
    pub fn tally_text(&self, model: &str, text: &str) -> Tally {
        let Some(bpe) = self.encoding(model) else { return Tally::bytes(text.len() as u64) };
        let mut total = Tally::default();
        let mut rest = text;
        while !rest.is_empty() {
            let end = if rest.len() <= PIECE { rest.len() } else { piece_end(rest) };
            let (piece, tail) = rest.split_at(end);
            total.add(match catch_unwind(AssertUnwindSafe(|| bpe.count(piece))) {
                Ok(Some(n)) => Tally { tokens: n as u64, approx: false },
                Ok(None) | Err(_) => Tally::bytes(piece.len() as u64),
            });
            rest = tail;
        }
        total
    }

    /// Prompt tokens of a request body: OpenAI chat (`messages` with string or part-list content, tool
    /// calls), Anthropic Messages (`system`, content blocks: text, `tool_use` input, `tool_result`
    /// content; `tools`), or an embeddings request (`input`, string or list of strings).
    pub fn count_request(&self, model: &str, body: &serde_json::Value) -> u64 {
        self.tally_request(model, body).tokens
    }

    /// As [`TokenEstimator::count_request`], saying whether the count is partly approximate.
    pub fn tally_request(&self, model: &str, body: &serde_json::Value) -> Tally {
        let approx = std::cell::Cell::new(false);
        let text = |s: &str| {
            let t = self.tally_text(model, s);
            approx.set(approx.get() | t.approx);
            t.tokens
        };
        let tokens = self.count_request_with(&text, body);
        Tally { tokens, approx: approx.get() }
    }

    fn count_request_with(&self, text: &dyn Fn(&str) -> u64, body: &serde_json::Value) -> u64 {
        if let Some(messages) = body.get("messages").and_then(|m| m.as_array()) {
            let mut n = TOKENS_PER_REPLY;
            if let Some(system) = body.get("system") {
                n += TOKENS_PER_MESSAGE + self.count_content(text, system);
            }
            for m in messages {
                n += TOKENS_PER_MESSAGE;
                if let Some(role) = m.get("role").and_then(|r| r.as_str()) {
                    n += text(role);
                }
                if let Some(content) = m.get("content") {
                    n += self.count_content(text, content);
                }
                if let Some(calls) = m.get("tool_calls") {
                    n += text(&calls.to_string());
                }
            }
            if let Some(tools) = body.get("tools").filter(|t| !t.is_null()) {
                n += text(&tools.to_string());
            }
            return n;
        }
        match body.get("input") {
            Some(serde_json::Value::String(s)) => text(s),
            Some(serde_json::Value::Array(items)) => items.iter().map(|i| i.as_str().map(text).unwrap_or(1)).sum(),
            _ => 0,
        }
    }

    /// A message's content: a string, or a list of parts/blocks of either format.
    fn count_content(&self, text: &dyn Fn(&str) -> u64, content: &serde_json::Value) -> u64 {
        match content {
            serde_json::Value::String(s) => text(s),
            serde_json::Value::Array(parts) => parts
                .iter()
                .map(|p| {
                    let own = p.get("text").and_then(|t| t.as_str()).map(text).unwrap_or(0);
                    // Anthropic `tool_use` arguments and `tool_result` content.
                    let input = p.get("input").map(|i| text(&i.to_string())).unwrap_or(0);
                    let result = match p.get("type").and_then(|t| t.as_str()) {
                        Some("tool_result") => p.get("content").map(|c| self.count_content(text, c)).unwrap_or(0),
                        _ => 0,
                    };
                    own + input + result
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

    /// The metering task and the context-window guard each hold an estimator; the tables are the process's.
    #[test]
    fn estimators_share_one_copy_of_each_encoding() {
        let (a, b) = (TokenEstimator::new(), TokenEstimator::new());
        for model in ["gpt-4o", "claude-sonnet-4-5"] {
            let (ea, eb) = (a.encoding(model).unwrap(), b.encoding(model).unwrap());
            assert!(std::ptr::eq(ea, eb), "{model}: two estimators loaded two tables");
        }
        assert!(!std::ptr::eq(a.encoding("gpt-4o").unwrap(), a.encoding("claude-sonnet-4-5").unwrap()));
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

    #[test]
    fn hostile_texts_are_counted_without_panicking() {
        let t = TokenEstimator::new();
        // 1.1M spaces made tiktoken-rs panic inside `encode_ordinary` (regex backtrack limit); the pattern
        // still gives up on such a text if it is handed over whole.
        for text in [" ".repeat(1_100_000), "\n".repeat(600_000), " \n".repeat(400_000), "1".repeat(900_000)] {
            for model in ["gpt-4o", "gpt-4", "claude-sonnet-4-5"] {
                let n = t.tally_text(model, &text);
                assert!(n.tokens > 0 && n.tokens <= text.len() as u64, "{model}: {n:?}");
            }
        }
    }

    #[test]
    fn pieces_keep_the_count_of_the_whole_text() {
        let t = TokenEstimator::new();
        let sentence = "The quick brown fox jumps over the lazy dog, again and again. ";
        let text = sentence.repeat(5_000);
        assert!(text.len() > 10 * PIECE);
        for (model, reference) in [("gpt-4o", tiktoken_rs::o200k_base()), ("gpt-4", tiktoken_rs::cl100k_base())] {
            let whole = reference.unwrap().encode_ordinary(&text).len() as u64;
            let pieces = t.tally_text(model, &text);
            assert_eq!(pieces, Tally { tokens: whole, approx: false }, "{model}");
        }
    }
}
