//! `x-tollgate-cost-usd` on non-stream responses, for keys with `cost_header = true`: the metered body is
//! read whole (the call's event is emitted as it ends, as always), and the cost that the call guard
//! priced from the provider's usage becomes a header. Without provider usage the header is left out
//! rather than guessed.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::oneshot;

/// Largest body read whole for the header; the metering buffer's own limit.
const MAX_BODY: usize = 64 * 1024 * 1024;

pub async fn with_cost_header(resp: Response, cost: oneshot::Receiver<u64>) -> Response {
    let (mut parts, body) = resp.into_parts();
    let bytes = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(error) => {
            tracing::warn!(%error, "response could not be read whole for the cost header");
            return StatusCode::BAD_GATEWAY.into_response();
        }
    };
    if let Ok(nanos) = cost.await {
        if let Ok(v) = HeaderValue::from_str(&tollgate_events::format_usd(nanos)) {
            parts.headers.insert("x-tollgate-cost-usd", v);
        }
    }
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(bytes))
}
