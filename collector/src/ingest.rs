//! `POST /v1/ingest`: how gateways hand their event batches to a collector process. The body is the events as
//! JSON lines (objects, or `Positional` arrays as gateways send them), optionally zstd-compressed
//! (`content-encoding: zstd`); the caller authenticates with `authorization: Bearer <token>`. The answer
//! comes only after the batch is in the write-ahead log (fsynced): 200 `{"accepted": n, "first_offset": o}`.
//! A full log answers 503 with `retry-after`, and the gateway keeps the batch in its spool.

use crate::wal::WalError;
use crate::Collector;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use http::{HeaderMap, StatusCode};
use std::sync::Arc;
use tollgate_events::CallEvent;

/// Largest body accepted (compressed or not), and largest decompressed size.
pub const MAX_BODY: usize = 64 * 1024 * 1024;

#[derive(Clone)]
pub struct IngestState {
    pub collector: Arc<Collector>,
    /// The shared token gateways present; `None` accepts any caller (only for loopback set-ups).
    pub token: Option<Arc<str>>,
}

pub fn app(state: IngestState) -> Router {
    Router::new()
        .route("/v1/ingest", post(ingest))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    let body = serde_json::json!({"error": {"message": message, "type": "ingest_error", "code": code}});
    (status, [(http::header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// Constant-time comparison of the presented token.
fn token_ok(headers: &HeaderMap, want: &str) -> bool {
    let got = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    got.len() == want.len() && got.bytes().zip(want.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

async fn ingest(State(st): State<IngestState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(want) = &st.token {
        if !token_ok(&headers, want) {
            return error(StatusCode::UNAUTHORIZED, "bad_token", "missing or wrong ingest token".into());
        }
    }
    let zstd = headers.get(http::header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()) == Some("zstd");
    let raw = if zstd {
        let mut out = Vec::new();
        let mut dec = match zstd::stream::read::Decoder::new(&body[..]) {
            Ok(d) => d,
            Err(e) => return error(StatusCode::BAD_REQUEST, "bad_body", format!("zstd: {e}")),
        };
        let limited = std::io::Read::take(&mut dec, MAX_BODY as u64 + 1);
        let mut limited = limited;
        if let Err(e) = std::io::Read::read_to_end(&mut limited, &mut out) {
            return error(StatusCode::BAD_REQUEST, "bad_body", format!("zstd: {e}"));
        }
        if out.len() > MAX_BODY {
            return error(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("more than {MAX_BODY} bytes"));
        }
        out
    } else {
        body.to_vec()
    };
    let mut events: Vec<CallEvent> = Vec::new();
    for (i, line) in raw.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        // Checked for its schema version and required fields: a missing cost must not become $0.
        match tollgate_events::parse_wire_event(line) {
            Ok(e) => events.push(e),
            Err(e) => return error(StatusCode::BAD_REQUEST, "bad_event", format!("line {}: {e}", i + 1)),
        }
    }
    let n = events.len();
    // `x-tollgate-batch: <gateway id>:<sequence>` lets a resent batch be recognised and not stored twice.
    let source = headers
        .get("x-tollgate-batch")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit_once(':'))
        .and_then(|(g, seq)| Some((g.to_string(), seq.parse::<u64>().ok()?)));
    match st.collector.append(events, source).await {
        Ok(Some((first, _))) => {
            let body = serde_json::json!({"accepted": n, "first_offset": first});
            ([(http::header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
        }
        Ok(None) => {
            let body = serde_json::json!({"accepted": 0, "duplicate": true});
            ([(http::header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
        }
        Err(e @ WalError::Full { .. }) => {
            let mut r = error(StatusCode::SERVICE_UNAVAILABLE, "log_full", e.to_string());
            r.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("5"));
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "append to the write-ahead log failed");
            error(StatusCode::SERVICE_UNAVAILABLE, "log_error", "the collector could not store the batch".into())
        }
    }
}
