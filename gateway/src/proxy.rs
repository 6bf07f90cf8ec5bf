//! Request handlers for the LLM endpoints, OpenAI's (`/v1/chat/completions`, …) and Anthropic's
//! (`/v1/messages`): authenticate the virtual key, parse only what routing and metering need, and hand
//! the response to `MeteredBody`. When the client speaks its upstream's format the original bytes are
//! forwarded; otherwise the request is translated here and the response in `MeteredBody`. Every
//! handler creates its `CallGuard` first, so every exit path is metered.

use crate::body::{BodyKind, MeteredBody};
use crate::config::{UpstreamConfig, UpstreamKind, Wire};
use crate::error::{anthropic_error_response, openai_error_response, GatewayError};
use crate::meter::CallGuard;
use crate::translate::{request, response, StreamTranslator, Translation};
use crate::GatewayState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_events::{CallEvent, ClientApi, Endpoint, Outcome, TokenEstimator};
use tracing::warn;

pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The pooled HTTP/1 client (http or https, webpki roots, TCP_NODELAY) used for upstreams and for shipping
/// events to a collector.
pub fn http_client(connect_timeout: Duration) -> HttpClient {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .build(https)
}

/// A configured upstream, ready to call.
pub struct Upstream {
    pub cfg: UpstreamConfig,
    base: String,
    auth: Option<(HeaderName, HeaderValue)>,
    client: HttpClient,
}

impl Upstream {
    pub fn new(cfg: UpstreamConfig) -> Upstream {
        let client = http_client(Duration::from_millis(cfg.connect_timeout_ms));
        let key = cfg.api_key_env.as_ref().and_then(|var| match std::env::var(var) {
            Ok(v) if !v.is_empty() => Some(v),
            _ => {
                warn!(upstream = %cfg.name, env = %var, "API key variable is not set; calling this upstream without a key");
                None
            }
        });
        let auth = key.and_then(|k| {
            let (name, value) = match cfg.kind {
                UpstreamKind::AzureOpenai => (HeaderName::from_static("api-key"), k),
                UpstreamKind::Anthropic => (HeaderName::from_static("x-api-key"), k),
                UpstreamKind::Openai | UpstreamKind::OpenaiCompatible => (header::AUTHORIZATION, format!("Bearer {k}")),
            };
            let mut v = HeaderValue::from_str(&value).ok()?;
            v.set_sensitive(true);
            Some((name, v))
        });
        let base = cfg.base_url.trim_end_matches('/').to_string();
        Upstream { cfg, base, auth, client }
    }

    fn uri(&self, model: &str, path: &str) -> Result<Uri, GatewayError> {
        let s = match self.cfg.kind {
            UpstreamKind::AzureOpenai => {
                let dep = self.cfg.deployments.get(model).map(String::as_str).unwrap_or(model);
                format!("{}/openai/deployments/{dep}{path}?api-version={}", self.base, self.cfg.api_version)
            }
            UpstreamKind::Openai | UpstreamKind::OpenaiCompatible | UpstreamKind::Anthropic => {
                format!("{}{path}", self.base)
            }
        };
        s.parse().map_err(|_| GatewayError::UnknownModel(model.to_string()))
    }
}

/// The few request fields the gateway needs; everything else is forwarded untouched (or translated).
#[derive(Deserialize)]
struct RequestMeta {
    model: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<serde_json::Value>,
    /// Output bound for budget and rate-limit estimates (kept as JSON: a bad value is the upstream's
    /// to refuse, as before).
    #[serde(default)]
    max_tokens: Option<serde_json::Value>,
    #[serde(default)]
    max_completion_tokens: Option<serde_json::Value>,
}

pub async fn chat(State(st): State<Arc<GatewayState>>, req: Request) -> Response {
    forward(st, req, Endpoint::Chat, ClientApi::Openai).await
}

pub async fn completions(State(st): State<Arc<GatewayState>>, req: Request) -> Response {
    forward(st, req, Endpoint::Completions, ClientApi::Openai).await
}

pub async fn embeddings(State(st): State<Arc<GatewayState>>, req: Request) -> Response {
    forward(st, req, Endpoint::Embeddings, ClientApi::Openai).await
}

/// `POST /v1/messages`: Anthropic's Messages API.
pub async fn messages(State(st): State<Arc<GatewayState>>, req: Request) -> Response {
    forward(st, req, Endpoint::Messages, ClientApi::Anthropic).await
}

pub(crate) fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

pub(crate) fn fail(guard: &mut CallGuard, e: GatewayError, request_id: &str) -> Response {
    let status = e.status();
    let (_, code) = e.type_and_code();
    guard.event.error_type = code.to_string();
    guard.finish(e.outcome(), status.as_u16());
    let mut resp = e.response_for(guard.event.client_api);
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn client_wire(client: ClientApi) -> Wire {
    match client {
        ClientApi::Openai => Wire::OpenAi,
        ClientApi::Anthropic => Wire::Anthropic,
    }
}

/// The upstream path for an endpoint, or why this upstream cannot serve it.
fn upstream_path(up: &Upstream, endpoint: Endpoint, model: &str) -> Result<&'static str, GatewayError> {
    match (up.cfg.kind.wire(), endpoint) {
        (Wire::OpenAi, Endpoint::Chat | Endpoint::Messages) => Ok("/chat/completions"),
        (Wire::OpenAi, Endpoint::Completions) => Ok("/completions"),
        (Wire::OpenAi, Endpoint::Embeddings) => Ok("/embeddings"),
        (Wire::Anthropic, Endpoint::Chat | Endpoint::Messages) => Ok("/messages"),
        (_, Endpoint::Completions | Endpoint::Embeddings | Endpoint::Models | Endpoint::Other) => {
            Err(GatewayError::Untranslatable {
                param: "model".into(),
                message: format!("`{model}` is served by an upstream that has no {} endpoint", endpoint.as_str()),
            })
        }
    }
}

/// Adds the upstream's credentials and, for Anthropic, `anthropic-version` (the client's own when an
/// Anthropic client sent one) and any `anthropic-beta` the client asked for.
fn upstream_headers(
    mut builder: http::request::Builder,
    up: &Upstream,
    client: ClientApi,
    headers: &HeaderMap,
) -> http::request::Builder {
    if let Some((name, value)) = &up.auth {
        builder = builder.header(name, value);
    }
    if up.cfg.kind == UpstreamKind::Anthropic {
        let from_client = |name: &str| headers.get(name).filter(|_| client == ClientApi::Anthropic);
        builder = match from_client("anthropic-version") {
            Some(v) => builder.header("anthropic-version", v),
            None => builder.header("anthropic-version", up.cfg.anthropic_version.as_str()),
        };
        if let Some(v) = from_client("anthropic-beta") {
            builder = builder.header("anthropic-beta", v);
        }
    }
    builder
}

/// The request body for the upstream and how its response is turned back into the client's format.
struct Prepared {
    body: Bytes,
    kind: BodyKind,
    translation: Translation,
}

fn prepare(
    up: &Upstream,
    client: ClientApi,
    bytes: &Bytes,
    meta: &RequestMeta,
    stream: bool,
) -> Result<Prepared, GatewayError> {
    let client_wants_usage =
        meta.stream_options.as_ref().and_then(|o| o.get("include_usage")).and_then(|v| v.as_bool()).unwrap_or(false);
    let to_json = |v: serde_json::Value| {
        serde_json::to_vec(&v).map(Bytes::from).map_err(|e| GatewayError::InvalidBody(e.to_string()))
    };
    let parse =
        || serde_json::from_slice::<serde_json::Value>(bytes).map_err(|e| GatewayError::InvalidBody(e.to_string()));
    let json_kind = if stream { BodyKind::Sse { hide_usage: false } } else { BodyKind::Json };
    match (client_wire(client), up.cfg.kind.wire()) {
        // Same format: forward the client's bytes (with the usage request spliced into OpenAI streams).
        (Wire::OpenAi, Wire::OpenAi) => {
            let hide_usage = stream && up.cfg.stream_include_usage && !client_wants_usage;
            let body = if hide_usage {
                with_include_usage(bytes, meta.stream_options.is_some())
                    .ok_or_else(|| GatewayError::InvalidBody("expected a JSON object".into()))?
            } else {
                bytes.clone()
            };
            let kind = if stream { BodyKind::Sse { hide_usage } } else { BodyKind::Json };
            Ok(Prepared { body, kind, translation: Translation::None })
        }
        (Wire::Anthropic, Wire::Anthropic) => {
            Ok(Prepared { body: bytes.clone(), kind: json_kind, translation: Translation::None })
        }
        (Wire::OpenAi, Wire::Anthropic) => {
            let opts = request::ToAnthropic { default_max_tokens: up.cfg.default_max_tokens };
            let body = to_json(request::openai_to_anthropic(&parse()?, &opts)?)?;
            let translation = if stream {
                Translation::Stream(Box::new(StreamTranslator::anthropic_to_openai(client_wants_usage, unix_now())))
            } else {
                Translation::JsonAnthropicToOpenAi { created: unix_now() }
            };
            Ok(Prepared { body, kind: json_kind, translation })
        }
        (Wire::Anthropic, Wire::OpenAi) => {
            let opts = request::ToOpenAi {
                include_usage: up.cfg.stream_include_usage,
                max_tokens_field: if up.cfg.kind == UpstreamKind::Openai {
                    "max_completion_tokens"
                } else {
                    "max_tokens"
                },
            };
            let body = to_json(request::anthropic_to_openai(&parse()?, &opts)?)?;
            let translation = if stream {
                Translation::Stream(Box::new(StreamTranslator::openai_to_anthropic()))
            } else {
                Translation::JsonOpenAiToAnthropic
            };
            Ok(Prepared { body, kind: json_kind, translation })
        }
    }
}

/// Authenticates, reads and routes a request; the guard is finished with the failure otherwise.
async fn admit(
    st: &GatewayState,
    guard: &mut CallGuard,
    parts: &http::request::Parts,
    body: Body,
    check_budgets: bool,
) -> Result<(Bytes, RequestMeta, String, Arc<Upstream>), GatewayError> {
    let key = st.keys.authenticate(&parts.headers)?;
    key.attribute(&mut guard.event, &parts.headers);
    let bytes = read_body(st, body).await?;
    guard.event.request_bytes = bytes.len() as u64;
    let meta: RequestMeta = serde_json::from_slice(&bytes).map_err(|e| GatewayError::InvalidBody(e.to_string()))?;
    let Some(model) = meta.model.clone().filter(|m| !m.is_empty()) else {
        return Err(GatewayError::InvalidBody("`model` is required".into()));
    };
    guard.event.requested_model = model.clone();
    guard.event.served_model = model.clone();
    guard.event.route = model.clone();
    guard.event.routing_strategy = "direct".into();
    let up = st.route(&model).ok_or_else(|| GatewayError::UnknownModel(model.clone()))?;
    if !key.may_use(&model) {
        return Err(GatewayError::ModelNotAllowed(model));
    }
    let (bytes, model, up) =
        if check_budgets { admit_budgets(st, guard, bytes, &meta, model, up)? } else { (bytes, model, up) };
    guard.event.provider = up.cfg.kind.provider().to_string();
    guard.event.upstream = up.cfg.name.clone();
    Ok((bytes, meta, model, up))
}

/// Reads the client's body within `max_request_bytes` and `body_read_timeout_ms`, telling apart a body
/// too large (413), a client that hung up while sending it (499, metered `client_disconnect`), a body
/// whose framing is broken (400) and a client too slow to send it (408).
async fn read_body(st: &GatewayState, body: Body) -> Result<Bytes, GatewayError> {
    let limit = st.cfg.settings.max_request_bytes;
    let ms = st.cfg.settings.body_read_timeout_ms;
    let read = http_body_util::Limited::new(body, limit).collect();
    match tokio::time::timeout(Duration::from_millis(ms), read).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) => Err(body_error(&*e, limit)),
        Err(_) => {
            st.meter.metrics().client_read_timeouts.inc();
            Err(GatewayError::BodyReadTimeout(ms))
        }
    }
}

/// What a failed body read means, from the error's chain (axum, hyper, then the I/O error).
fn body_error(e: &(dyn std::error::Error + 'static), limit: usize) -> GatewayError {
    let mut cause = Some(e);
    while let Some(err) = cause {
        if err.is::<http_body_util::LengthLimitError>() {
            return GatewayError::BodyTooLarge(limit);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            return match io.kind() {
                K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => {
                    GatewayError::ClientDisconnected
                }
                _ => GatewayError::InvalidBody(format!("malformed request body: {io}")),
            };
        }
        if err.downcast_ref::<hyper::Error>().is_some_and(|h| h.is_incomplete_message() || h.is_canceled()) {
            return GatewayError::ClientDisconnected;
        }
        cause = err.source();
    }
    GatewayError::InvalidBody("malformed request body".into())
}

/// Charges the call's estimate to its rate limits and budgets (the reservation rides on the guard and
/// is settled by metering), or refuses it; a `downgrade` budget may reroute it to a cheaper model,
/// rewriting the request's `model` and recording the change in the event.
fn admit_budgets(
    st: &GatewayState,
    guard: &mut CallGuard,
    bytes: Bytes,
    meta: &RequestMeta,
    model: String,
    up: Arc<Upstream>,
) -> Result<(Bytes, String, Arc<Upstream>), GatewayError> {
    let input = (bytes.len() as u64).div_ceil(4);
    let output = if guard.event.endpoint == Endpoint::Embeddings {
        0
    } else {
        [&meta.max_tokens, &meta.max_completion_tokens]
            .into_iter()
            .find_map(|v| v.as_ref().and_then(|v| v.as_u64()))
            .unwrap_or_else(|| st.budgets.default_output_tokens())
    };
    let admitted = st.budgets.admit(&guard.event, &model, input, output)?;
    guard.admission = Some(admitted.admission);
    let Some((cheaper, budget)) = admitted.downgrade else { return Ok((bytes, model, up)) };
    let up = st.route(&cheaper).ok_or_else(|| GatewayError::UnknownModel(cheaper.clone()))?;
    let mut v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| GatewayError::InvalidBody(e.to_string()))?;
    if let Some(o) = v.as_object_mut() {
        o.insert("model".into(), serde_json::Value::String(cheaper.clone()));
    }
    let bytes = serde_json::to_vec(&v).map(Bytes::from).map_err(|e| GatewayError::InvalidBody(e.to_string()))?;
    tracing::debug!(%budget, from = %model, to = %cheaper, "budget downgrade");
    guard.event.served_model = cheaper.clone();
    guard.event.fallback_from = model;
    guard.event.routing_strategy = "budget_downgrade".into();
    Ok((bytes, cheaper, up))
}

async fn forward(st: Arc<GatewayState>, req: Request, endpoint: Endpoint, client: ClientApi) -> Response {
    let (parts, body) = req.into_parts();
    let rid = request_id(&parts.headers);
    let mut guard = CallGuard::new(
        st.meter.clone(),
        CallEvent { endpoint, client_api: client, request_id: rid.clone(), ..Default::default() },
    );
    let (bytes, meta, model, up) = match admit(&st, &mut guard, &parts, body, true).await {
        Ok(x) => x,
        Err(e) => return fail(&mut guard, e, &rid),
    };
    let stream = endpoint != Endpoint::Embeddings && meta.stream.unwrap_or(false);
    guard.event.stream = stream;
    let path = match upstream_path(&up, endpoint, &model) {
        Ok(p) => p,
        Err(e) => return fail(&mut guard, e, &rid),
    };
    let Prepared { body: upstream_body, kind, translation } = match prepare(&up, client, &bytes, &meta, stream) {
        Ok(p) => p,
        Err(e) => return fail(&mut guard, e, &rid),
    };
    let translating = !matches!(translation, Translation::None);

    // Forward.
    let uri = match up.uri(&model, path) {
        Ok(u) => u,
        Err(e) => return fail(&mut guard, e, &rid),
    };
    let mut builder = http::Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-request-id", &rid);
    if stream {
        builder = builder.header(header::ACCEPT, "text/event-stream");
    }
    builder = upstream_headers(builder, &up, client, &parts.headers);
    // Tokens are estimated, when the provider reports none, from what was sent upstream.
    guard.request_body = Some(upstream_body.clone());
    let Ok(up_req) = builder.body(Full::new(upstream_body)) else {
        return fail(&mut guard, GatewayError::InvalidBody("request could not be forwarded".into()), &rid);
    };
    let sent = Instant::now();
    guard.t_sent = Some(sent);
    guard.overhead = sent - guard.started();
    let timeout = Duration::from_millis(up.cfg.request_timeout_ms);
    let resp = match tokio::time::timeout(timeout, up.client.request(up_req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(error)) => {
            warn!(upstream = %up.cfg.name, %error, "upstream request failed");
            return fail(&mut guard, GatewayError::UpstreamUnreachable, &rid);
        }
        Err(_) => return fail(&mut guard, GatewayError::UpstreamTimeout, &rid),
    };
    let got_headers = Instant::now();
    let (up_parts, up_body) = resp.into_parts();
    let status = up_parts.status;
    guard.event.status_code = status.as_u16();

    if !status.is_success() {
        return upstream_error(guard, &up, status, up_parts.headers, up_body, &rid).await;
    }

    // An upstream that answers a stream request with one JSON document (an error object with a 200, a
    // server that ignores `stream`) is read, metered and translated as one, and reaches the client whole.
    let json_answer = up_parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().starts_with("application/json"));
    let (kind, translation) =
        if stream && json_answer { (BodyKind::Json, translation.whole(unix_now())) } else { (kind, translation) };
    let sse = kind != BodyKind::Json;
    let default_ct = HeaderValue::from_static(if sse { "text/event-stream" } else { "application/json" });
    let content_type = if translating {
        default_ct
    } else {
        up_parts.headers.get(header::CONTENT_TYPE).cloned().unwrap_or(default_ct)
    };
    let idle = Duration::from_millis(up.cfg.idle_timeout_ms);
    let mut out = Response::builder().status(status).header(header::CONTENT_TYPE, content_type);
    if sse {
        out = out.header(header::CACHE_CONTROL, "no-cache");
    }
    if let Ok(v) = HeaderValue::from_str(&rid) {
        out = out.header("x-request-id", v);
    }
    guard.overhead += got_headers.elapsed();
    let wire = up.cfg.kind.wire();
    let max_line = st.cfg.settings.max_sse_line_bytes;
    let body = Body::new(MeteredBody::new(up_body, guard, kind, wire, translation, idle, max_line));
    out.body(body).unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The upstream answered with an error status: pass its error through in the client's shape (except
/// credential failures, which are the gateway's problem, not the client's) and record its type.
async fn upstream_error(
    mut guard: CallGuard,
    up: &Upstream,
    status: StatusCode,
    headers: HeaderMap,
    body: hyper::body::Incoming,
    rid: &str,
) -> Response {
    let idle = Duration::from_millis(up.cfg.idle_timeout_ms);
    let bytes = match tokio::time::timeout(idle, http_body_util::Limited::new(body, 1 << 20).collect()).await {
        Ok(Ok(c)) => c.to_bytes(),
        _ => Bytes::new(),
    };
    guard.event.response_bytes = bytes.len() as u64;
    let err: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let (_, etype) = response::upstream_error_parts(&err);
    guard.event.error_type = etype.unwrap_or("upstream_error").to_string();
    let credentials = status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN;
    // The event's status is the one the client got: 502 when the upstream refused our credentials.
    let client_status = if credentials { StatusCode::BAD_GATEWAY } else { status };
    if credentials {
        guard.event.error_type = "upstream_auth_failed".into();
    }
    guard.finish(Outcome::UpstreamError, client_status.as_u16());
    let client = guard.event.client_api;
    let mut resp = if credentials {
        warn!(upstream = %up.cfg.name, %status, "upstream rejected the gateway's credentials");
        let message = "the upstream provider rejected the gateway's credentials";
        match client {
            ClientApi::Openai => {
                openai_error_response(StatusCode::BAD_GATEWAY, message, "api_error", "upstream_auth_failed")
            }
            ClientApi::Anthropic => anthropic_error_response(StatusCode::BAD_GATEWAY, message, "api_error"),
        }
    } else {
        let same_format = client_wire(client) == up.cfg.kind.wire();
        let mut r = if same_format {
            let ct = headers.get(header::CONTENT_TYPE).cloned().unwrap_or(HeaderValue::from_static("application/json"));
            let mut r = (status, bytes).into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, ct);
            r
        } else {
            let body = match client {
                ClientApi::Openai => response::error_to_openai(status, &err),
                ClientApi::Anthropic => response::error_to_anthropic(status, &err),
            };
            let mut r = (status, body).into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        };
        if let Some(ra) = headers.get(header::RETRY_AFTER) {
            r.headers_mut().insert(header::RETRY_AFTER, ra.clone());
        }
        r
    };
    if let Ok(v) = HeaderValue::from_str(rid) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// `POST /v1/messages/count_tokens`: forwarded to an Anthropic upstream; for a model on an OpenAI-format
/// upstream, counted here with the model's tokenizer (these counts cost nothing, so the call event
/// carries no tokens and no cost).
pub async fn count_tokens(State(st): State<Arc<GatewayState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let rid = request_id(&parts.headers);
    let mut guard = CallGuard::new(
        st.meter.clone(),
        CallEvent {
            endpoint: Endpoint::Other,
            client_api: ClientApi::Anthropic,
            request_id: rid.clone(),
            ..Default::default()
        },
    );
    let (bytes, _, model, up) = match admit(&st, &mut guard, &parts, body, false).await {
        Ok(x) => x,
        Err(e) => return fail(&mut guard, e, &rid),
    };
    let mut resp = if up.cfg.kind.wire() == Wire::Anthropic {
        let uri = match up.uri(&model, "/messages/count_tokens") {
            Ok(u) => u,
            Err(e) => return fail(&mut guard, e, &rid),
        };
        let builder = http::Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-request-id", &rid);
        let builder = upstream_headers(builder, &up, ClientApi::Anthropic, &parts.headers);
        let Ok(up_req) = builder.body(Full::new(bytes)) else {
            return fail(&mut guard, GatewayError::InvalidBody("request could not be forwarded".into()), &rid);
        };
        guard.t_sent = Some(Instant::now());
        let timeout = Duration::from_millis(up.cfg.request_timeout_ms);
        let resp = match tokio::time::timeout(timeout, up.client.request(up_req)).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => return fail(&mut guard, GatewayError::UpstreamUnreachable, &rid),
            Err(_) => return fail(&mut guard, GatewayError::UpstreamTimeout, &rid),
        };
        let (up_parts, up_body) = resp.into_parts();
        guard.event.status_code = up_parts.status.as_u16();
        if !up_parts.status.is_success() {
            return upstream_error(guard, &up, up_parts.status, up_parts.headers, up_body, &rid).await;
        }
        let idle = Duration::from_millis(up.cfg.idle_timeout_ms);
        let Ok(Ok(collected)) =
            tokio::time::timeout(idle, http_body_util::Limited::new(up_body, 1 << 20).collect()).await
        else {
            return fail(&mut guard, GatewayError::UpstreamUnreachable, &rid);
        };
        let bytes = collected.to_bytes();
        guard.event.response_bytes = bytes.len() as u64;
        guard.mark_content();
        let mut r = (StatusCode::OK, bytes).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    } else {
        let body: serde_json::Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => return fail(&mut guard, GatewayError::InvalidBody(e.to_string()), &rid),
        };
        if !body.get("messages").is_some_and(serde_json::Value::is_array) {
            return fail(&mut guard, GatewayError::InvalidBody("`messages` must be a list".into()), &rid);
        }
        // Counting a 32 MB prompt is CPU work: off the async workers, and a panic in the tokenizer is an
        // error answer here, not a dropped connection.
        let counter = st.clone();
        let counted = model.clone();
        let n =
            match tokio::task::spawn_blocking(move || counter.meter.estimator().count_request(&counted, &body)).await {
                Ok(n) => n,
                Err(error) => {
                    warn!(%error, %model, "token count failed");
                    return fail(&mut guard, GatewayError::Internal, &rid);
                }
            };
        let exact = TokenEstimator::is_exact(&model);
        let out = serde_json::json!({"input_tokens": n}).to_string();
        guard.event.response_bytes = out.len() as u64;
        guard.mark_content();
        let mut r = (StatusCode::OK, out).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let how = if exact { "tokenizer" } else { "approximation" };
        r.headers_mut().insert("x-tollgate-token-count", HeaderValue::from_static(how));
        r
    };
    guard.finish(Outcome::Ok, StatusCode::OK.as_u16());
    if let Ok(v) = HeaderValue::from_str(&rid) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
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

/// `GET /v1/models`: the models this key may call.
pub async fn models(State(st): State<Arc<GatewayState>>, headers: HeaderMap) -> Response {
    let key = match st.keys.authenticate(&headers) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let mut data = Vec::new();
    for (i, u) in st.upstreams.iter().enumerate() {
        for m in &u.cfg.models {
            if key.may_use(m) && st.cfg.model_routes.get(m) == Some(&i) {
                data.push(serde_json::json!({"id": m, "object": "model", "created": 0, "owned_by": u.cfg.name}));
            }
        }
    }
    let body = serde_json::json!({"object": "list", "data": data});
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
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
}
