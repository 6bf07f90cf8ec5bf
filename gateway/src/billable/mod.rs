//! The billable endpoints beyond chat and Messages: OpenAI's Responses API (native or translated), the
//! media endpoints (audio transcriptions, translations and speech, image generation, moderations), what
//! metering reads from their answers (tokens of every kind, built-in tool calls, audio seconds,
//! characters, images), which upstream holds which stored response, and the 404 for an unknown path.

pub mod glue;
pub mod handlers;
pub mod media_usage;
pub mod reader;
pub mod response_ids;
pub mod responses_usage;
