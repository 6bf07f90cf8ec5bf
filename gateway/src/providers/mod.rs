//! Providers: how to call one kind of upstream. Each kind is one file implementing [`Provider`] (its URL
//! layout, credentials header, extra headers, the field it takes for an output bound, which failures
//! may succeed on retry), registered by one line in [`PROVIDERS`]. What is common to all of them lives
//! here: the pooled HTTP client, the configured [`Upstream`], and [`prepare`], which forwards the
//! client's bytes when formats match and translates them otherwise.

pub mod anthropic;
pub mod azure_openai;
pub mod openai;
pub mod openai_compatible;

use crate::config::{UpstreamConfig, Wire};
use crate::error::GatewayError;
use crate::http_client::{http_client, HttpClient, IDLE_TIMEOUT, MAX_IDLE_PER_HOST};
use crate::inline_client::InlineClient;
use crate::respond::body::BodyKind;
use crate::translate::{request, StreamTranslator, Translation};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use std::sync::Arc;
use std::time::Duration;
use tollgate_events::{ClientApi, Endpoint};
use tracing::warn;

/// Every provider, by the name `kind` takes in an upstream's config.
pub static PROVIDERS: &[&dyn Provider] = &[
    &openai::OpenAiProvider,
    &anthropic::AnthropicProvider,
    &azure_openai::AzureOpenAiProvider,
    &openai_compatible::OpenAiCompatibleProvider,
];

/// The provider registered under `kind`.
pub fn by_kind(kind: &str) -> Option<&'static dyn Provider> {
    PROVIDERS.iter().copied().find(|p| p.kind() == kind)
}

/// One kind of upstream.
pub trait Provider: Send + Sync {
    /// The `kind` name in config, recorded as the event's `provider`.
    fn kind(&self) -> &'static str;
    /// The API format it speaks.
    fn wire(&self) -> Wire;
    /// The header that carries the provider key, and its value.
    fn auth_header(&self, key: &str) -> (HeaderName, String) {
        (header::AUTHORIZATION, format!("Bearer {key}"))
    }
    /// The URL of `path` (e.g. `/chat/completions`) for `model`.
    fn url(&self, up: &UpstreamConfig, base: &str, _model: &str, path: &str) -> String {
        let _ = up;
        format!("{base}{path}")
    }
    /// Headers the provider needs besides credentials.
    fn extra_headers(
        &self,
        builder: http::request::Builder,
        _up: &UpstreamConfig,
        _client: ClientApi,
        _headers: &HeaderMap,
    ) -> http::request::Builder {
        builder
    }
    /// The request field for an output bound when an Anthropic request is translated to this provider.
    fn max_tokens_field(&self) -> &'static str {
        "max_tokens"
    }
    /// Whether an error status may succeed on another attempt: rate limits, timeouts and server errors
    /// may; anything else is the request's fault and would fail again.
    fn retryable_status(&self, status: StatusCode) -> bool {
        status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT || status.is_server_error()
    }
}

/// A configured upstream, ready to call.
pub struct Upstream {
    pub cfg: UpstreamConfig,
    pub provider: &'static dyn Provider,
    base: String,
    auth: Option<(HeaderName, HeaderValue)>,
    /// For side calls (token counting, media endpoints, engine metrics): connections on tasks of their own.
    pub client: HttpClient,
    /// For the request path's calls: connections driven by the call's own task.
    pub calls: Arc<InlineClient>,
    /// The upstream URI per (endpoint path, model), made once: models come from the route table, so the
    /// set is bounded by the config; a `Uri` clone shares its bytes. Each with its `Host` header, which
    /// the HTTP client would otherwise format for every request.
    uris: std::sync::RwLock<TargetUris>,
}

/// Per endpoint path, per model: the upstream URI and its `Host` header.
type TargetUris = std::collections::HashMap<&'static str, std::collections::HashMap<String, (Uri, HeaderValue)>>;

/// The `Host` header for `uri`, as the HTTP client writes it: the host, and the port unless it is the
/// scheme's default.
fn host_header(uri: &Uri) -> Option<HeaderValue> {
    let host = uri.host()?;
    let default_port = match uri.scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    };
    match uri.port_u16() {
        Some(port) if Some(port) != default_port => HeaderValue::from_str(&format!("{host}:{port}")).ok(),
        _ => HeaderValue::from_str(host).ok(),
    }
}

impl Upstream {
    /// `cfg.kind` must name a registered provider (the crate's `validate` checks it).
    pub fn new(cfg: UpstreamConfig) -> Option<Upstream> {
        let provider = by_kind(&cfg.kind)?;
        let connect_timeout = Duration::from_millis(cfg.connect_timeout_ms);
        let client = http_client(connect_timeout);
        let calls = InlineClient::new(connect_timeout, IDLE_TIMEOUT, MAX_IDLE_PER_HOST);
        let key = cfg.api_key_env.as_ref().and_then(|var| match std::env::var(var) {
            Ok(v) if !v.is_empty() => Some(v),
            _ => {
                warn!(upstream = %cfg.name, env = %var, "API key variable is not set; calling this upstream without a key");
                None
            }
        });
        let auth = key.and_then(|k| {
            let (name, value) = provider.auth_header(&k);
            let mut v = HeaderValue::from_str(&value).ok()?;
            v.set_sensitive(true);
            Some((name, v))
        });
        let base = cfg.base_url.trim_end_matches('/').to_string();
        Some(Upstream { cfg, provider, base, auth, client, calls, uris: Default::default() })
    }

    pub fn wire(&self) -> Wire {
        self.provider.wire()
    }

    /// Whether `/v1/responses` is forwarded as it is (else it is translated to chat or Messages):
    /// `responses_api` in config, by default true for OpenAI and Azure OpenAI.
    pub fn serves_responses(&self) -> bool {
        self.cfg.responses_api.unwrap_or(matches!(self.provider.kind(), "openai" | "azure_openai"))
    }

    pub fn uri(&self, model: &str, path: &str) -> Result<Uri, GatewayError> {
        self.provider
            .url(&self.cfg, &self.base, model, path)
            .parse()
            .map_err(|_| GatewayError::UnknownModel(model.to_string()))
    }

    /// [`Upstream::uri`] for a route target's model and a fixed endpoint path, and its `Host` header,
    /// made once per pair.
    pub fn target_uri(&self, model: &str, path: &'static str) -> Result<(Uri, HeaderValue), GatewayError> {
        let known = self.uris.read().unwrap_or_else(|p| p.into_inner()).get(path).and_then(|m| m.get(model)).cloned();
        if let Some(known) = known {
            return Ok(known);
        }
        let uri = self.uri(model, path)?;
        let host = host_header(&uri).ok_or_else(|| GatewayError::UnknownModel(model.to_string()))?;
        let mut all = self.uris.write().unwrap_or_else(|p| p.into_inner());
        all.entry(path).or_default().insert(model.to_string(), (uri.clone(), host.clone()));
        Ok((uri, host))
    }

    /// The upstream path for an endpoint, or why this upstream cannot serve it.
    pub fn path(&self, endpoint: Endpoint, model: &str) -> Result<&'static str, GatewayError> {
        let media = |p: &'static str| match self.wire() {
            Wire::OpenAi => Ok(p),
            Wire::Anthropic => Err(GatewayError::Untranslatable {
                param: "model".into(),
                message: format!("`{model}` is served by an upstream that has no {} endpoint", endpoint.as_str()),
            }),
        };
        match (self.wire(), endpoint) {
            (_, Endpoint::Responses) if self.serves_responses() => Ok("/responses"),
            (Wire::OpenAi, Endpoint::Chat | Endpoint::Messages | Endpoint::Responses) => Ok("/chat/completions"),
            (Wire::OpenAi, Endpoint::Completions) => Ok("/completions"),
            (Wire::OpenAi, Endpoint::Embeddings) => Ok("/embeddings"),
            (Wire::Anthropic, Endpoint::Chat | Endpoint::Messages | Endpoint::Responses) => Ok("/messages"),
            (_, Endpoint::AudioTranscriptions) => media("/audio/transcriptions"),
            (_, Endpoint::AudioTranslations) => media("/audio/translations"),
            (_, Endpoint::AudioSpeech) => media("/audio/speech"),
            (_, Endpoint::Images) => media("/images/generations"),
            (_, Endpoint::Moderations) => media("/moderations"),
            (_, Endpoint::Completions | Endpoint::Embeddings | Endpoint::Models | Endpoint::Other) => {
                Err(GatewayError::Untranslatable {
                    param: "model".into(),
                    message: format!("`{model}` is served by an upstream that has no {} endpoint", endpoint.as_str()),
                })
            }
        }
    }

    /// Adds the upstream's credentials and the provider's own headers.
    pub fn headers(
        &self,
        mut builder: http::request::Builder,
        client: ClientApi,
        headers: &HeaderMap,
    ) -> http::request::Builder {
        if let Some((name, value)) = &self.auth {
            builder = builder.header(name, value);
        }
        self.provider.extra_headers(builder, &self.cfg, client, headers)
    }
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The request body for the upstream and how its response is turned back into the client's format.
pub struct Prepared {
    pub body: Bytes,
    pub kind: BodyKind,
    pub translation: Translation,
    /// Reads a billable endpoint's answer (Responses API, media) in place of the chat/Messages scan.
    pub reader: Option<Box<crate::billable::reader::BodyReader>>,
}

/// What [`prepare`] reads from the client's request.
pub struct PrepareInput<'a> {
    pub endpoint: Endpoint,
    pub client: ClientApi,
    pub bytes: &'a Bytes,
    pub stream: bool,
    pub client_wants_usage: bool,
    pub has_stream_options: bool,
}

/// The upstream request body: the client's bytes when formats match (with the usage request spliced
/// into OpenAI streams), a translation otherwise.
pub fn prepare(up: &Upstream, input: &PrepareInput<'_>) -> Result<Prepared, GatewayError> {
    if input.endpoint == Endpoint::Responses {
        return crate::billable::glue::prepare_responses(up, input);
    }
    let mut p = prepare_formats(up, input)?;
    p.reader = crate::billable::glue::media_reader(input.endpoint, input.bytes);
    Ok(p)
}

/// Chat, completions, embeddings, Messages and the media endpoints: same format or translated.
fn prepare_formats(up: &Upstream, input: &PrepareInput<'_>) -> Result<Prepared, GatewayError> {
    let PrepareInput { client, bytes, stream, client_wants_usage, has_stream_options, .. } = *input;
    let to_json = |v: serde_json::Value| {
        serde_json::to_vec(&v).map(Bytes::from).map_err(|e| GatewayError::InvalidBody(e.to_string()))
    };
    let parse =
        || serde_json::from_slice::<serde_json::Value>(bytes).map_err(|e| GatewayError::InvalidBody(e.to_string()));
    let json_kind = if stream { BodyKind::Sse { hide_usage: false } } else { BodyKind::Json };
    match (Wire::of_client(client), up.wire()) {
        (Wire::OpenAi, Wire::OpenAi) => {
            let hide_usage = stream && up.cfg.stream_include_usage && !client_wants_usage;
            let body = if hide_usage {
                with_include_usage(bytes, has_stream_options)
                    .ok_or_else(|| GatewayError::InvalidBody("expected a JSON object".into()))?
            } else {
                bytes.clone()
            };
            let kind = if stream { BodyKind::Sse { hide_usage } } else { BodyKind::Json };
            Ok(Prepared { body, kind, translation: Translation::None, reader: None })
        }
        (Wire::Anthropic, Wire::Anthropic) => {
            Ok(Prepared { body: bytes.clone(), kind: json_kind, translation: Translation::None, reader: None })
        }
        (Wire::OpenAi, Wire::Anthropic) => {
            let opts = request::ToAnthropic { default_max_tokens: up.cfg.default_max_tokens };
            let body = to_json(request::openai_to_anthropic(&parse()?, &opts)?)?;
            let translation = if stream {
                Translation::Stream(Box::new(StreamTranslator::anthropic_to_openai(client_wants_usage, unix_now())))
            } else {
                Translation::JsonAnthropicToOpenAi { created: unix_now() }
            };
            Ok(Prepared { body, kind: json_kind, translation, reader: None })
        }
        (Wire::Anthropic, Wire::OpenAi) => {
            let opts = request::ToOpenAi {
                include_usage: up.cfg.stream_include_usage,
                max_tokens_field: up.provider.max_tokens_field(),
            };
            let body = to_json(request::anthropic_to_openai(&parse()?, &opts)?)?;
            let translation = if stream {
                Translation::Stream(Box::new(StreamTranslator::openai_to_anthropic()))
            } else {
                Translation::JsonOpenAiToAnthropic
            };
            Ok(Prepared { body, kind: json_kind, translation, reader: None })
        }
    }
}

/// Puts `model` into a request body in place of the client's (a route target may serve the public
/// model under another name). The body is rewritten through `serde_json`.
pub fn with_model(body: &Bytes, model: &str) -> Result<Bytes, GatewayError> {
    let mut v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| GatewayError::InvalidBody(e.to_string()))?;
    if let Some(o) = v.as_object_mut() {
        o.insert("model".into(), serde_json::Value::String(model.to_string()));
    }
    serde_json::to_vec(&v).map(Bytes::from).map_err(|e| GatewayError::InvalidBody(e.to_string()))
}

/// Adds `stream_options.include_usage = true` to a chat request. When the client sent no
/// `stream_options` the field is spliced in after the opening brace, leaving the rest of the bytes as
/// they were; otherwise the body is rewritten through `serde_json`.
fn with_include_usage(body: &Bytes, has_stream_options: bool) -> Option<Bytes> {
    if !has_stream_options {
        let open = body.iter().position(|b| !b.is_ascii_whitespace())?;
        if body[open] != b'{' {
            return None;
        }
        const FIELD: &[u8] = br#""stream_options":{"include_usage":true},"#;
        let mut out = Vec::with_capacity(body.len() + FIELD.len());
        out.extend_from_slice(&body[..=open]);
        out.extend_from_slice(FIELD);
        out.extend_from_slice(&body[open + 1..]);
        return Some(Bytes::from(out));
    }
    let mut v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let opts = v.get_mut("stream_options")?;
    if !opts.is_object() {
        *opts = serde_json::json!({});
    }
    opts.as_object_mut()?.insert("include_usage".into(), serde_json::Value::Bool(true));
    serde_json::to_vec(&v).ok().map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_usage_is_spliced_without_rewriting_the_body() {
        let b = Bytes::from_static(br#"  {"model":"m","stream":true,"messages":[]}"#);
        let out = with_include_usage(&b, false).unwrap();
        assert_eq!(&out[..], br#"  {"stream_options":{"include_usage":true},"model":"m","stream":true,"messages":[]}"#);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);

        let b = Bytes::from_static(br#"{"model":"m","stream_options":{"include_usage":false}}"#);
        let v: serde_json::Value = serde_json::from_slice(&with_include_usage(&b, true).unwrap()).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert!(with_include_usage(&Bytes::from_static(b"[1]"), false).is_none());
    }

    #[test]
    fn every_provider_is_registered_once_and_classifies_failures() {
        let mut kinds: Vec<&str> = PROVIDERS.iter().map(|p| p.kind()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds, ["anthropic", "azure_openai", "openai", "openai_compatible"]);
        for p in PROVIDERS {
            assert!(p.retryable_status(StatusCode::TOO_MANY_REQUESTS));
            assert!(p.retryable_status(StatusCode::SERVICE_UNAVAILABLE));
            assert!(!p.retryable_status(StatusCode::BAD_REQUEST));
            assert!(!p.retryable_status(StatusCode::NOT_FOUND));
        }
    }

    /// The `Host` header sent upstream names the host, and the port only when it is not the scheme's
    /// default (RFC 9110 7.2), as HTTP clients write it.
    #[test]
    fn host_header_has_the_port_only_when_not_the_default() {
        for (uri, host) in [
            ("http://127.0.0.1:8080/v1/chat/completions", "127.0.0.1:8080"),
            ("https://api.openai.com/v1/chat/completions", "api.openai.com"),
            ("https://api.anthropic.com:443/v1/messages", "api.anthropic.com"),
            ("http://vllm.internal:80/v1/completions", "vllm.internal"),
            ("http://vllm.internal:443/v1/completions", "vllm.internal:443"),
            ("https://h.example:8443/x", "h.example:8443"),
            ("http://[::1]:9000/v1", "[::1]:9000"),
        ] {
            let uri: Uri = uri.parse().unwrap_or_else(|e| panic!("{uri}: {e}"));
            assert_eq!(host_header(&uri).as_ref().and_then(|h| h.to_str().ok()), Some(host), "{uri}");
        }
    }
}
