//! Query errors, each with its HTTP status (exhaustive match) and an OpenAI-shaped error body.

use axum::response::{IntoResponse, Response};
use http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    BadParameter(String),
    #[error("only a single SELECT, WITH or EXPLAIN statement is allowed: {0}")]
    NotReadOnly(String),
    #[error("invalid SQL: {0}")]
    InvalidSql(String),
    #[error("the query took longer than {0} ms and was cancelled")]
    Timeout(u64),
    /// The query needs more memory than `query.memory_limit_mb`.
    #[error("the query needs more memory than it may use: {0}")]
    MemoryLimit(String),
    /// Too long or too deeply nested to plan safely.
    #[error("the query is too complex: {0}")]
    TooComplex(String),
    #[error("the request body is larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("not allowed: {0}")]
    NotAllowed(String),
    #[error("the call-log store is unavailable: {0}")]
    Unavailable(String),
    #[error("query failed")]
    Internal(String),
}

impl QueryError {
    fn status(&self) -> StatusCode {
        match self {
            QueryError::BadParameter(_)
            | QueryError::NotReadOnly(_)
            | QueryError::InvalidSql(_)
            | QueryError::NotAllowed(_)
            | QueryError::MemoryLimit(_)
            | QueryError::TooComplex(_) => StatusCode::BAD_REQUEST,
            QueryError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            QueryError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            QueryError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            QueryError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            QueryError::BadParameter(_) => "invalid_parameter",
            QueryError::NotReadOnly(_) => "not_read_only",
            QueryError::InvalidSql(_) => "invalid_sql",
            QueryError::Timeout(_) => "query_timeout",
            QueryError::MemoryLimit(_) => "memory_limit_exceeded",
            QueryError::TooComplex(_) => "query_too_complex",
            QueryError::BodyTooLarge(_) => "body_too_large",
            QueryError::NotAllowed(_) => "not_allowed",
            QueryError::Unavailable(_) => "store_unavailable",
            QueryError::Internal(_) => "internal_error",
        }
    }
}

impl From<datafusion::error::DataFusionError> for QueryError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        QueryError::Internal(e.to_string())
    }
}

impl IntoResponse for QueryError {
    fn into_response(self) -> Response {
        if let QueryError::Internal(detail) = &self {
            // Internals stay in the log, not in the response.
            tracing::error!(%detail, "query failed");
        }
        let kind = if self.status().is_server_error() { "api_error" } else { "invalid_request_error" };
        let body = serde_json::json!({"error": {"message": self.to_string(), "type": kind, "param": null, "code": self.code()}});
        let mut resp =
            (self.status(), [(http::header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
        if let QueryError::BodyTooLarge(_) = self {
            // The body was not read to its end: this connection cannot carry another request, and a
            // client told so opens a new one instead of failing its next request on this one.
            resp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
        }
        resp
    }
}
