//! HTTP handlers of the billable endpoints that do not walk the model-call pipeline: `GET` and
//! `DELETE /v1/responses/{id}` (sent to the upstream that created the response) and the 404 for a path
//! the gateway does not serve. Each is one call event, like every request that reaches the gateway.

use super::response_ids;
use crate::error::{openai_error_response, GatewayError};
use crate::finish::CallGuard;
use crate::pipeline::parse::request_id;
use crate::providers::Upstream;
use crate::respond;
use crate::GatewayState;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_events::{CallEvent, ClientApi, Endpoint, Outcome};

/// Largest stored response passed back.
const MAX_STORED_BODY: usize = 64 * 1024 * 1024;

fn guard(st: &GatewayState, endpoint: Endpoint, rid: &str) -> CallGuard {
    CallGuard::new(
        st.meter.clone(),
        CallEvent { endpoint, client_api: ClientApi::Openai, request_id: rid.to_string(), ..Default::default() },
    )
}

/// The upstream named `name` among the configured routes' targets.
fn upstream_named(st: &GatewayState, name: &str) -> Option<Arc<Upstream>> {
    st.pipeline
        .routes
        .routes
        .iter()
        .flat_map(|r| r.targets.iter())
        .find(|t| t.upstream.cfg.name == name)
        .map(|t| t.upstream.clone())
}

/// `GET /v1/responses/{id}`.
pub async fn get_response(State(st): State<Arc<GatewayState>>, Path(id): Path<String>, req: Request) -> Response {
    stored_response(&st, Method::GET, &id, req).await
}

/// `DELETE /v1/responses/{id}`.
pub async fn delete_response(State(st): State<Arc<GatewayState>>, Path(id): Path<String>, req: Request) -> Response {
    stored_response(&st, Method::DELETE, &id, req).await
}

async fn stored_response(st: &GatewayState, method: Method, id: &str, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let rid = request_id(&parts.headers);
    let mut g = guard(st, Endpoint::Responses, &rid);
    let key = match st.pipeline.keys.authenticate(&parts.headers) {
        Ok(k) => k,
        Err(e) => return respond::fail(&mut g, e, &rid),
    };
    key.attribute(&mut g.event, &parts.headers);
    let Some(up) = response_ids::global().upstream_of(id).and_then(|name| upstream_named(st, &name)) else {
        return respond::fail(&mut g, GatewayError::UnknownResponse(id.to_string()), &rid);
    };
    g.event.provider = up.provider.kind().into();
    g.event.upstream = up.cfg.name.as_str().into();
    let path = match parts.uri.query() {
        Some(q) => format!("/responses/{id}?{q}"),
        None => format!("/responses/{id}"),
    };
    let uri = match up.uri("", &path) {
        Ok(u) => u,
        Err(e) => return respond::fail(&mut g, e, &rid),
    };
    let builder = http::Request::builder().method(method.clone()).uri(uri).header(crate::respond::X_REQUEST_ID, &rid);
    let builder = up.headers(builder, ClientApi::Openai, &parts.headers);
    let Ok(up_req) = builder.body(Full::new(Bytes::new())) else {
        return respond::fail(&mut g, GatewayError::InvalidBody("request could not be forwarded".into()), &rid);
    };
    g.t_sent = Some(Instant::now());
    let timeout = Duration::from_millis(up.cfg.request_timeout_ms);
    let resp = match tokio::time::timeout(timeout, up.client.request(up_req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => return respond::fail(&mut g, GatewayError::UpstreamUnreachable, &rid),
        Err(_) => return respond::fail(&mut g, GatewayError::UpstreamTimeout, &rid),
    };
    let (up_parts, body) = resp.into_parts();
    let idle = Duration::from_millis(up.cfg.idle_timeout_ms);
    let Ok(Ok(collected)) =
        tokio::time::timeout(idle, http_body_util::Limited::new(body, MAX_STORED_BODY).collect()).await
    else {
        return respond::fail(&mut g, GatewayError::UpstreamUnreachable, &rid);
    };
    let bytes = collected.to_bytes();
    g.event.response_bytes = bytes.len() as u64;
    let status = up_parts.status;
    if status.is_success() {
        g.mark_content();
        g.finish(Outcome::Ok, status.as_u16());
        if method == Method::DELETE {
            response_ids::global().forget(id);
        }
    } else {
        g.event.error_type = "upstream_error".into();
        g.finish(Outcome::UpstreamError, status.as_u16());
    }
    let mut out = (status, bytes).into_response();
    let ct =
        up_parts.headers.get(header::CONTENT_TYPE).cloned().unwrap_or(HeaderValue::from_static("application/json"));
    out.headers_mut().insert(header::CONTENT_TYPE, ct);
    respond::with_request_id(out, &rid)
}

/// Any path the gateway does not serve: a 404 in OpenAI's shape and one event, never a pass-through.
pub async fn unknown_endpoint(State(st): State<Arc<GatewayState>>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let rid = request_id(&parts.headers);
    let message = format!("Invalid URL ({} {}): tollgate does not serve this endpoint", parts.method, parts.uri.path());
    let not_found = || openai_error_response(StatusCode::NOT_FOUND, &message, "invalid_request_error", "unknown_url");
    // Only API paths are calls; a browser's `/favicon.ico` and the like are not metered.
    if !parts.uri.path().starts_with("/v1/") {
        return respond::with_request_id(not_found(), &rid);
    }
    let mut g = guard(&st, Endpoint::Other, &rid);
    if let Ok(key) = st.pipeline.keys.authenticate(&parts.headers) {
        key.attribute(&mut g.event, &parts.headers);
    }
    g.event.error_type = "unknown_url".into();
    g.finish(Outcome::InvalidRequest, StatusCode::NOT_FOUND.as_u16());
    respond::with_request_id(not_found(), &rid)
}
