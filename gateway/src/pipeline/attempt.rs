//! The attempt phase: one call to one target. The target's provider builds the upstream request (the
//! client's bytes when formats match, a translation otherwise), it is sent, and a failure is classified
//! by source and retryability. When another attempt could follow, a 2xx answer is held until its first
//! body frame arrives: an upstream that goes silent or breaks off before sending anything can then
//! still be retried, because nothing has reached the client yet.

use crate::billable::glue::with_model_for;
use crate::call::RequestMeta;
use crate::error::GatewayError;
use crate::finish::CallGuard;
use crate::providers::{prepare, PrepareInput};
use crate::respond::{self, Answer, UpstreamBody};
use crate::routing::Target;
use crate::translate::response;
use axum::response::Response;
use bytes::Bytes;
use http::{header, HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_events::{ClientApi, Endpoint};
use tracing::warn;

/// What an attempt reads from the request.
pub struct AttemptInput<'a> {
    pub endpoint: Endpoint,
    pub client: ClientApi,
    pub request_id: &'a str,
    pub headers: &'a HeaderMap,
    /// The body as admission left it.
    pub body: &'a Bytes,
    pub meta: &'a RequestMeta,
    pub stream: bool,
    /// The model named in `body`.
    pub body_model: &'a str,
    /// `gateway.max_sse_line_bytes`.
    pub max_line: usize,
}

/// Where a failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The request itself (a 400 from the provider, a field that cannot be translated).
    Client,
    /// The provider answered with an error.
    Upstream,
    /// No answer: connection refused, timeout, silence or a cut before the first byte.
    Network,
}

/// How the failure looks to a client if no other attempt follows.
pub enum FailureKind {
    Gateway(GatewayError),
    Status { status: StatusCode, headers: HeaderMap, body: Bytes },
}

/// A failed attempt whose event is finished (it is emitted when `guard` drops) and nothing of which has
/// reached the client.
pub struct Failure {
    pub guard: CallGuard,
    pub kind: FailureKind,
    pub source: Source,
    pub retryable: bool,
    /// The provider's `Retry-After` (or `retry-after-ms`).
    pub retry_after: Option<Duration>,
    pub target: Arc<Target>,
}

impl Failure {
    /// The client's response to this failure.
    pub fn respond(self, rid: &str) -> Response {
        let Failure { guard, kind, target, .. } = self;
        let client = guard.event.client_api;
        match kind {
            FailureKind::Gateway(e) => respond::with_request_id(e.response_for(client), rid),
            FailureKind::Status { status, headers, body } => respond::upstream_error(
                client,
                &target.upstream.cfg.name,
                target.upstream.wire(),
                status,
                &headers,
                body,
                rid,
            ),
        }
    }
}

pub enum Attempted {
    Answered(Response),
    Failed(Box<Failure>),
}

fn gateway_failure(mut guard: CallGuard, e: GatewayError, source: Source, target: &Arc<Target>) -> Attempted {
    respond::record_error(&mut guard, &e);
    let retryable = source == Source::Network;
    Attempted::Failed(Box::new(Failure {
        guard,
        kind: FailureKind::Gateway(e),
        source,
        retryable,
        retry_after: None,
        target: target.clone(),
    }))
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let num = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    num("retry-after-ms").map(Duration::from_millis).or_else(|| num("retry-after").map(Duration::from_secs))
}

/// Calls `target` once. `hold_first_frame`: another attempt could follow, so wait for the answer's
/// first body frame before answering the client.
pub async fn attempt(
    input: &AttemptInput<'_>,
    target: &Arc<Target>,
    mut guard: CallGuard,
    hold_first_frame: bool,
) -> Attempted {
    let up = &target.upstream;
    guard.event.provider = up.provider.kind().into();
    guard.event.upstream = up.cfg.name.as_str().into();
    guard.event.served_model = target.model.as_str().into();
    let path = match up.path(input.endpoint, &target.model) {
        Ok(p) => p,
        Err(e) => return gateway_failure(guard, e, Source::Client, target),
    };
    // The target may serve the public model under another name.
    let renamed;
    let client_body = if target.model == input.body_model {
        input.body
    } else {
        renamed = match with_model_for(input.endpoint, input.headers, input.body, &target.model) {
            Ok(b) => b,
            Err(e) => return gateway_failure(guard, e, Source::Client, target),
        };
        &renamed
    };
    let prepared = match prepare(
        up,
        &PrepareInput {
            endpoint: input.endpoint,
            client: input.client,
            bytes: client_body,
            stream: input.stream,
            client_wants_usage: input.meta.client_wants_usage(),
            has_stream_options: input.meta.stream_options.is_some(),
        },
    ) {
        Ok(p) => p,
        Err(e) => return gateway_failure(guard, e, Source::Client, target),
    };
    let (uri, host) = match up.target_uri(&target.model, path) {
        Ok(u) => u,
        Err(e) => return gateway_failure(guard, e, Source::Client, target),
    };
    // Uploads keep their multipart content type (and boundary); everything else is JSON.
    let content_type = match input.headers.get(header::CONTENT_TYPE) {
        Some(ct) if crate::billable::glue::is_upload(input.endpoint) => ct.clone(),
        _ => http::HeaderValue::from_static("application/json"),
    };
    let mut builder = http::Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::HOST, host)
        .header(header::CONTENT_TYPE, content_type)
        .header(respond::X_REQUEST_ID, input.request_id);
    if input.stream {
        builder = builder.header(header::ACCEPT, "text/event-stream");
    }
    builder = up.headers(builder, input.client, input.headers);
    // Tokens are estimated, when the provider reports none, from what was sent upstream.
    guard.request_body = Some(prepared.body.clone());
    let Ok(up_req) = builder.body(Full::new(prepared.body.clone())) else {
        let e = GatewayError::InvalidBody("request could not be forwarded".into());
        return gateway_failure(guard, e, Source::Client, target);
    };
    let sent = Instant::now();
    guard.t_sent = Some(sent);
    guard.overhead = sent - guard.started();
    let timeout = Duration::from_millis(up.cfg.request_timeout_ms);
    let (resp, lease) = match tokio::time::timeout(timeout, up.calls.request(up_req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(error)) => {
            warn!(upstream = %up.cfg.name, %error, "upstream request failed");
            return gateway_failure(guard, GatewayError::UpstreamUnreachable, Source::Network, target);
        }
        Err(_) => return gateway_failure(guard, GatewayError::UpstreamTimeout, Source::Network, target),
    };
    let got_headers = Instant::now();
    let (parts, body) = resp.into_parts();
    let mut body = UpstreamBody::new(body, lease);
    let status = parts.status;
    guard.event.status_code = status.as_u16();
    let idle = Duration::from_millis(up.cfg.idle_timeout_ms);

    if !status.is_success() {
        let bytes = match tokio::time::timeout(idle, http_body_util::Limited::new(body, 1 << 20).collect()).await {
            Ok(Ok(c)) => c.to_bytes(),
            _ => Bytes::new(),
        };
        guard.event.response_bytes = bytes.len() as u64;
        let err: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let (_, etype) = response::upstream_error_parts(&err);
        guard.event.error_type = etype.unwrap_or("upstream_error").into();
        respond::finish_upstream_error(&mut guard, status);
        let retryable = up.provider.retryable_status(status);
        let source = if status.is_client_error() && !retryable { Source::Client } else { Source::Upstream };
        return Attempted::Failed(Box::new(Failure {
            guard,
            retry_after: retry_after(&parts.headers),
            kind: FailureKind::Status { status, headers: parts.headers, body: bytes },
            source,
            retryable,
            target: target.clone(),
        }));
    }

    if hold_first_frame {
        match tokio::time::timeout(idle, body.frame()).await {
            Ok(Some(Ok(first))) => body.hold(first),
            Ok(None) => {}
            Ok(Some(Err(error))) => {
                warn!(upstream = %up.cfg.name, %error, "upstream answer broke off before its first byte");
                guard.event.error_type = "upstream_stream_cut".into();
                return gateway_failure_kept(guard, GatewayError::UpstreamUnreachable, target);
            }
            Err(_) => {
                guard.event.error_type = "upstream_idle_timeout".into();
                return gateway_failure_kept(guard, GatewayError::UpstreamTimeout, target);
            }
        }
    }
    let wire = up.wire();
    let answer = Answer {
        guard,
        parts,
        body,
        kind: prepared.kind,
        translation: prepared.translation,
        reader: prepared.reader,
        wire,
        stream: input.stream,
        idle,
        got_headers,
    };
    Attempted::Answered(respond::answer(answer, input.request_id, input.max_line).await)
}

/// A 2xx whose body never started: the outcome is the gateway error's, the error type says why.
fn gateway_failure_kept(mut guard: CallGuard, e: GatewayError, target: &Arc<Target>) -> Attempted {
    let etype = std::mem::take(&mut guard.event.error_type);
    guard.finish(e.outcome(), e.status().as_u16());
    guard.event.error_type = etype;
    Attempted::Failed(Box::new(Failure {
        guard,
        kind: FailureKind::Gateway(e),
        source: Source::Network,
        retryable: true,
        retry_after: None,
        target: target.clone(),
    }))
}
