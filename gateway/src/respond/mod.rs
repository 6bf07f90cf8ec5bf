//! The respond phase: the client's response, built from an upstream answer (streamed through
//! [`body::MeteredBody`], which meters it as it goes) or from a failure, always in the client's API
//! shape and with its `x-request-id`.

pub mod body;
pub mod upstream_body;

use crate::config::Wire;
use crate::error::{anthropic_error_response, openai_error_response, GatewayError};
use crate::finish::CallGuard;
use crate::translate::{response, Translation};
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use body::{BodyKind, MeteredBody};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use std::time::{Duration, Instant};
use tollgate_events::{ClientApi, Outcome};
use tracing::warn;
pub use upstream_body::UpstreamBody;

/// `x-request-id`, named once: a header name given as a string to a request or response builder is
/// parsed and copied on every call.
pub const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");
const X_TOLLGATE_CACHE: http::HeaderName = http::HeaderName::from_static("x-tollgate-cache");

pub fn with_request_id(mut resp: Response, rid: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(rid) {
        resp.headers_mut().insert(X_REQUEST_ID, v);
    }
    resp
}

/// Ends the call with a gateway error and answers it in the client's shape.
pub fn fail(guard: &mut CallGuard, e: GatewayError, rid: &str) -> Response {
    record_error(guard, &e);
    with_request_id(e.response_for(guard.event.client_api), rid)
}

/// Records a gateway error as the call's outcome (the response is built later, if at all).
pub fn record_error(guard: &mut CallGuard, e: &GatewayError) {
    let (_, code) = e.type_and_code();
    guard.event.error_type = code.into();
    guard.finish(e.outcome(), e.status().as_u16());
}

/// Ends an attempt the upstream answered with an error status. The event's status is the one the client
/// gets: 502 `upstream_auth_failed` when the upstream refused the gateway's credentials (see
/// [`upstream_error`]), the upstream's status otherwise.
pub fn finish_upstream_error(guard: &mut CallGuard, status: StatusCode) {
    let client_status = if is_credentials_error(status) {
        guard.event.error_type = "upstream_auth_failed".into();
        StatusCode::BAD_GATEWAY
    } else {
        status
    };
    guard.finish(Outcome::UpstreamError, client_status.as_u16());
}

fn is_credentials_error(status: StatusCode) -> bool {
    status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN
}

/// A successful upstream answer, streamed to the client through the metering body.
pub struct Answer {
    pub guard: CallGuard,
    pub parts: http::response::Parts,
    pub body: UpstreamBody,
    pub kind: BodyKind,
    pub translation: Translation,
    /// Reads a billable endpoint's answer in place of the chat/Messages scan.
    pub reader: Option<Box<crate::billable::reader::BodyReader>>,
    pub wire: Wire,
    pub stream: bool,
    pub idle: Duration,
    pub got_headers: Instant,
}

/// With `x-tollgate-cost-usd` for keys that asked for it, on non-stream answers (read whole first).
/// `max_line`: `gateway.max_sse_line_bytes`.
pub async fn answer(a: Answer, rid: &str, max_line: usize) -> Response {
    let Answer { mut guard, mut parts, body, kind, translation, reader, wire, stream, idle, got_headers } = a;
    // An upstream that answers a stream request with one JSON document (an error object with a 200, a
    // server that ignores `stream`) is read, metered and translated as one, and reaches the client whole.
    let json_answer = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().starts_with("application/json"));
    let (kind, translation) = if stream && json_answer {
        (BodyKind::Json, translation.whole(crate::providers::unix_now()))
    } else {
        (kind, translation)
    };
    let sse = kind != BodyKind::Json;
    let translating = !matches!(translation, Translation::None);
    let default_ct = HeaderValue::from_static(if sse { "text/event-stream" } else { "application/json" });
    let content_type =
        if translating { default_ct } else { parts.headers.get(header::CONTENT_TYPE).cloned().unwrap_or(default_ct) };
    // The upstream's header map, emptied, holds the client's headers: no second map to allocate.
    let mut headers = std::mem::take(&mut parts.headers);
    headers.clear();
    headers.insert(header::CONTENT_TYPE, content_type);
    if sse {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    if let Ok(v) = HeaderValue::from_str(rid) {
        headers.insert(X_REQUEST_ID, v);
    }
    let plan = guard.response_plan.clone();
    if let Some(h) = plan.as_ref().and_then(|p| p.cache_header()) {
        headers.insert(X_TOLLGATE_CACHE, HeaderValue::from_static(h));
    }
    let filter = plan.and_then(|p| p.filter(&guard.event, sse));
    guard.overhead += got_headers.elapsed();
    let cost_rx = (!stream && guard.wants_cost).then(|| {
        let (tx, rx) = tokio::sync::oneshot::channel();
        guard.cost_report = Some(tx);
        rx
    });
    let body =
        Body::new(MeteredBody::new(body, guard, kind, wire, translation, reader, idle, max_line).with_filter(filter));
    let mut resp = Response::new(body);
    *resp.status_mut() = parts.status;
    *resp.headers_mut() = headers;
    match cost_rx {
        Some(rx) => crate::cost_header::with_cost_header(resp, rx).await,
        None => resp,
    }
}

/// The upstream answered with an error status: its error is passed through in the client's shape
/// (except credential failures, which are the gateway's problem, not the client's).
pub fn upstream_error(
    client: ClientApi,
    upstream: &str,
    wire: Wire,
    status: StatusCode,
    headers: &HeaderMap,
    bytes: Bytes,
    rid: &str,
) -> Response {
    let resp = if is_credentials_error(status) {
        warn!(%upstream, %status, "upstream rejected the gateway's credentials");
        let message = "the upstream provider rejected the gateway's credentials";
        match client {
            ClientApi::Openai => {
                openai_error_response(StatusCode::BAD_GATEWAY, message, "api_error", "upstream_auth_failed")
            }
            ClientApi::Anthropic => anthropic_error_response(StatusCode::BAD_GATEWAY, message, "api_error"),
        }
    } else {
        let same_format = Wire::of_client(client) == wire;
        let mut r = if same_format {
            let ct = headers.get(header::CONTENT_TYPE).cloned().unwrap_or(HeaderValue::from_static("application/json"));
            let mut r = (status, bytes).into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, ct);
            r
        } else {
            let err: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
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
    with_request_id(resp, rid)
}
