//! The `CallEvent` struct and its enums, with the JSON form used on the wire and in spool files.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Bumped whenever a field is added, removed or changes meaning. Stored in every row.
pub const SCHEMA_VERSION: u16 = 2;

/// Which API family an endpoint belongs to, as the client called it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    #[default]
    Chat,
    Messages,
    Embeddings,
    Completions,
    Models,
    Other,
    /// OpenAI's Responses API (`/v1/responses`).
    Responses,
    /// `/v1/audio/transcriptions`: speech to text.
    AudioTranscriptions,
    /// `/v1/audio/translations`: speech to English text.
    AudioTranslations,
    /// `/v1/audio/speech`: text to speech.
    AudioSpeech,
    /// `/v1/images/generations`.
    Images,
    /// `/v1/moderations` (free at OpenAI; still one event per call).
    Moderations,
}

/// The wire format the client spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClientApi {
    #[default]
    Openai,
    Anthropic,
}

/// How a call ended. Exactly one per event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    #[default]
    Ok,
    /// The provider answered with an error status, or cut the stream.
    UpstreamError,
    /// The provider did not answer (headers or next chunk) within the configured time.
    Timeout,
    /// The client hung up before the response was complete.
    ClientDisconnect,
    /// Missing or unknown virtual key.
    Unauthorized,
    RejectedBudget,
    RejectedRateLimit,
    RejectedGuard,
    RejectedContext,
    /// Malformed body, unknown model, model not allowed for the key.
    InvalidRequest,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::UpstreamError => "upstream_error",
            Outcome::Timeout => "timeout",
            Outcome::ClientDisconnect => "client_disconnect",
            Outcome::Unauthorized => "unauthorized",
            Outcome::RejectedBudget => "rejected_budget",
            Outcome::RejectedRateLimit => "rejected_rate_limit",
            Outcome::RejectedGuard => "rejected_guard",
            Outcome::RejectedContext => "rejected_context",
            Outcome::InvalidRequest => "invalid_request",
        }
    }
}

/// Where the token counts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UsageSource {
    /// The provider reported usage; counts are the provider's.
    #[default]
    Provider,
    /// Counted by tollgate with the model's own tokenizer (OpenAI models: `o200k_base`/`cl100k_base`).
    Estimated,
    /// Counted by tollgate with a tokenizer that is not the model's own: `cl100k_base` stands in for
    /// Claude and every other non-OpenAI model, whose tokenizers are not public. Expect it to be off by
    /// some percent (Claude's tokenizer usually yields more tokens than `cl100k_base` for the same text).
    EstimatedApprox,
    /// No tokens were involved (rejected before reaching a provider).
    None,
    /// The provider reported counts that were not believable (negative, fractional, far beyond the
    /// model's window, or a cost beyond u64): they were capped, and a metric and a warning say so.
    Capped,
}

impl UsageSource {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageSource::Provider => "provider",
            UsageSource::Estimated => "estimated",
            UsageSource::EstimatedApprox => "estimated_approx",
            UsageSource::None => "none",
            UsageSource::Capped => "capped",
        }
    }
}

impl Endpoint {
    /// Every endpoint, in the order of their ClickHouse `Enum8` codes (1, 2, …).
    pub const ALL: [Endpoint; 12] = [
        Endpoint::Chat,
        Endpoint::Messages,
        Endpoint::Embeddings,
        Endpoint::Completions,
        Endpoint::Models,
        Endpoint::Other,
        Endpoint::Responses,
        Endpoint::AudioTranscriptions,
        Endpoint::AudioTranslations,
        Endpoint::AudioSpeech,
        Endpoint::Images,
        Endpoint::Moderations,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat",
            Endpoint::Messages => "messages",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Completions => "completions",
            Endpoint::Models => "models",
            Endpoint::Other => "other",
            Endpoint::Responses => "responses",
            Endpoint::AudioTranscriptions => "audio_transcriptions",
            Endpoint::AudioTranslations => "audio_translations",
            Endpoint::AudioSpeech => "audio_speech",
            Endpoint::Images => "images",
            Endpoint::Moderations => "moderations",
        }
    }
}

impl ClientApi {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientApi::Openai => "openai",
            ClientApi::Anthropic => "anthropic",
        }
    }
}

/// One request that reached the gateway. Token semantics are normalised across providers:
/// `input_tokens` is the whole prompt, *including* `cached_input_tokens` and `cache_write_tokens`;
/// `output_tokens` is the whole completion, *including* `reasoning_tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct CallEvent {
    pub schema_version: u16,
    // identity
    /// UUIDv7, unique per event; time-ordered.
    pub event_id: String,
    /// The client's `x-request-id`, or a generated one.
    pub request_id: String,
    /// Microseconds since the Unix epoch, UTC.
    pub ts_start_us: i64,
    pub ts_end_us: i64,
    // attribution
    pub tenant: String,
    pub department: String,
    pub team: String,
    pub project: String,
    pub user: String,
    /// The virtual key's id from config, never the key itself.
    pub api_key_id: String,
    pub tags: BTreeMap<String, String>,
    // call
    pub endpoint: Endpoint,
    pub client_api: ClientApi,
    pub stream: bool,
    pub provider: String,
    pub upstream: String,
    pub requested_model: String,
    pub served_model: String,
    pub route: String,
    pub routing_strategy: String,
    pub attempt: u16,
    pub fallback_from: String,
    // outcome
    pub status_code: u16,
    pub outcome: Outcome,
    pub error_type: String,
    pub finish_reason: String,
    // usage
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    pub usage_source: UsageSource,
    // money
    /// USD × 10⁹, exact.
    pub cost_nanousd: u64,
    /// Which price-table entry priced this call (`model@version`), empty when unpriced.
    pub price_id: String,
    // time
    pub latency_ms: u32,
    /// Time to the first byte of content, rounded up to whole milliseconds; 0 means no content came.
    pub ttft_ms: u32,
    pub upstream_latency_ms: u32,
    pub gateway_overhead_us: u32,
    // size
    pub request_bytes: u64,
    pub response_bytes: u64,
    // added in schema 2 (appended, so older files and tables only lack trailing columns)
    /// Answered from the response cache: no upstream call was made.
    pub cache_hit: bool,
    /// What a cache hit would have cost (USD × 10⁹); 0 otherwise.
    pub saved_nanousd: u64,
    /// The admission guard (`name:rule`) that rejected or flagged this call; empty when none did.
    pub guard: String,
    /// The routing strategy's predicted cost of this attempt (USD × 10⁹); 0 when it predicted none.
    pub predicted_cost_nanousd: u64,
}

impl CallEvent {
    /// The UTC calendar date of `ts_start`, `YYYY-MM-DD`: the Parquet partition the event lands in.
    pub fn date(&self) -> String {
        date_of_day(self.day())
    }

    /// Days since the Unix epoch of `ts_start` (UTC): a cheap partition key.
    pub fn day(&self) -> i64 {
        self.ts_start_us.div_euclid(86_400_000_000)
    }
}

/// `YYYY-MM-DD` of a day number from [`CallEvent::day`].
pub fn date_of_day(day: i64) -> String {
    chrono::DateTime::from_timestamp(day * 86_400, 0).unwrap_or_default().format("%Y-%m-%d").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_keeps_every_field() {
        let mut e = CallEvent {
            schema_version: SCHEMA_VERSION,
            event_id: "0190".into(),
            outcome: Outcome::ClientDisconnect,
            usage_source: UsageSource::Estimated,
            cost_nanousd: u64::MAX,
            ts_start_us: 1_700_000_000_000_000,
            ..Default::default()
        };
        e.tags.insert("env".into(), "prod".into());
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains("\"outcome\":\"client_disconnect\""));
        assert!(json.contains("\"usage_source\":\"estimated\""));
        let back: CallEvent = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
        for endpoint in Endpoint::ALL {
            let e = CallEvent { endpoint, ..Default::default() };
            let json = serde_json::to_string(&e).unwrap();
            assert!(json.contains(&format!("\"endpoint\":\"{}\"", endpoint.as_str())), "{json}");
            assert_eq!(serde_json::from_str::<CallEvent>(&json).unwrap().endpoint, endpoint);
        }
        assert_eq!(e.date(), "2023-11-14");
    }
}
