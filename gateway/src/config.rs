//! What the user writes in `tollgate.toml` for the gateway: upstreams, virtual keys and price overrides,
//! and `validate()`, which turns it into the checked form the gateway runs on (no I/O).

use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use tollgate_events::{PriceSpec, PriceTable};

/// An upstream model provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Name used in call events (`upstream`) and logs.
    pub name: String,
    /// `openai`, `anthropic` (native Messages API), `openai_compatible` (vLLM, TGI, Ollama, …) or
    /// `azure_openai`. Clients of either format reach any kind: requests and responses are translated
    /// when the client's format and the upstream's differ, and forwarded byte for byte when they match.
    #[serde(default = "default_kind")]
    pub kind: UpstreamKind,
    /// Base URL including the version prefix, e.g. `https://api.openai.com/v1`, `https://api.anthropic.com/v1`
    /// or `http://localhost:11434/v1`.
    /// For `azure_openai`: the resource URL, e.g. `https://my-resource.openai.azure.com`.
    pub base_url: String,
    /// Environment variable holding the provider's API key. Unset variable: the upstream is called
    /// without a key (fine for local servers) and a warning is logged at start.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Public model names served by this upstream. Each needs a price (built in or in `[prices]`).
    pub models: Vec<String>,
    /// `azure_openai` only: model name → deployment name (default: the model name).
    #[serde(default)]
    pub deployments: BTreeMap<String, String>,
    /// `azure_openai` only: the `api-version` query parameter.
    #[serde(default = "default_azure_api_version")]
    pub api_version: String,
    /// TCP+TLS connect timeout.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Time allowed until the upstream's response headers arrive.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Longest silence allowed between two body chunks of a response.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Ask for usage in streams (`stream_options.include_usage`) even when the client did not, and hide
    /// that extra chunk from such clients. Turn off for servers that reject `stream_options`; their
    /// streams are then metered by estimation.
    #[serde(default = "default_true")]
    pub stream_include_usage: bool,
    /// `anthropic` only: the `anthropic-version` header sent upstream when the client sent none (an
    /// Anthropic client's own header is forwarded).
    #[serde(default = "default_anthropic_version")]
    pub anthropic_version: String,
    /// `max_tokens` sent to an `anthropic` upstream when an OpenAI client gave none (Anthropic requires it).
    #[serde(default = "default_max_tokens")]
    pub default_max_tokens: u64,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamKind {
    Openai,
    Anthropic,
    OpenaiCompatible,
    AzureOpenai,
}

/// The wire format an upstream (or a client) speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// OpenAI chat completions (also Azure OpenAI and OpenAI-compatible servers).
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
}

impl UpstreamKind {
    pub fn provider(self) -> &'static str {
        match self {
            UpstreamKind::Openai => "openai",
            UpstreamKind::Anthropic => "anthropic",
            UpstreamKind::OpenaiCompatible => "openai_compatible",
            UpstreamKind::AzureOpenai => "azure_openai",
        }
    }

    pub fn wire(self) -> Wire {
        match self {
            UpstreamKind::Anthropic => Wire::Anthropic,
            UpstreamKind::Openai | UpstreamKind::OpenaiCompatible | UpstreamKind::AzureOpenai => Wire::OpenAi,
        }
    }
}

/// A virtual API key: what clients send instead of a provider key, and who pays for their calls.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Stable id recorded in call events as `api_key_id`.
    pub id: String,
    /// `sha256:<hex>` of the key; print one with `tollgate hash-key <key>`. The key itself is never stored.
    pub hash: String,
    #[serde(default)]
    pub tenant: String,
    #[serde(default)]
    pub department: String,
    #[serde(default)]
    pub team: String,
    #[serde(default)]
    pub project: String,
    #[serde(default)]
    pub user: String,
    /// Free-form labels copied into every call event.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Models this key may call; empty means every configured model.
    #[serde(default)]
    pub models: Vec<String>,
    /// Let clients set `x-tollgate-project`, `x-tollgate-user` and `x-tollgate-tags` (`k=v,k=v`) per call.
    #[serde(default)]
    pub allow_attribution_headers: bool,
    /// May read the query API (`/v1/showback`, `/v1/latency`, `/v1/sql`).
    #[serde(default)]
    pub query: bool,
}

/// A price override, USD per million tokens, written as a string (`"0.0375"`) or a number.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    pub input: Decimal,
    pub output: Decimal,
    /// Defaults to `input`.
    #[serde(default)]
    pub cached_input: Option<Decimal>,
    /// Defaults to `input`.
    #[serde(default)]
    pub cache_write: Option<Decimal>,
    /// Defaults to `output`.
    #[serde(default)]
    pub reasoning: Option<Decimal>,
}

/// A decimal read as text so that no float rounding reaches money.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Decimal {
    Text(String),
    Int(u64),
    Float(f64),
}

impl Decimal {
    fn text(&self) -> String {
        match self {
            Decimal::Text(s) => s.clone(),
            Decimal::Int(i) => i.to_string(),
            // `Display` for f64 prints the shortest text that reads back to the same float, never in
            // exponent form: 0.0375 -> "0.0375".
            Decimal::Float(f) => f.to_string(),
        }
    }
}

/// Gateway tuning.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    /// Largest request body accepted.
    #[serde(default = "default_max_body_bytes")]
    pub max_request_bytes: usize,
    /// Capacity of the in-memory event queue between request handlers and the metering task. When it is
    /// full, events are appended to `spill_path` (never dropped, never blocking a client) and replayed
    /// when the queue drains; `tollgate_events_spilled_total` counts them.
    #[serde(default = "default_queue_capacity")]
    pub event_queue_capacity: usize,
    /// Longest upstream SSE line (and longest event `data` over several lines) read for metering. A
    /// longer one is passed to the client unread (a translated stream drops it), its event is not
    /// metered, and `tollgate_sse_lines_too_long_total` counts it. Bounds a stream's memory.
    #[serde(default = "default_max_sse_line_bytes")]
    pub max_sse_line_bytes: usize,
    /// Time a client has to send its request headers; the connection is closed after it.
    #[serde(default = "default_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// Time a client has to send its whole request body: past it, 408 `request_timeout` (and an event).
    #[serde(default = "default_body_read_timeout_ms")]
    pub body_read_timeout_ms: u64,
    /// Largest request headers (all names and values) on an LLM endpoint: past it, 431
    /// `headers_too_large` in the client's error shape and an event. Past 4x this (or more than 100
    /// header lines) the HTTP layer answers a bare 431 and closes the connection.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            max_request_bytes: default_max_body_bytes(),
            event_queue_capacity: default_queue_capacity(),
            max_sse_line_bytes: default_max_sse_line_bytes(),
            header_read_timeout_ms: default_header_read_timeout_ms(),
            body_read_timeout_ms: default_body_read_timeout_ms(),
            max_header_bytes: default_max_header_bytes(),
        }
    }
}

fn default_kind() -> UpstreamKind {
    UpstreamKind::OpenaiCompatible
}
fn default_azure_api_version() -> String {
    "2024-10-21".into()
}
fn default_anthropic_version() -> String {
    "2023-06-01".into()
}
fn default_max_tokens() -> u64 {
    4096
}
fn default_connect_timeout_ms() -> u64 {
    5_000
}
fn default_request_timeout_ms() -> u64 {
    600_000
}
fn default_idle_timeout_ms() -> u64 {
    300_000
}
fn default_true() -> bool {
    true
}
fn default_max_body_bytes() -> usize {
    32 * 1024 * 1024
}
fn default_queue_capacity() -> usize {
    16_384
}
fn default_max_sse_line_bytes() -> usize {
    8 * 1024 * 1024
}
fn default_header_read_timeout_ms() -> u64 {
    10_000
}
fn default_body_read_timeout_ms() -> u64 {
    60_000
}
fn default_max_header_bytes() -> usize {
    32 * 1024
}

/// A config problem, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

pub(crate) fn err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError { key: key.into(), message: message.into() }
}

/// Checked gateway config.
#[derive(Debug, Clone)]
pub struct ValidatedConfig {
    pub upstreams: Vec<UpstreamConfig>,
    pub keys: Vec<ValidatedKey>,
    pub prices: PriceTable,
    /// model → index into `upstreams`.
    pub model_routes: HashMap<String, usize>,
    pub settings: GatewaySettings,
}

#[derive(Debug, Clone)]
pub struct ValidatedKey {
    pub cfg: KeyConfig,
    pub digest: [u8; 32],
}

/// Pure validation: no network, no files.
pub fn validate(
    upstreams: &[UpstreamConfig],
    keys: &[KeyConfig],
    prices: &BTreeMap<String, PriceConfig>,
    settings: &GatewaySettings,
) -> Result<ValidatedConfig, ConfigError> {
    let mut table = PriceTable::builtin();
    for (model, p) in prices {
        let spec = PriceSpec {
            input: p.input.text(),
            output: p.output.text(),
            cached_input: p.cached_input.as_ref().map(Decimal::text),
            cache_write: p.cache_write.as_ref().map(Decimal::text),
            reasoning: p.reasoning.as_ref().map(Decimal::text),
        };
        table.set(model, &spec, "config").map_err(|e| err("prices", e.to_string()))?;
    }
    let mut model_routes = HashMap::new();
    let mut names = std::collections::HashSet::new();
    for (i, u) in upstreams.iter().enumerate() {
        let key = |f: &str| format!("upstreams[{i}].{f}");
        if u.name.is_empty() {
            return Err(err(key("name"), "must not be empty"));
        }
        if !names.insert(u.name.clone()) {
            return Err(err(key("name"), format!("`{}` is used by two upstreams", u.name)));
        }
        if !(u.base_url.starts_with("http://") || u.base_url.starts_with("https://")) {
            return Err(err(key("base_url"), format!("`{}` must start with http:// or https://", u.base_url)));
        }
        if u.base_url.parse::<http::Uri>().is_err() {
            return Err(err(key("base_url"), format!("`{}` is not a valid URL", u.base_url)));
        }
        if u.models.is_empty() {
            return Err(err(key("models"), "list at least one model"));
        }
        for m in &u.models {
            if table.get(m).is_none() {
                return Err(err(
                    key("models"),
                    format!(
                        "model `{m}` has no price; add [prices.\"{m}\"] with input and output USD per million tokens"
                    ),
                ));
            }
            if model_routes.insert(m.clone(), i).is_some() {
                return Err(err(key("models"), format!("model `{m}` is served by two upstreams")));
            }
        }
        for (t, v) in [
            ("connect_timeout_ms", u.connect_timeout_ms),
            ("request_timeout_ms", u.request_timeout_ms),
            ("idle_timeout_ms", u.idle_timeout_ms),
        ] {
            if v == 0 {
                return Err(err(key(t), "must be greater than 0"));
            }
        }
        if u.default_max_tokens == 0 {
            return Err(err(key("default_max_tokens"), "must be greater than 0"));
        }
        if u.anthropic_version.is_empty() || http::HeaderValue::from_str(&u.anthropic_version).is_err() {
            return Err(err(key("anthropic_version"), "must be a version like 2023-06-01"));
        }
    }
    let mut out_keys = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for (i, k) in keys.iter().enumerate() {
        let key = |f: &str| format!("keys[{i}].{f}");
        if k.id.is_empty() {
            return Err(err(key("id"), "must not be empty"));
        }
        if !ids.insert(k.id.clone()) {
            return Err(err(key("id"), format!("`{}` is used by two keys", k.id)));
        }
        let digest = parse_key_hash(&k.hash)
            .ok_or_else(|| err(key("hash"), "must be `sha256:` followed by 64 hex digits (see `tollgate hash-key`)"))?;
        for m in &k.models {
            if !model_routes.contains_key(m) {
                return Err(err(key("models"), format!("model `{m}` is not served by any upstream")));
            }
        }
        out_keys.push(ValidatedKey { cfg: k.clone(), digest });
    }
    for (name, v) in [
        ("event_queue_capacity", settings.event_queue_capacity as u64),
        ("max_request_bytes", settings.max_request_bytes as u64),
        ("header_read_timeout_ms", settings.header_read_timeout_ms),
        ("body_read_timeout_ms", settings.body_read_timeout_ms),
    ] {
        if v == 0 {
            return Err(err(format!("gateway.{name}"), "must be greater than 0"));
        }
    }
    // An SSE line shorter than this cannot carry an ordinary chunk; headers shorter cannot carry a key.
    if settings.max_sse_line_bytes < 4096 {
        return Err(err("gateway.max_sse_line_bytes", "must be at least 4096"));
    }
    if settings.max_header_bytes < 4096 {
        return Err(err("gateway.max_header_bytes", "must be at least 4096"));
    }
    Ok(ValidatedConfig {
        upstreams: upstreams.to_vec(),
        keys: out_keys,
        prices: table,
        model_routes,
        settings: settings.clone(),
    })
}

pub(crate) fn parse_key_hash(s: &str) -> Option<[u8; 32]> {
    let hex_part = s.strip_prefix("sha256:")?;
    let bytes = hex::decode(hex_part).ok()?;
    bytes.try_into().ok()
}

/// `sha256:<hex>` of a key, the form stored in config.
pub fn hash_key(key: &str) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(key.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(models: &[&str]) -> UpstreamConfig {
        toml::from_str(&format!("name = \"u\"\nbase_url = \"http://localhost:1/v1\"\nmodels = {:?}", models)).unwrap()
    }

    #[test]
    fn unpriced_model_is_a_config_error_naming_the_key() {
        let e = validate(&[upstream(&["llama-3"])], &[], &BTreeMap::new(), &GatewaySettings::default()).unwrap_err();
        assert_eq!(e.key, "upstreams[0].models");
        assert!(e.message.contains("llama-3"), "{e}");
    }

    #[test]
    fn price_override_makes_it_valid_and_exact() {
        let prices: BTreeMap<String, PriceConfig> =
            toml::from_str("[llama-3]\ninput = 0.0375\noutput = \"0.1\"\n").unwrap();
        let v = validate(&[upstream(&["llama-3"])], &[], &prices, &GatewaySettings::default()).unwrap();
        let p = v.prices.get("llama-3").unwrap();
        assert_eq!((p.input, p.output), (37_500_000, 100_000_000));
        assert_eq!(p.price_id, "llama-3@config");
    }

    #[test]
    fn anthropic_upstream_defaults_and_checks() {
        let u: UpstreamConfig = toml::from_str(
            "name = \"a\"\nkind = \"anthropic\"\nbase_url = \"https://api.anthropic.com/v1\"\nmodels = [\"claude-sonnet-4-5\"]",
        )
        .unwrap();
        assert_eq!((u.kind.wire(), u.kind.provider()), (Wire::Anthropic, "anthropic"));
        assert_eq!((u.anthropic_version.as_str(), u.default_max_tokens), ("2023-06-01", 4096));
        let v = validate(std::slice::from_ref(&u), &[], &BTreeMap::new(), &GatewaySettings::default()).unwrap();
        assert_eq!(v.model_routes["claude-sonnet-4-5"], 0);
        let zero = UpstreamConfig { default_max_tokens: 0, ..u };
        let e = validate(&[zero], &[], &BTreeMap::new(), &GatewaySettings::default()).unwrap_err();
        assert_eq!(e.key, "upstreams[0].default_max_tokens");
    }

    #[test]
    fn bad_key_hash_names_the_key() {
        let k: KeyConfig = toml::from_str("id = \"a\"\nhash = \"plaintext\"").unwrap();
        let e = validate(&[upstream(&["gpt-4o"])], &[k], &BTreeMap::new(), &GatewaySettings::default()).unwrap_err();
        assert_eq!(e.key, "keys[0].hash");
        assert_eq!(hash_key("abc"), "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
