//! `POST /v1/messages/count_tokens`: forwarded to an Anthropic upstream; for a model on an OpenAI-format
//! upstream, counted here with the model's tokenizer (these counts cost nothing, so the call event
//! carries no tokens and no cost). Goes to the route's first target, without retries.

use crate::call::CallCtx;
use crate::config::Wire;
use crate::error::GatewayError;
use crate::respond;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use std::time::{Duration, Instant};
use tollgate_events::{ClientApi, Outcome, TokenEstimator};
use tracing::warn;

pub async fn count_tokens(ctx: CallCtx) -> Response {
    let CallCtx { mut guard, route, body: bytes, headers, request_id: rid, model, .. } = ctx;
    let Some(target) = route.as_ref().and_then(|r| r.targets.first()).cloned() else {
        return respond::fail(&mut guard, GatewayError::UnknownModel(model), &rid);
    };
    let up = &target.upstream;
    guard.event.provider = up.provider.kind().into();
    guard.event.upstream = up.cfg.name.as_str().into();
    let resp = if up.wire() == Wire::Anthropic {
        let (uri, host) = match up.target_uri(&target.model, "/messages/count_tokens") {
            Ok(u) => u,
            Err(e) => return respond::fail(&mut guard, e, &rid),
        };
        let builder = http::Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::HOST, host)
            .header(header::CONTENT_TYPE, "application/json")
            .header(crate::respond::X_REQUEST_ID, &rid);
        let builder = up.headers(builder, ClientApi::Anthropic, &headers);
        let Ok(up_req) = builder.body(Full::new(bytes)) else {
            let e = GatewayError::InvalidBody("request could not be forwarded".into());
            return respond::fail(&mut guard, e, &rid);
        };
        guard.t_sent = Some(Instant::now());
        let timeout = Duration::from_millis(up.cfg.request_timeout_ms);
        let resp = match tokio::time::timeout(timeout, up.client.request(up_req)).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => return respond::fail(&mut guard, GatewayError::UpstreamUnreachable, &rid),
            Err(_) => return respond::fail(&mut guard, GatewayError::UpstreamTimeout, &rid),
        };
        let (up_parts, up_body) = resp.into_parts();
        guard.event.status_code = up_parts.status.as_u16();
        let idle = Duration::from_millis(up.cfg.idle_timeout_ms);
        let collected = tokio::time::timeout(idle, http_body_util::Limited::new(up_body, 1 << 20).collect()).await;
        if !up_parts.status.is_success() {
            let bytes = match collected {
                Ok(Ok(c)) => c.to_bytes(),
                _ => bytes::Bytes::new(),
            };
            guard.event.response_bytes = bytes.len() as u64;
            let err: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let (_, etype) = crate::translate::response::upstream_error_parts(&err);
            guard.event.error_type = etype.unwrap_or("upstream_error").into();
            respond::finish_upstream_error(&mut guard, up_parts.status);
            let wire = up.wire();
            return respond::upstream_error(
                ClientApi::Anthropic,
                &up.cfg.name,
                wire,
                up_parts.status,
                &up_parts.headers,
                bytes,
                &rid,
            );
        }
        let Ok(Ok(collected)) = collected else {
            return respond::fail(&mut guard, GatewayError::UpstreamUnreachable, &rid);
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
            Err(e) => return respond::fail(&mut guard, GatewayError::InvalidBody(e.to_string()), &rid),
        };
        if !body.get("messages").is_some_and(serde_json::Value::is_array) {
            let e = GatewayError::InvalidBody("`messages` must be a list".into());
            return respond::fail(&mut guard, e, &rid);
        }
        // Counting a 32 MB prompt is CPU work: off the async workers, and a panic in the tokenizer is an
        // error answer here, not a dropped connection.
        let meter = guard.meter().clone();
        let counted = target.model.clone();
        let n = match tokio::task::spawn_blocking(move || meter.estimator().count_request(&counted, &body)).await {
            Ok(n) => n,
            Err(error) => {
                warn!(%error, model = %target.model, "token count failed");
                return respond::fail(&mut guard, GatewayError::Internal, &rid);
            }
        };
        let exact = TokenEstimator::is_exact(&target.model);
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
    respond::with_request_id(resp, &rid)
}
