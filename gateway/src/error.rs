//! Errors the gateway returns to clients, each with its HTTP status (an exhaustive match: a new variant
//! must choose one) and the error JSON the client's SDK parses: OpenAI's `{"error":{…}}` or Anthropic's
//! `{"type":"error","error":{"type","message"}}`, chosen by the API the client called.

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use tollgate_events::{ClientApi, Outcome};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("missing API key: send `Authorization: Bearer <key>`")]
    MissingKey,
    #[error("invalid API key")]
    InvalidKey,
    #[error("invalid request body: {0}")]
    InvalidBody(String),
    /// A request field that has no equivalent in the upstream's API: refused rather than dropped.
    #[error("`{param}` cannot be translated for this model's upstream: {message}")]
    Untranslatable { param: String, message: String },
    #[error("request body is larger than {0} bytes")]
    BodyTooLarge(usize),
    /// The client went away while sending its body (nginx's 499: nobody reads this answer).
    #[error("the client closed the connection before sending the whole request body")]
    ClientDisconnected,
    #[error("the request body did not arrive within {0} ms")]
    BodyReadTimeout(u64),
    #[error("request headers are larger than {0} bytes")]
    HeadersTooLarge(usize),
    #[error("method {0} is not allowed on this path")]
    MethodNotAllowed(String),
    /// A fault inside the gateway (e.g. the tokenizer failed on this input); no internals in the text.
    #[error("the gateway could not process this request")]
    Internal,
    #[error("the model `{0}` does not exist or is not served by this gateway")]
    UnknownModel(String),
    #[error("this API key may not use the model `{0}`")]
    ModelNotAllowed(String),
    #[error("this API key may not read the query API (set `query = true` on the key)")]
    QueryNotAllowed,
    #[error("could not reach the upstream provider")]
    UpstreamUnreachable,
    #[error("the upstream provider did not answer in time")]
    UpstreamTimeout,
    /// Every target of the route has its circuit breaker open.
    #[error("no upstream for `{0}` is available right now (all its targets are failing); retry later")]
    NoHealthyTarget(String),
    #[error("not found")]
    NotFound,
    /// A stored Responses API response this gateway did not see created (or has forgotten).
    #[error("no response with id `{0}` is known to this gateway (translated responses are not stored)")]
    UnknownResponse(String),
    /// A budget that covers the call has no room for it (and no cheaper model that fits).
    #[error("budget `{budget}` exceeded: cap {cap_usd} USD per {period}; resets at {resets_at}")]
    BudgetExceeded { budget: String, cap_usd: String, period: &'static str, resets_at: String, retry_after_s: u64 },
    /// A token or request rate limit is used up for now.
    #[error("rate limit `{limit}` reached ({which} = {value}); retry after {retry_after_s} s")]
    RateLimited { limit: String, which: &'static str, value: u64, retry_after_s: u64 },
    /// The prompt cannot fit the model's context window (or a `max_input_tokens` policy).
    #[error("{0}")]
    ContextLengthExceeded(String),
    /// A prompt-injection guard blocked the request. Names the guard and rule, never the matched text.
    #[error("request blocked by guard `{guard}` (rule `{rule}`)")]
    GuardBlocked { guard: String, rule: String },
    /// Redaction in `block` mode found secrets or personal data of these kinds.
    #[error("request contains sensitive data ({0}); remove it and retry")]
    SensitiveData(String),
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::MissingKey | GatewayError::InvalidKey => StatusCode::UNAUTHORIZED,
            GatewayError::InvalidBody(_)
            | GatewayError::Untranslatable { .. }
            | GatewayError::ContextLengthExceeded(_)
            | GatewayError::GuardBlocked { .. }
            | GatewayError::SensitiveData(_) => StatusCode::BAD_REQUEST,
            GatewayError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::ClientDisconnected => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            GatewayError::BodyReadTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            GatewayError::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            GatewayError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            GatewayError::UnknownModel(_) => StatusCode::NOT_FOUND,
            GatewayError::ModelNotAllowed(_) | GatewayError::QueryNotAllowed => StatusCode::FORBIDDEN,
            GatewayError::UpstreamUnreachable => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::NoHealthyTarget(_) => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::NotFound | GatewayError::UnknownResponse(_) => StatusCode::NOT_FOUND,
            GatewayError::BudgetExceeded { .. } | GatewayError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// OpenAI's `error.type` and `error.code`.
    pub fn type_and_code(&self) -> (&'static str, &'static str) {
        match self {
            GatewayError::MissingKey => ("invalid_request_error", "missing_api_key"),
            GatewayError::InvalidKey => ("invalid_request_error", "invalid_api_key"),
            GatewayError::InvalidBody(_) => ("invalid_request_error", "invalid_body"),
            GatewayError::Untranslatable { .. } => ("invalid_request_error", "unsupported_parameter"),
            GatewayError::BodyTooLarge(_) => ("invalid_request_error", "body_too_large"),
            GatewayError::ClientDisconnected => ("invalid_request_error", "client_disconnect"),
            GatewayError::BodyReadTimeout(_) => ("invalid_request_error", "request_timeout"),
            GatewayError::HeadersTooLarge(_) => ("invalid_request_error", "headers_too_large"),
            GatewayError::MethodNotAllowed(_) => ("invalid_request_error", "method_not_allowed"),
            GatewayError::Internal => ("api_error", "internal_error"),
            GatewayError::UnknownModel(_) => ("invalid_request_error", "model_not_found"),
            GatewayError::ModelNotAllowed(_) => ("invalid_request_error", "model_not_allowed"),
            GatewayError::QueryNotAllowed => ("invalid_request_error", "query_not_allowed"),
            GatewayError::UpstreamUnreachable => ("api_error", "upstream_unreachable"),
            GatewayError::UpstreamTimeout => ("api_error", "upstream_timeout"),
            GatewayError::NoHealthyTarget(_) => ("api_error", "no_healthy_upstream"),
            GatewayError::NotFound => ("invalid_request_error", "not_found"),
            GatewayError::UnknownResponse(_) => ("invalid_request_error", "response_not_found"),
            GatewayError::BudgetExceeded { .. } => ("budget_exceeded", "budget_exceeded"),
            GatewayError::RateLimited { .. } => ("rate_limit_error", "rate_limit_exceeded"),
            GatewayError::ContextLengthExceeded(_) => ("invalid_request_error", "context_length_exceeded"),
            GatewayError::GuardBlocked { .. } => ("invalid_request_error", "blocked_by_guard"),
            GatewayError::SensitiveData(_) => ("invalid_request_error", "sensitive_data_detected"),
        }
    }

    /// The call-event outcome this error ends a call with.
    pub fn outcome(&self) -> Outcome {
        match self {
            GatewayError::MissingKey | GatewayError::InvalidKey => Outcome::Unauthorized,
            GatewayError::InvalidBody(_)
            | GatewayError::Untranslatable { .. }
            | GatewayError::BodyTooLarge(_)
            | GatewayError::HeadersTooLarge(_)
            | GatewayError::MethodNotAllowed(_)
            | GatewayError::Internal
            | GatewayError::UnknownModel(_)
            | GatewayError::ModelNotAllowed(_)
            | GatewayError::QueryNotAllowed
            | GatewayError::NotFound
            | GatewayError::UnknownResponse(_) => Outcome::InvalidRequest,
            GatewayError::UpstreamUnreachable | GatewayError::NoHealthyTarget(_) => Outcome::UpstreamError,
            GatewayError::UpstreamTimeout | GatewayError::BodyReadTimeout(_) => Outcome::Timeout,
            GatewayError::ClientDisconnected => Outcome::ClientDisconnect,
            GatewayError::BudgetExceeded { .. } => Outcome::RejectedBudget,
            GatewayError::RateLimited { .. } => Outcome::RejectedRateLimit,
            GatewayError::ContextLengthExceeded(_) => Outcome::RejectedContext,
            GatewayError::GuardBlocked { .. } | GatewayError::SensitiveData(_) => Outcome::RejectedGuard,
        }
    }

    /// Seconds after which retrying can succeed, sent as `retry-after`.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            GatewayError::BudgetExceeded { retry_after_s, .. } | GatewayError::RateLimited { retry_after_s, .. } => {
                Some(*retry_after_s)
            }
            _ => None,
        }
    }

    /// Extra headers of rejections: `retry-after`, and for budgets `x-should-retry: false` (the OpenAI
    /// and Anthropic SDKs otherwise retry a 429 on their own, which cannot help before the reset).
    fn add_headers(&self, resp: &mut Response) {
        if let Some(s) = self.retry_after() {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        match self {
            GatewayError::BudgetExceeded { budget, .. } => {
                resp.headers_mut().insert("x-should-retry", HeaderValue::from_static("false"));
                if let Ok(v) = HeaderValue::from_str(budget) {
                    resp.headers_mut().insert("x-tollgate-budget", v);
                }
            }
            GatewayError::RateLimited { limit, .. } => {
                if let Ok(v) = HeaderValue::from_str(limit) {
                    resp.headers_mut().insert("x-tollgate-rate-limit", v);
                }
            }
            GatewayError::GuardBlocked { guard, .. } => {
                if let Ok(v) = HeaderValue::from_str(guard) {
                    resp.headers_mut().insert("x-tollgate-guard", v);
                }
            }
            // The body was not read to its end, so the connection cannot carry another request: a client
            // told so opens a new one instead of failing its next request on this one. (A body with
            // broken framing ends the connection in the HTTP layer anyway.)
            GatewayError::BodyTooLarge(_) | GatewayError::BodyReadTimeout(_) => {
                resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
    }
}

/// `{"error":{"message","type","param","code"}}`, as OpenAI's SDKs expect.
pub fn openai_error_response(status: StatusCode, message: &str, kind: &str, code: &str) -> Response {
    openai_error_response_param(status, message, kind, code, None)
}

fn openai_error_response_param(
    status: StatusCode,
    message: &str,
    kind: &str,
    code: &str,
    param: Option<&str>,
) -> Response {
    let body = serde_json::json!({"error": {"message": message, "type": kind, "param": param, "code": code}});
    json_response(status, body.to_string())
}

/// `{"type":"error","error":{"type","message"}}`, as Anthropic's SDKs expect.
pub fn anthropic_error_response(status: StatusCode, message: &str, kind: &str) -> Response {
    json_response(status, anthropic_error_body(kind, message))
}

pub fn anthropic_error_body(kind: &str, message: &str) -> String {
    serde_json::json!({"type": "error", "error": {"type": kind, "message": message}}).to_string()
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Anthropic's `error.type` for an HTTP status (their documented list; anything else is `api_error`).
pub fn anthropic_error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        405 | 408 | 499 => "invalid_request_error",
        413 | 431 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

impl GatewayError {
    /// The error in the shape of the API the client called.
    pub fn response_for(self, client: ClientApi) -> Response {
        match client {
            ClientApi::Openai => self.into_response(),
            ClientApi::Anthropic => {
                let status = self.status();
                let kind = match &self {
                    GatewayError::BudgetExceeded { .. } => "budget_exceeded",
                    _ => anthropic_error_type(status),
                };
                let mut resp = anthropic_error_response(status, &self.to_string(), kind);
                self.add_headers(&mut resp);
                resp
            }
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let (kind, code) = self.type_and_code();
        let param = match &self {
            GatewayError::Untranslatable { param, .. } => Some(param.as_str()),
            GatewayError::ContextLengthExceeded(_) => Some("messages"),
            _ => None,
        };
        let mut resp = openai_error_response_param(self.status(), &self.to_string(), kind, code, param);
        self.add_headers(&mut resp);
        resp
    }
}
