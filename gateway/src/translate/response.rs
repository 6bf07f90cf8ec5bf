//! Whole (non-stream) responses and upstream error bodies translated into the client's format.

use crate::error::anthropic_error_type;
use http::StatusCode;
use serde_json::{json, Map, Value};

/// Anthropic `stop_reason` → OpenAI `finish_reason`.
pub fn finish_reason_from_anthropic(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn
        _ => "stop",
    }
}

/// OpenAI `finish_reason` → Anthropic `stop_reason`.
pub fn stop_reason_from_openai(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic usage (input excludes cache reads and writes) → OpenAI usage (prompt includes them).
pub fn openai_usage_from_anthropic(u: &Value) -> Value {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let cached = n("cache_read_input_tokens");
    let prompt = n("input_tokens") + cached + n("cache_creation_input_tokens");
    let completion = n("output_tokens");
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": 0}
    })
}

/// OpenAI usage → Anthropic usage. OpenAI reports no cache writes.
pub fn anthropic_usage_from_openai(u: &Value) -> Value {
    let prompt = u.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0);
    let cached = u.pointer("/prompt_tokens_details/cached_tokens").and_then(Value::as_u64).unwrap_or(0).min(prompt);
    json!({
        "input_tokens": prompt - cached,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": u.get("completion_tokens").and_then(Value::as_u64).unwrap_or(0)
    })
}

/// A whole Anthropic `message` → a whole OpenAI `chat.completion`.
pub fn anthropic_to_openai(msg: &Value, created: u64) -> Value {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    for b in msg.get("content").and_then(Value::as_array).into_iter().flatten() {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or_default()),
            Some("thinking") => reasoning.push_str(b.get("thinking").and_then(Value::as_str).unwrap_or_default()),
            Some("tool_use") => {
                let args = b.get("input").map(Value::to_string).unwrap_or_else(|| "{}".into());
                calls.push(json!({
                    "id": b.get("id").cloned().unwrap_or(Value::Null),
                    "type": "function",
                    "function": {"name": b.get("name").cloned().unwrap_or(Value::Null), "arguments": args}
                }));
            }
            _ => {}
        }
    }
    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    message.insert("content".into(), if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) });
    message.insert("refusal".into(), Value::Null);
    if !reasoning.is_empty() {
        message.insert("reasoning_content".into(), json!(reasoning));
    }
    if !calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    let finish = msg.get("stop_reason").and_then(Value::as_str).map(finish_reason_from_anthropic).unwrap_or("stop");
    json!({
        "id": msg.get("id").cloned().unwrap_or(Value::Null),
        "object": "chat.completion",
        "created": created,
        "model": msg.get("model").cloned().unwrap_or(Value::Null),
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
        "usage": openai_usage_from_anthropic(msg.get("usage").unwrap_or(&Value::Null))
    })
}

/// A whole OpenAI `chat.completion` → a whole Anthropic `message`.
pub fn openai_to_anthropic(resp: &Value) -> Value {
    let choice = resp.pointer("/choices/0").unwrap_or(&Value::Null);
    let m = choice.get("message").unwrap_or(&Value::Null);
    let mut content = Vec::new();
    if let Some(r) = m.get("reasoning_content").and_then(Value::as_str).filter(|r| !r.is_empty()) {
        content.push(json!({"type": "thinking", "thinking": r, "signature": ""}));
    }
    for key in ["content", "refusal"] {
        if let Some(t) = m.get(key).and_then(Value::as_str).filter(|t| !t.is_empty()) {
            content.push(json!({"type": "text", "text": t}));
        }
    }
    for c in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
        let f = c.get("function").unwrap_or(&Value::Null);
        let args = f.get("arguments").and_then(Value::as_str).unwrap_or("{}");
        content.push(json!({
            "type": "tool_use",
            "id": c.get("id").cloned().unwrap_or(Value::Null),
            "name": f.get("name").cloned().unwrap_or(Value::Null),
            "input": serde_json::from_str::<Value>(args).unwrap_or_else(|_| json!({}))
        }));
    }
    let stop = choice.get("finish_reason").and_then(Value::as_str).map(stop_reason_from_openai).unwrap_or("end_turn");
    json!({
        "id": resp.get("id").cloned().unwrap_or(Value::Null),
        "type": "message",
        "role": "assistant",
        "model": resp.get("model").cloned().unwrap_or(Value::Null),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": null,
        "usage": anthropic_usage_from_openai(resp.get("usage").unwrap_or(&Value::Null))
    })
}

/// The message and type of an upstream error body in either format (`{"error":{"message","type","code"}}`
/// or `{"type":"error","error":{"type","message"}}`).
pub fn upstream_error_parts(body: &Value) -> (Option<&str>, Option<&str>) {
    let e = &body["error"];
    let kind = e["code"].as_str().or_else(|| e["type"].as_str());
    (e["message"].as_str(), kind)
}

/// An upstream error body rewritten into the other format, keeping its message and kind.
pub fn error_to_anthropic(status: StatusCode, body: &Value) -> String {
    let (message, _) = upstream_error_parts(body);
    let message = message.unwrap_or("the upstream provider returned an error");
    crate::error::anthropic_error_body(anthropic_error_type(status), message)
}

pub fn error_to_openai(status: StatusCode, body: &Value) -> String {
    let (message, kind) = upstream_error_parts(body);
    let message = message.unwrap_or("the upstream provider returned an error");
    let kind = kind.unwrap_or(if status.is_server_error() { "server_error" } else { "invalid_request_error" });
    json!({"error": {"message": message, "type": kind, "param": null, "code": kind}}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_responses_translate_both_ways_with_usage_normalised() {
        let msg = json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}}
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 10, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20, "output_tokens": 7}
        });
        let oa = anthropic_to_openai(&msg, 5);
        assert_eq!(oa["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(oa["choices"][0]["message"]["content"], "Let me check.");
        assert_eq!(oa["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"], "{\"q\":\"x\"}");
        assert_eq!(oa["usage"]["prompt_tokens"], 130);
        assert_eq!(oa["usage"]["prompt_tokens_details"]["cached_tokens"], 100);
        assert_eq!(oa["usage"]["completion_tokens"], 7);

        let back = openai_to_anthropic(&oa);
        assert_eq!(back["content"], msg["content"]);
        assert_eq!(back["stop_reason"], "tool_use");
        // OpenAI has no cache-write count: those tokens come back as plain input.
        assert_eq!(
            back["usage"],
            json!({"input_tokens": 30, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 100, "output_tokens": 7})
        );
    }

    #[test]
    fn errors_keep_their_message_in_the_other_shape() {
        let anth = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
        let oa: Value = serde_json::from_str(&error_to_openai(StatusCode::from_u16(529).unwrap(), &anth)).unwrap();
        assert_eq!(oa["error"]["message"], "Overloaded");
        assert_eq!(oa["error"]["type"], "overloaded_error");
        let openai = json!({"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}});
        let an: Value = serde_json::from_str(&error_to_anthropic(StatusCode::TOO_MANY_REQUESTS, &openai)).unwrap();
        assert_eq!(an, json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}));
    }
}
