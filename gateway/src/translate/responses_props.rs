//! Property tests: the Responses translators and the Responses metering scan never panic, whatever JSON
//! (or bytes) a client or an upstream sends, and a stream translator writes at most one terminal event.

use super::request::ToAnthropic;
use super::responses_request::{responses_to_anthropic, responses_to_chat, ResponsesToChat};
use super::responses_response::{anthropic_to_responses, chat_to_responses};
use super::responses_stream::{AnthropicToResponses, ChatToResponses};
use crate::billable::responses_usage::ResponsesMeta;
use bytes::BytesMut;
use proptest::prelude::*;
use serde_json::{json, Value};

/// Field names and type tags the translators look at, so random documents reach the interesting paths.
const KEYS: &[&str] = &[
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "type",
    "role",
    "content",
    "text",
    "name",
    "arguments",
    "call_id",
    "output",
    "reasoning",
    "effort",
    "max_output_tokens",
    "stream",
    "format",
    "image_url",
    "file_id",
    "detail",
    "strict",
    "parameters",
    "temperature",
    "choices",
    "delta",
    "message",
    "tool_calls",
    "function",
    "index",
    "usage",
    "finish_reason",
    "stop_reason",
    "content_block",
    "id",
    "partial_json",
    "thinking",
    "error",
    "response",
    "status",
    "item",
    "prompt_tokens",
    "input_tokens",
];
const TAGS: &[&str] = &[
    "message",
    "function_call",
    "function_call_output",
    "reasoning",
    "input_text",
    "input_image",
    "output_text",
    "function",
    "text",
    "tool_use",
    "thinking",
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
    "error",
    "text_delta",
    "input_json_delta",
    "thinking_delta",
    "response.completed",
    "response.output_text.delta",
    "response.output_item.done",
    "web_search_call",
    "low",
    "high",
    "user",
    "assistant",
    "developer",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<u32>().prop_map(|n| json!(n)),
        (-1e6f64..1e6).prop_map(|f| json!(f)),
        prop::sample::select(TAGS).prop_map(|s| json!(s)),
        ".{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

fn terminal_events(out: &BytesMut) -> usize {
    let text = String::from_utf8_lossy(out);
    ["event: response.completed\n", "event: response.incomplete\n", "event: response.failed\n"]
        .iter()
        .map(|k| text.matches(k).count())
        .sum()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn request_translation_never_panics(req in json_value()) {
        let _ = responses_to_chat(&req, &ResponsesToChat { max_tokens_field: "max_tokens", include_usage: true });
        let _ = responses_to_anthropic(&req, &ToAnthropic { default_max_tokens: 1024 });
    }

    #[test]
    fn whole_translation_never_panics(resp in json_value(), req in json_value()) {
        let _ = chat_to_responses(&resp, &req, 1);
        let _ = anthropic_to_responses(&resp, &req, 1);
        let _ = ResponsesMeta::default().absorb_whole(resp.to_string().as_bytes());
    }

    #[test]
    fn stream_translation_never_panics_and_ends_once(events in prop::collection::vec(json_value(), 0..12),
                                                     junk in prop::collection::vec(any::<u8>(), 0..32)) {
        let req = json!({"model": "m", "input": "x"});
        let mut chat = ChatToResponses::new(&req, 1);
        let mut anth = AnthropicToResponses::new(&req, 1);
        let mut meta = ResponsesMeta::default();
        let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
        for e in &events {
            let bytes = e.to_string();
            chat.on_data(bytes.as_bytes(), &mut a);
            anth.on_data(bytes.as_bytes(), &mut b);
            meta.absorb_event(bytes.as_bytes());
        }
        chat.on_data(&junk, &mut a);
        anth.on_data(&junk, &mut b);
        meta.absorb_event(&junk);
        chat.on_data(b"[DONE]", &mut a);
        chat.on_end(&mut a);
        anth.on_end(&mut b);
        prop_assert!(terminal_events(&a) <= 1);
        prop_assert!(terminal_events(&b) <= 1);
    }
}
