//! Translation between OpenAI's chat completions format and Anthropic's Messages format: requests,
//! whole responses, streams and error bodies. Used only when the client's format and the upstream's
//! differ; a client speaking its upstream's format gets the upstream's bytes untouched.

pub mod request;
pub mod response;
#[cfg(test)]
mod responses_props;
pub mod responses_request;
pub mod responses_response;
pub mod responses_stream;
pub mod stream;

pub use stream::StreamTranslator;

/// How a response body is turned into the client's format.
pub enum Translation {
    /// Same format on both sides: bytes pass through.
    None,
    /// A whole Anthropic message for an OpenAI client.
    JsonAnthropicToOpenAi { created: u64 },
    /// A whole OpenAI completion for an Anthropic client.
    JsonOpenAiToAnthropic,
    /// A whole chat completion (`from` OpenAI) or Anthropic message for a Responses API client.
    JsonToResponses { from: crate::config::Wire, request: Box<serde_json::Value>, created: u64 },
    /// A stream, event by event.
    Stream(Box<StreamTranslator>),
}

impl Translation {
    /// The same direction for a whole JSON body: what a stream request needs when the upstream answers
    /// it with one JSON document instead of events.
    pub fn whole(self, created: u64) -> Translation {
        match self {
            Translation::Stream(t) => match *t {
                StreamTranslator::AnthropicToOpenAi(_) => Translation::JsonAnthropicToOpenAi { created },
                StreamTranslator::OpenAiToAnthropic(_) => Translation::JsonOpenAiToAnthropic,
                // A Responses client: the JSON document (an error object, typically) is passed on as sent.
                t @ (StreamTranslator::ChatToResponses(_) | StreamTranslator::AnthropicToResponses(_)) => {
                    Translation::Stream(Box::new(t))
                }
            },
            other => other,
        }
    }
}
