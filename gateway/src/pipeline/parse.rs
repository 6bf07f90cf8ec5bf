//! The parse phase: the body is read once (bounded) and only what later phases need is taken from it:
//! the model (and with it the route), `stream`, the usage request of OpenAI streams, the output bound.

use crate::call::{CallCtx, RequestMeta};
use crate::error::GatewayError;
use crate::routing::RouteTable;
use axum::body::Body;
use bytes::Bytes;
use http::HeaderMap;
use tollgate_events::Endpoint;

/// The client's `x-request-id`, or a new UUIDv7.
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

/// Reads the body, takes the model and finds its route; refuses models the key may not use.
pub async fn parse(ctx: &mut CallCtx, body: Body, max_bytes: usize, routes: &RouteTable) -> Result<(), GatewayError> {
    let bytes: Bytes =
        axum::body::to_bytes(body, max_bytes).await.map_err(|_| GatewayError::BodyTooLarge(max_bytes))?;
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
    ev.requested_model = model.clone();
    ev.served_model = model.clone();
    ev.route = model.clone();
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
