//! The parse phase: the body is read once (bounded) and only what later phases need is taken from it:
//! the model (and with it the route), `stream`, the usage request of OpenAI streams, the output bound.

use crate::call::{CallCtx, RequestMeta};
use crate::error::GatewayError;
use crate::routing::RouteTable;
use axum::body::Body;
use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt;
use std::time::Duration;
use tollgate_events::Endpoint;

/// The client's `x-request-id`, or a new UUIDv7.
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(crate::ids::new_v7_string)
}

/// Reads the body, takes the model and finds its route; refuses models the key may not use.
pub async fn parse(
    ctx: &mut CallCtx,
    body: Body,
    max_bytes: usize,
    read_timeout_ms: u64,
    routes: &RouteTable,
) -> Result<(), GatewayError> {
    let bytes = read_body(ctx, body, max_bytes, read_timeout_ms).await?;
    ctx.guard.event.request_bytes = bytes.len() as u64;
    let meta: RequestMeta = if crate::billable::glue::is_upload(ctx.endpoint) {
        crate::billable::media_usage::upload_meta(&ctx.headers, bytes.clone()).await?
    } else {
        serde_json::from_slice(&bytes).map_err(|e| GatewayError::InvalidBody(e.to_string()))?
    };
    let Some(model) = meta.model.clone().filter(|m| !m.is_empty()) else {
        return Err(GatewayError::InvalidBody("`model` is required".into()));
    };
    let ev = &mut ctx.guard.event;
    ev.requested_model = model.as_str().into();
    ev.served_model = ev.requested_model.clone();
    ev.route = ev.requested_model.clone();
    let route = routes.get(&model).ok_or_else(|| GatewayError::UnknownModel(model.clone()))?;
    if let Some(key) = &ctx.key {
        if !key.may_use(&model) {
            return Err(GatewayError::ModelNotAllowed(model));
        }
    }
    ctx.stream = ctx.endpoint != Endpoint::Embeddings && meta.stream.unwrap_or(false);
    ctx.guard.event.stream = ctx.stream;
    ctx.route = Some(route.clone());
    ctx.model = model;
    ctx.body = bytes;
    ctx.meta = meta;
    Ok(())
}

/// Reads the client's body within `limit` bytes and `timeout_ms`, telling apart a body too large (413),
/// a client that hung up while sending it (499, metered `client_disconnect`), a body whose framing is
/// broken (400) and a client too slow to send it (408).
async fn read_body(ctx: &CallCtx, body: Body, limit: usize, timeout_ms: u64) -> Result<Bytes, GatewayError> {
    let read = http_body_util::Limited::new(body, limit).collect();
    match tokio::time::timeout(Duration::from_millis(timeout_ms), read).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) => Err(body_error(&*e, limit)),
        Err(_) => {
            ctx.guard.metrics().client_read_timeouts.inc();
            Err(GatewayError::BodyReadTimeout(timeout_ms))
        }
    }
}

/// What a failed body read means, from the error's chain (axum, hyper, then the I/O error).
pub(crate) fn body_error(e: &(dyn std::error::Error + 'static), limit: usize) -> GatewayError {
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
