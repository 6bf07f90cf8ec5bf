//! The billable endpoints beyond chat and Messages: what metering reads from OpenAI's Responses API
//! (tokens of every kind, built-in tool calls) and from the media endpoints (audio seconds, characters,
//! images), and which upstream holds which stored response.

pub mod media_usage;
pub mod response_ids;
pub mod responses_usage;
