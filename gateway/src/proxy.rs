//! Request handlers for the OpenAI-compatible endpoints: authenticate the virtual key, parse only what
//! routing and metering need, forward the original bytes upstream, and hand the response to
//! `MeteredBody`. Every handler creates its `CallGuard` first, so every exit path is metered.

use crate::body::{BodyKind, MeteredBody};
use crate::config::{UpstreamConfig, UpstreamKind};
use crate::error::{openai_error_response, GatewayError};
use crate::meter::CallGuard;
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
use tollgate_events::{CallEvent, ClientApi, Endpoint, Outcome};
use tracing::warn;

pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A configured upstream, ready to call.
pub struct Upstream {
    pub cfg: UpstreamConfig,
    base: String,
    auth: Option<(HeaderName, HeaderValue)>,
    client: HttpClient,
}

impl Upstream {
    pub fn new(cfg: UpstreamConfig) -> Upstream {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_millis(cfg.connect_timeout_ms)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(https);
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
            UpstreamKind::Openai | UpstreamKind::OpenaiCompatible => format!("{}{path}", self.base),
        };
        s.parse().map_err(|_| GatewayError::UnknownModel(model.to_string()))
    }
}

/// The few request fields the gateway needs; everything else is forwarded untouched.
#[derive(Deserialize)]
struct RequestMeta {
    model: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<serde_json::Value>,
}

pub async fn chat(State(st): State<Arc<GatewayState>>, req: Request) -> Response {
    forward(st, req, Endpoint::Chat, "/chat/completions").await
}

pub async fn completions(State(st): State<Arc<GatewayState>>, req: Request) -> Response {
    forward(st, req, Endpoint::Completions, "/completions").await
}

pub async fn embeddings(State(st): State<Arc<GatewayState>>, req: Request) -> Response {
    forward(st, req, Endpoint::Embeddings, "/embeddings").await
}

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

fn fail(guard: &mut CallGuard, e: GatewayError, request_id: &str) -> Response {
    let status = e.status();
    let (_, code) = e.type_and_code();
    guard.event.error_type = code.to_string();
    guard.finish(e.outcome(), status.as_u16());
    let mut resp = e.into_response();
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

async fn forward(st: Arc<GatewayState>, req: Request, endpoint: Endpoint, path: &'static str) -> Response {
    let (parts, body) = req.into_parts();
    let rid = request_id(&parts.headers);
    let mut guard = CallGuard::new(
        st.meter.clone(),
        CallEvent { endpoint, client_api: ClientApi::Openai, request_id: rid.clone(), ..Default::default() },
    );

    // Who is calling.
    let key = match st.keys.authenticate(&parts.headers) {
        Ok(k) => k,
        Err(e) => return fail(&mut guard, e, &rid),
    };
    key.attribute(&mut guard.event, &parts.headers);

    // What they asked for.
    let bytes = match axum::body::to_bytes(body, st.cfg.settings.max_request_bytes).await {
        Ok(b) => b,
        Err(_) => return fail(&mut guard, GatewayError::BodyTooLarge(st.cfg.settings.max_request_bytes), &rid),
    };
    guard.event.request_bytes = bytes.len() as u64;
    let meta: RequestMeta = match serde_json::from_slice(&bytes) {
        Ok(m) => m,
        Err(e) => return fail(&mut guard, GatewayError::InvalidBody(e.to_string()), &rid),
    };
    let Some(model) = meta.model.filter(|m| !m.is_empty()) else {
        return fail(&mut guard, GatewayError::InvalidBody("`model` is required".into()), &rid);
    };
    guard.event.requested_model = model.clone();
    guard.event.served_model = model.clone();
    guard.event.route = model.clone();
    guard.event.routing_strategy = "direct".into();
    let Some(up) = st.route(&model) else { return fail(&mut guard, GatewayError::UnknownModel(model), &rid) };
    if !key.may_use(&model) {
        return fail(&mut guard, GatewayError::ModelNotAllowed(model), &rid);
    }
    guard.event.provider = up.cfg.kind.provider().to_string();
    guard.event.upstream = up.cfg.name.clone();

    let stream = endpoint != Endpoint::Embeddings && meta.stream.unwrap_or(false);
    guard.event.stream = stream;
    let client_wants_usage =
        meta.stream_options.as_ref().and_then(|o| o.get("include_usage")).and_then(|v| v.as_bool()).unwrap_or(false);
    let hide_usage = stream && up.cfg.stream_include_usage && !client_wants_usage;
    let upstream_body = if hide_usage {
        match with_include_usage(&bytes, meta.stream_options.is_some()) {
            Some(b) => b,
            None => return fail(&mut guard, GatewayError::InvalidBody("expected a JSON object".into()), &rid),
        }
    } else {
        bytes.clone()
    };

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
    if let Some((name, value)) = &up.auth {
        builder = builder.header(name, value);
    }
    let Ok(up_req) = builder.body(Full::new(upstream_body)) else {
        return fail(&mut guard, GatewayError::InvalidBody("request could not be forwarded".into()), &rid);
    };
    guard.request_body = Some(bytes);
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
        return upstream_error(guard, up, status, up_parts.headers, up_body, &rid).await;
    }

    let kind = if stream { BodyKind::Sse { hide_usage } } else { BodyKind::Json };
    let content_type = up_parts
        .headers
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static(if stream { "text/event-stream" } else { "application/json" }));
    let idle = Duration::from_millis(up.cfg.idle_timeout_ms);
    let mut out = Response::builder().status(status).header(header::CONTENT_TYPE, content_type);
    if stream {
        out = out.header(header::CACHE_CONTROL, "no-cache");
    }
    if let Ok(v) = HeaderValue::from_str(&rid) {
        out = out.header("x-request-id", v);
    }
    guard.overhead += got_headers.elapsed();
    let body = Body::new(MeteredBody::new(up_body, guard, kind, idle));
    out.body(body).unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The upstream answered with an error status: pass its OpenAI-shaped error through (except credential
/// failures, which are the gateway's problem, not the client's) and record its type.
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
    let e = &err["error"];
    let etype = e["code"].as_str().or_else(|| e["type"].as_str()).unwrap_or("upstream_error");
    guard.event.error_type = etype.to_string();
    guard.finish(Outcome::UpstreamError, status.as_u16());
    let mut resp = if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        warn!(upstream = %up.cfg.name, %status, "upstream rejected the gateway's credentials");
        openai_error_response(
            StatusCode::BAD_GATEWAY,
            "the upstream provider rejected the gateway's credentials",
            "api_error",
            "upstream_auth_failed",
        )
    } else {
        let ct = headers.get(header::CONTENT_TYPE).cloned().unwrap_or(HeaderValue::from_static("application/json"));
        let mut r = (status, bytes).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, ct);
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
