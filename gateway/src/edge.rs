//! Refusals at the HTTP edge of the LLM endpoints, answered in the client's error shape and metered
//! like any other rejected call: a method other than POST (405), headers over `max_header_bytes` (431),
//! and an unknown path under Anthropic's `/v1/messages/` (404 in Anthropic's shape).

use crate::error::{anthropic_error_response, GatewayError};
use crate::finish::CallGuard;
use crate::pipeline::parse::request_id;
use crate::respond::fail;
use crate::GatewayState;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use std::sync::Arc;
use tollgate_events::{CallEvent, ClientApi, Endpoint};

/// The LLM endpoint a path is, and the API its clients speak.
fn llm_endpoint(path: &str) -> Option<(Endpoint, ClientApi)> {
    if path == "/v1/messages/count_tokens" {
        return Some((Endpoint::Other, ClientApi::Anthropic));
    }
    crate::metered_endpoint(path)
}

/// Refuses `e` in the shape of the endpoint's API, with one event when the path is an LLM endpoint.
fn refuse(st: &GatewayState, req: &Request, e: GatewayError) -> Response {
    let Some((endpoint, client)) = llm_endpoint(req.uri().path()) else { return e.into_response() };
    let rid = request_id(req.headers());
    let mut guard = CallGuard::new(
        st.meter.clone(),
        CallEvent { endpoint, client_api: client, request_id: rid.clone(), ..Default::default() },
    );
    // Attribution when the key is good; the refusal stands either way.
    if let Ok(key) = st.pipeline.keys.authenticate(req.headers()) {
        key.attribute(&mut guard.event, req.headers());
    }
    fail(&mut guard, e, &rid)
}

/// Method fallback of the gateway's routes.
pub async fn method_not_allowed(State(st): State<Arc<GatewayState>>, req: Request) -> Response {
    let e = GatewayError::MethodNotAllowed(req.method().to_string());
    let mut resp = refuse(&st, &req, e);
    let allow = if req.uri().path() == "/v1/models" { "GET" } else { "POST" };
    resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

/// Headers over `gateway.max_header_bytes` (names, values and their separators) are refused before
/// anything else reads them: `Some(refusal)`. Every LLM endpoint's handler asks first (a direct call,
/// not a middleware layer: that boxed a future and cloned the route per request).
pub fn header_limit(st: &GatewayState, req: &Request) -> Option<Response> {
    let max = st.cfg.settings.max_header_bytes;
    let size: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    (size > max).then(|| refuse(st, req, GatewayError::HeadersTooLarge(max)))
}

/// `/v1/messages/*` paths other than `count_tokens`: Anthropic's SDK reads Anthropic's error shape.
pub async fn unknown_messages_path(req: Request) -> Response {
    let message = format!("no such endpoint: {} {}", req.method(), req.uri().path());
    anthropic_error_response(StatusCode::NOT_FOUND, &message, "not_found_error")
}
