//! Admission guards and the response cache for the gateway, kept apart from the request path so that each
//! piece can be tested and benchmarked alone: context-window limits ([`context`]), prompt-injection rules
//! ([`rules`], over [`normalize`]d text from [`extract`]ed message texts), the external classifier hook
//! ([`classifier`]), secret/PII redaction of requests and (streamed) responses ([`redact`]), and the
//! exact-match response cache with its in-memory and Redis stores ([`cache`]). User config is in [`config`].

pub mod cache;
pub mod classifier;
pub mod config;
pub mod context;
pub mod corpus;
pub mod extract;
pub mod metrics;
pub mod normalize;
pub mod redact;
pub mod rules;

/// Errors of this crate: a config problem (naming the key) or a cache store failure.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("{key}: {message}")]
    Config { key: String, message: String },
    #[error("cache: {0}")]
    Cache(String),
}
