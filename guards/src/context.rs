//! Context-window limits: each model's window and output cap, and the check that refuses a prompt that
//! cannot fit before it is sent (and billed). Tokens are counted only when a cheap bound says the prompt
//! might not fit: a tokenizer token is at least one byte of UTF-8, so a request body of `n` bytes holds
//! at most about `n` prompt tokens, and most requests are far below their model's window.

use serde::Deserialize;
use std::collections::BTreeMap;
use tollgate_events::TokenEstimator;

/// A model's limits, in tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextWindow {
    /// Prompt plus output.
    pub window: u64,
    /// Largest output the model produces in one call.
    pub max_output: u64,
    /// Largest prompt, when the provider caps it below `window` (e.g. GPT-5: 272k of a 400k window).
    #[serde(default)]
    pub max_input: Option<u64>,
}

// (model, window, max output, max input) from the providers' model pages, read 2025-11-01.
const BUILTIN: &[(&str, u64, u64, Option<u64>)] = &[
    ("gpt-5", 400_000, 128_000, Some(272_000)),
    ("gpt-5-mini", 400_000, 128_000, Some(272_000)),
    ("gpt-5-nano", 400_000, 128_000, Some(272_000)),
    ("gpt-4.1", 1_047_576, 32_768, None),
    ("gpt-4.1-mini", 1_047_576, 32_768, None),
    ("gpt-4.1-nano", 1_047_576, 32_768, None),
    ("gpt-4o", 128_000, 16_384, None),
    ("gpt-4o-mini", 128_000, 16_384, None),
    ("gpt-4-turbo", 128_000, 4_096, None),
    ("gpt-4", 8_192, 8_192, None),
    ("gpt-3.5-turbo", 16_385, 4_096, None),
    ("o1", 200_000, 100_000, None),
    ("o1-mini", 128_000, 65_536, None),
    ("o3", 200_000, 100_000, None),
    ("o3-mini", 200_000, 100_000, None),
    ("o3-pro", 200_000, 100_000, None),
    ("o4-mini", 200_000, 100_000, None),
    ("text-embedding-3-small", 8_191, 0, None),
    ("text-embedding-3-large", 8_191, 0, None),
    ("text-embedding-ada-002", 8_191, 0, None),
    ("claude-opus-4-5", 200_000, 64_000, None),
    ("claude-opus-4-1", 200_000, 32_000, None),
    ("claude-opus-4", 200_000, 32_000, None),
    ("claude-sonnet-4-5", 200_000, 64_000, None),
    ("claude-sonnet-4", 200_000, 64_000, None),
    ("claude-3-7-sonnet", 200_000, 64_000, None),
    ("claude-3-5-sonnet", 200_000, 8_192, None),
    ("claude-haiku-4-5", 200_000, 64_000, None),
    ("claude-3-5-haiku", 200_000, 8_192, None),
    ("claude-3-haiku", 200_000, 4_096, None),
    ("claude-3-opus", 200_000, 4_096, None),
];

/// Model → limits: the built-in table, overridden and extended by config. Lookup is exact, then by the
/// longest known name followed by `-` (dated snapshots: `gpt-4o-2024-08-06` has `gpt-4o`'s window).
#[derive(Debug, Clone)]
pub struct WindowCatalog {
    windows: BTreeMap<String, ContextWindow>,
}

impl WindowCatalog {
    pub fn builtin() -> WindowCatalog {
        let windows = BUILTIN
            .iter()
            .map(|(m, w, o, i)| (m.to_string(), ContextWindow { window: *w, max_output: *o, max_input: *i }))
            .collect();
        WindowCatalog { windows }
    }

    pub fn set(&mut self, model: &str, w: ContextWindow) {
        self.windows.insert(model.to_string(), w);
    }

    pub fn get(&self, model: &str) -> Option<ContextWindow> {
        if let Some(w) = self.windows.get(model) {
            return Some(*w);
        }
        let mut best: Option<(&str, ContextWindow)> = None;
        for (name, w) in &self.windows {
            if model.len() > name.len()
                && model.starts_with(name.as_str())
                && model.as_bytes()[name.len()] == b'-'
                && best.is_none_or(|(b, _)| name.len() > b.len())
            {
                best = Some((name, *w));
            }
        }
        best.map(|(_, w)| w)
    }
}

/// A `max_input_tokens` policy for some keys and/or routes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputPolicy {
    /// Virtual-key ids it applies to; empty = every key.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Public model names (routes) it applies to; empty = every model.
    #[serde(default)]
    pub models: Vec<String>,
    /// Largest prompt allowed, in tokens.
    pub max_input_tokens: u64,
}

/// Why a prompt was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLong {
    /// Prompt tokens counted.
    pub tokens: u64,
    /// Output tokens the request asked for (`max_tokens`), counted against the window.
    pub requested_output: u64,
    /// The limit that was broken.
    pub limit: u64,
    /// `context_window`, `max_input` or `policy`.
    pub which: &'static str,
}

impl TooLong {
    pub fn message(&self, model: &str) -> String {
        match self.which {
            "policy" => format!(
                "this request has {} prompt tokens; this key's policy allows at most {} for `{model}`",
                self.tokens, self.limit
            ),
            "max_input" => format!("`{model}` accepts at most {} prompt tokens; this request has {}", self.limit, self.tokens),
            _ => format!(
                "`{model}`'s context window is {} tokens; this request has {} prompt tokens and asks for {} output tokens",
                self.limit, self.tokens, self.requested_output
            ),
        }
    }
}

/// The outcome of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextCheck {
    /// Fits. `counted` is the exact prompt count when one was needed.
    Fits {
        counted: Option<u64>,
    },
    TooLong(TooLong),
}

pub struct ContextLimiter {
    catalog: WindowCatalog,
    policies: Vec<InputPolicy>,
    estimator: TokenEstimator,
}

impl ContextLimiter {
    pub fn new(catalog: WindowCatalog, policies: Vec<InputPolicy>) -> ContextLimiter {
        ContextLimiter { catalog, policies, estimator: TokenEstimator::new() }
    }

    pub fn catalog(&self) -> &WindowCatalog {
        &self.catalog
    }

    /// The limits on prompt tokens that apply to a request, with what each one is: the served model's
    /// window less the requested output, its input cap, and the policies for this key and public model.
    fn limits<'a>(
        &'a self,
        key_id: &'a str,
        public_model: &'a str,
        served_model: &str,
        out: u64,
    ) -> impl Iterator<Item = (u64, &'static str)> + 'a {
        let w = self.catalog.get(served_model);
        let window = w.map(|w| (w.window.saturating_sub(out), "context_window"));
        let max_input = w.and_then(|w| w.max_input).map(|mi| (mi, "max_input"));
        let policies = self.policies.iter().filter(move |p| {
            let key_ok = p.keys.is_empty() || p.keys.iter().any(|k| k == key_id);
            let model_ok = p.models.is_empty() || p.models.iter().any(|m| m == public_model);
            key_ok && model_ok
        });
        window.into_iter().chain(max_input).chain(policies.map(|p| (p.max_input_tokens, "policy")))
    }

    /// Whether a body of `body_len` bytes fits every limit that applies without counting: prompt tokens
    /// are at most the body's bytes. True also when no limit applies. Lets the caller skip parsing the
    /// body at all (the usual case: most prompts are far smaller than the model's window).
    pub fn fits_unread(
        &self,
        key_id: &str,
        public_model: &str,
        served_model: &str,
        body_len: usize,
        requested_output: Option<u64>,
    ) -> bool {
        let out = requested_output.unwrap_or(0);
        self.limits(key_id, public_model, served_model, out).all(|(limit, _)| body_len as u64 <= limit)
    }

    /// Checks a request for `model` (the model that will serve it) whose body is `body_len` bytes.
    /// `requested_output` is the request's `max_tokens`, if any. A model with no known window and no
    /// policy passes.
    pub fn check(
        &self,
        key_id: &str,
        public_model: &str,
        served_model: &str,
        body: &serde_json::Value,
        body_len: usize,
        requested_output: Option<u64>,
    ) -> ContextCheck {
        let out = requested_output.unwrap_or(0);
        let limits: Vec<(u64, &'static str)> = self.limits(key_id, public_model, served_model, out).collect();
        let Some(&(tightest, _)) = limits.iter().min_by_key(|l| l.0) else {
            return ContextCheck::Fits { counted: None };
        };
        // Cheap bound: prompt tokens <= body bytes.
        if body_len as u64 <= tightest {
            return ContextCheck::Fits { counted: None };
        }
        let tokens = self.estimator.count_request(served_model, body);
        for &(limit, which) in &limits {
            if tokens > limit {
                let limit = if which == "context_window" { limit + out } else { limit };
                return ContextCheck::TooLong(TooLong { tokens, requested_output: out, limit, which });
            }
        }
        ContextCheck::Fits { counted: Some(tokens) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limiter(policies: Vec<InputPolicy>) -> ContextLimiter {
        let mut c = WindowCatalog::builtin();
        c.set("tiny", ContextWindow { window: 100, max_output: 50, max_input: None });
        ContextLimiter::new(c, policies)
    }

    /// A chat body whose prompt is `n` tokens for tiktoken encodings: 3 (reply) + 3 (message) + 1 ("user")
    /// + "hello" and n-8 times " hello", one token each.
    fn body_of(n: u64) -> serde_json::Value {
        let text = format!("hello{}", " hello".repeat((n - 8) as usize));
        json!({"model": "tiny", "messages": [{"role": "user", "content": text}]})
    }

    #[test]
    fn refuses_only_what_cannot_fit_and_counts_only_when_needed() {
        let l = limiter(vec![]);
        let fits = body_of(60);
        let len = fits.to_string().len();
        assert_eq!(l.check("k", "tiny", "tiny", &fits, len, Some(40)), ContextCheck::Fits { counted: Some(60) });
        match l.check("k", "tiny", "tiny", &fits, len, Some(41)) {
            ContextCheck::TooLong(t) => assert_eq!((t.tokens, t.limit, t.which), (60, 100, "context_window")),
            other => panic!("{other:?}"),
        }
        // A small body is not counted at all.
        let small = json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(l.check("k", "tiny", "tiny", &small, 60, None), ContextCheck::Fits { counted: None });
        // Unknown model, no policy: passes uncounted.
        assert_eq!(l.check("k", "x", "x", &fits, 100_000, None), ContextCheck::Fits { counted: None });
    }

    /// The unread check agrees with `check`: whatever it lets through uncounted, `check` lets through
    /// uncounted too, and a body it cannot vouch for is one `check` counts.
    #[test]
    fn fits_unread_is_the_cheap_bound_of_check() {
        let l = limiter(vec![InputPolicy { keys: vec!["small".into()], models: vec![], max_input_tokens: 20 }]);
        // tiny: window 100, so 100 - 40 = 60 prompt tokens with 40 asked for output.
        assert!(l.fits_unread("k", "tiny", "tiny", 60, Some(40)));
        assert!(!l.fits_unread("k", "tiny", "tiny", 61, Some(40)));
        assert!(l.fits_unread("k", "tiny", "tiny", 100, None));
        // The key's policy (20 tokens) is tighter than the window.
        assert!(l.fits_unread("small", "tiny", "tiny", 20, None));
        assert!(!l.fits_unread("small", "tiny", "tiny", 21, None));
        // No window known and no policy: nothing to check.
        assert!(l.fits_unread("k", "x", "x", 10_000_000, None));
        for (key, len, out) in [("k", 60, Some(40)), ("k", 61, Some(40)), ("small", 21, None), ("small", 20, None)] {
            let b = body_of(30);
            let unread = l.fits_unread(key, "tiny", "tiny", len, out);
            let checked = l.check(key, "tiny", "tiny", &b, len, out);
            assert_eq!(unread, checked == ContextCheck::Fits { counted: None }, "{key} {len} {out:?}");
        }
    }

    #[test]
    fn policies_apply_per_key_and_route_and_dated_names_find_their_model() {
        let l = limiter(vec![InputPolicy { keys: vec!["small".into()], models: vec![], max_input_tokens: 20 }]);
        let b = body_of(21);
        let len = b.to_string().len();
        assert!(matches!(
            l.check("small", "tiny", "tiny", &b, len, None),
            ContextCheck::TooLong(TooLong { which: "policy", tokens: 21, .. })
        ));
        assert_eq!(l.check("other", "tiny", "tiny", &b, len, None), ContextCheck::Fits { counted: Some(21) });
        let c = WindowCatalog::builtin();
        assert_eq!(c.get("gpt-4o-2024-08-06").map(|w| w.window), Some(128_000));
        assert_eq!(c.get("gpt-4o-mini-2024-07-18").map(|w| w.max_output), Some(16_384));
        assert_eq!(c.get("gpt-5").and_then(|w| w.max_input), Some(272_000));
        assert!(c.get("gpt-4ox").is_none());
    }
}
