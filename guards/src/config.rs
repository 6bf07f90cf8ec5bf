//! What the user writes in `tollgate.toml` for guards, redaction, the response cache and context limits,
//! and the pure `validate()` that turns it into the checked form (no network, no files).

use crate::classifier::ClassifierConfig;
use crate::context::{ContextWindow, InputPolicy, WindowCatalog};
use crate::extract::{Role, RoleSet};
use crate::redact::Kind;
use crate::rules::{Action, Family, GuardSpec, RuleEngine};
use crate::GuardError;
use serde::Deserialize;
use std::collections::BTreeMap;

/// `[[guards]]`: one prompt-injection guard. Rules of all guards run in one pass.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {
    /// Recorded in call events as `guard = "<name>:<rule>"` and returned in the 400 of a block.
    pub name: String,
    /// Built-in rule families: `all`, or any of `instruction_override`, `prompt_exfiltration`,
    /// `role_play`, `delimiter`, `encoding`, `indirect`.
    #[serde(default)]
    pub builtin: Vec<String>,
    /// Own rules: id → regular expression (Rust `regex` syntax), matched case-insensitively against the
    /// normalised text (lower case, look-alike letters folded to ASCII, invisible characters removed,
    /// whitespace runs collapsed to one space).
    #[serde(default)]
    pub patterns: BTreeMap<String, String>,
    /// Which texts to read: `user`, `tool` (tool results and documents), `system`, `assistant`.
    #[serde(default = "default_roles")]
    pub roles: Vec<Role>,
    /// `block` (400, outcome `rejected_guard`), `flag` (forwarded, recorded in the event's `guard`) or
    /// `log` (a log line and a metric only).
    #[serde(default)]
    pub action: Action,
    /// Virtual-key ids this guard applies to; empty = every key.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Public model names (routes) this guard applies to; empty = every model.
    #[serde(default)]
    pub models: Vec<String>,
    /// An external classifier (OpenAI-moderation-compatible HTTP endpoint) called for this guard.
    #[serde(default)]
    pub classifier: Option<ClassifierConfig>,
}

fn default_roles() -> Vec<Role> {
    vec![Role::User, Role::Tool]
}

/// What redaction does with a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RedactMode {
    #[default]
    Off,
    /// Replace each match with `[REDACTED:<kind>]`.
    Redact,
    /// Refuse the request (requests only): 400 naming the kinds found.
    Block,
}

/// `[redaction]`: secret and PII masking.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RedactionConfig {
    /// Requests: `off`, `redact` (masked before forwarding) or `block`.
    #[serde(default)]
    pub requests: RedactMode,
    /// Responses, streamed or not: `off` or `redact`.
    #[serde(default)]
    pub responses: RedactMode,
    /// Detectors: `api_key`, `private_key`, `jwt`, `aws_key`, `email`, `phone`, `card`, `iban`; empty = all.
    #[serde(default)]
    pub kinds: Vec<Kind>,
    /// Virtual-key ids it applies to; empty = every key.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Public model names it applies to; empty = every model.
    #[serde(default)]
    pub models: Vec<String>,
}

/// Where cached responses live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CacheBackend {
    /// In this process: LRU under `max_entries` and `max_bytes`.
    #[default]
    Memory,
    /// A Redis server shared by several gateways (`redis_url`).
    Redis,
}

/// `[cache]`: the exact-match response cache.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Public model names (routes) whose responses are cached: the opt-in. `["*"]` = every model.
    pub models: Vec<String>,
    #[serde(default)]
    pub backend: CacheBackend,
    /// `redis://host:port/db` for the `redis` backend.
    #[serde(default)]
    pub redis_url: Option<String>,
    /// Key prefix in Redis.
    #[serde(default = "default_prefix")]
    pub redis_prefix: String,
    /// Time allowed for one Redis command; a slower answer counts as a miss.
    #[serde(default = "default_redis_timeout_ms")]
    pub redis_timeout_ms: u64,
    /// How long an entry is served.
    #[serde(default = "default_ttl_s")]
    pub ttl_s: u64,
    /// `memory` backend: most entries kept.
    #[serde(default = "default_max_entries")]
    pub max_entries: usize,
    /// `memory` backend: most bytes kept (responses plus a small overhead each).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// Responses larger than this are not cached.
    #[serde(default = "default_max_entry_bytes")]
    pub max_entry_bytes: usize,
    /// Also cache sampled requests (`temperature` above 0 or absent). Off: only `temperature = 0`.
    #[serde(default)]
    pub sampled: bool,
}

fn default_prefix() -> String {
    "tollgate:cache:".into()
}
fn default_redis_timeout_ms() -> u64 {
    100
}
fn default_ttl_s() -> u64 {
    3600
}
fn default_max_entries() -> usize {
    10_000
}
fn default_max_bytes() -> usize {
    256 << 20
}
fn default_max_entry_bytes() -> usize {
    4 << 20
}

impl CacheConfig {
    pub fn covers(&self, model: &str) -> bool {
        self.models.iter().any(|m| m == "*" || m == model)
    }

    pub fn validate(&self) -> Result<(), GuardError> {
        let e = |k: &str, m: &str| Err(GuardError::Config { key: format!("cache.{k}"), message: m.into() });
        if self.models.is_empty() {
            return e("models", "list the models to cache, or [\"*\"] for all");
        }
        if self.ttl_s == 0 {
            return e("ttl_s", "must be greater than 0");
        }
        if self.backend == CacheBackend::Memory && (self.max_entries == 0 || self.max_bytes == 0) {
            return e("max_entries", "max_entries and max_bytes must be greater than 0");
        }
        if self.max_entry_bytes == 0 {
            return e("max_entry_bytes", "must be greater than 0");
        }
        if self.backend == CacheBackend::Redis {
            match &self.redis_url {
                None => return e("redis_url", "the redis backend needs redis_url = \"redis://host:port\""),
                Some(u) if !(u.starts_with("redis://") || u.starts_with("rediss://") || u.starts_with("unix://")) => {
                    return e("redis_url", "must start with redis://, rediss:// or unix://")
                }
                Some(_) => {}
            }
            if self.redis_timeout_ms == 0 {
                return e("redis_timeout_ms", "must be greater than 0");
            }
        }
        Ok(())
    }
}

/// `[context]`: context-window limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextConfig {
    /// Refuse prompts that cannot fit their model's window (on by default).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Windows of models the built-in table lacks, or corrections: `"my-model" = { window = 32768,
    /// max_output = 4096 }`.
    #[serde(default)]
    pub windows: BTreeMap<String, ContextWindow>,
    /// `[[context.policies]]`: a `max_input_tokens` for some keys and/or routes.
    #[serde(default)]
    pub policies: Vec<InputPolicy>,
}

impl Default for ContextConfig {
    fn default() -> Self {
        ContextConfig { enabled: true, windows: BTreeMap::new(), policies: Vec::new() }
    }
}

fn default_true() -> bool {
    true
}

impl ContextConfig {
    pub fn catalog(&self) -> Result<WindowCatalog, GuardError> {
        let mut c = WindowCatalog::builtin();
        for (m, w) in &self.windows {
            if w.window == 0 || w.max_input.is_some_and(|i| i == 0 || i > w.window) {
                return Err(GuardError::Config {
                    key: format!("context.windows.\"{m}\""),
                    message: "window must be > 0 and max_input within it".into(),
                });
            }
            c.set(m, *w);
        }
        for (i, p) in self.policies.iter().enumerate() {
            if p.max_input_tokens == 0 {
                return Err(GuardError::Config {
                    key: format!("context.policies[{i}].max_input_tokens"),
                    message: "must be greater than 0".into(),
                });
            }
        }
        Ok(c)
    }
}

/// Checks `[[guards]]` and compiles their rules.
pub fn validate_guards(guards: &[GuardConfig]) -> Result<RuleEngine, GuardError> {
    let mut specs = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, g) in guards.iter().enumerate() {
        let key = |f: &str| format!("guards[{i}].{f}");
        let bad = |f: &str, m: String| GuardError::Config { key: key(f), message: m };
        if g.name.is_empty() || g.name.contains(':') {
            return Err(bad("name", "must be non-empty and contain no `:`".into()));
        }
        if !names.insert(g.name.clone()) {
            return Err(bad("name", format!("`{}` is used by two guards", g.name)));
        }
        let mut families = Vec::new();
        for f in &g.builtin {
            if f == "all" {
                families.extend(Family::ALL);
                continue;
            }
            let fam: Family = serde_json::from_value(serde_json::Value::String(f.clone())).map_err(|_| {
                bad(
                    "builtin",
                    format!("unknown family `{f}`; use all, instruction_override, prompt_exfiltration, role_play, delimiter, encoding or indirect"),
                )
            })?;
            families.push(fam);
        }
        families.dedup();
        if families.is_empty() && g.patterns.is_empty() && g.classifier.is_none() {
            return Err(bad("builtin", "a guard needs builtin families, patterns or a classifier".into()));
        }
        if g.roles.is_empty() {
            return Err(bad("roles", "list at least one of user, tool, system, assistant".into()));
        }
        if let Some(c) = &g.classifier {
            if c.url.parse::<http::Uri>().is_err() || !(c.url.starts_with("http://") || c.url.starts_with("https://")) {
                return Err(bad("classifier.url", format!("`{}` is not an http(s) URL", c.url)));
            }
            if c.timeout_ms == 0 {
                return Err(bad("classifier.timeout_ms", "must be greater than 0".into()));
            }
        }
        specs.push(GuardSpec {
            name: g.name.clone(),
            action: g.action,
            roles: RoleSet::of(&g.roles),
            keys: g.keys.clone(),
            models: g.models.clone(),
            families,
            patterns: g.patterns.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        });
    }
    RuleEngine::new(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        #[serde(default)]
        guards: Vec<GuardConfig>,
        #[serde(default)]
        redaction: RedactionConfig,
        cache: Option<CacheConfig>,
        #[serde(default)]
        context: ContextConfig,
    }

    #[test]
    fn a_full_config_reads_and_validates() {
        let f: File = toml::from_str(
            r#"
            [[guards]]
            name = "injection"
            builtin = ["all"]
            action = "block"

            [[guards]]
            name = "words"
            roles = ["user"]
            action = "flag"
            keys = ["team-a"]
            patterns = { competitor = "acme\\s+corp" }

            [[guards]]
            name = "moderation"
            classifier = { url = "http://127.0.0.1:9/v1/moderations", timeout_ms = 300, on_error = "block" }

            [redaction]
            requests = "redact"
            responses = "redact"
            kinds = ["email", "card"]

            [cache]
            models = ["gpt-4o-mini"]
            backend = "redis"
            redis_url = "redis://127.0.0.1:6379/"
            ttl_s = 60

            [context.windows."my-model"]
            window = 32768
            max_output = 4096

            [[context.policies]]
            keys = ["interns"]
            max_input_tokens = 2000
            "#,
        )
        .unwrap();
        let e = validate_guards(&f.guards).unwrap();
        assert_eq!(e.guards().len(), 3);
        assert_eq!(f.redaction.kinds, vec![Kind::Email, Kind::Card]);
        f.cache.as_ref().unwrap().validate().unwrap();
        assert!(f.cache.unwrap().covers("gpt-4o-mini"));
        assert_eq!(f.context.catalog().unwrap().get("my-model").unwrap().window, 32768);
    }

    #[test]
    fn bad_values_name_their_key() {
        let g: Vec<GuardConfig> =
            toml::from_str::<File>("[[guards]]\nname = \"g\"\nbuiltin = [\"dan\"]\n").unwrap().guards;
        let err = validate_guards(&g).unwrap_err().to_string();
        assert!(err.starts_with("guards[0].builtin:"), "{err}");
        let g = toml::from_str::<File>("[[guards]]\nname = \"g\"\n").unwrap().guards;
        assert!(validate_guards(&g).unwrap_err().to_string().starts_with("guards[0].builtin"));
        assert!(toml::from_str::<File>("[[guards]]\nname = \"g\"\nactoin = \"block\"\n").is_err());
        let c: File = toml::from_str("[cache]\nmodels = [\"*\"]\nbackend = \"redis\"\n").unwrap();
        assert!(c.cache.unwrap().validate().unwrap_err().to_string().starts_with("cache.redis_url"));
    }
}
