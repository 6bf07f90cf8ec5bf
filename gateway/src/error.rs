//! Errors the gateway returns to clients, each with its HTTP status (an exhaustive match: a new variant
//! must choose one) and the OpenAI error JSON that SDKs parse.

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use tollgate_events::Outcome;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("missing API key: send `Authorization: Bearer <key>`")]
    MissingKey,
    #[error("invalid API key")]
    InvalidKey,
    #[error("invalid request body: {0}")]
    InvalidBody(String),
    #[error("request body is larger than {0} bytes")]
    BodyTooLarge(usize),
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
    #[error("not found")]
    NotFound,
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::MissingKey | GatewayError::InvalidKey => StatusCode::UNAUTHORIZED,
            GatewayError::InvalidBody(_) => StatusCode::BAD_REQUEST,
            GatewayError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::UnknownModel(_) => StatusCode::NOT_FOUND,
            GatewayError::ModelNotAllowed(_) | GatewayError::QueryNotAllowed => StatusCode::FORBIDDEN,
            GatewayError::UpstreamUnreachable => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::NotFound => StatusCode::NOT_FOUND,
        }
    }

    /// OpenAI's `error.type` and `error.code`.
    pub fn type_and_code(&self) -> (&'static str, &'static str) {
        match self {
            GatewayError::MissingKey => ("invalid_request_error", "missing_api_key"),
            GatewayError::InvalidKey => ("invalid_request_error", "invalid_api_key"),
            GatewayError::InvalidBody(_) => ("invalid_request_error", "invalid_body"),
            GatewayError::BodyTooLarge(_) => ("invalid_request_error", "body_too_large"),
            GatewayError::UnknownModel(_) => ("invalid_request_error", "model_not_found"),
            GatewayError::ModelNotAllowed(_) => ("invalid_request_error", "model_not_allowed"),
            GatewayError::QueryNotAllowed => ("invalid_request_error", "query_not_allowed"),
            GatewayError::UpstreamUnreachable => ("api_error", "upstream_unreachable"),
            GatewayError::UpstreamTimeout => ("api_error", "upstream_timeout"),
            GatewayError::NotFound => ("invalid_request_error", "not_found"),
        }
    }

    /// The call-event outcome this error ends a call with.
    pub fn outcome(&self) -> Outcome {
        match self {
            GatewayError::MissingKey | GatewayError::InvalidKey => Outcome::Unauthorized,
            GatewayError::InvalidBody(_)
            | GatewayError::BodyTooLarge(_)
            | GatewayError::UnknownModel(_)
            | GatewayError::ModelNotAllowed(_)
            | GatewayError::QueryNotAllowed
            | GatewayError::NotFound => Outcome::InvalidRequest,
            GatewayError::UpstreamUnreachable => Outcome::UpstreamError,
            GatewayError::UpstreamTimeout => Outcome::Timeout,
        }
    }
}

/// `{"error":{"message","type","param","code"}}`, as OpenAI's SDKs expect.
pub fn openai_error_response(status: StatusCode, message: &str, kind: &str, code: &str) -> Response {
    let body = serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let (kind, code) = self.type_and_code();
        openai_error_response(self.status(), &self.to_string(), kind, code)
    }
}
