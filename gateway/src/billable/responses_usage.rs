//! What metering reads from a Responses API answer forwarded byte for byte: the served model, token
//! usage of every kind (`input_tokens_details.cached_tokens`, `output_tokens_details.reasoning_tokens`),
//! how it ended (`completed`, the `incomplete_details.reason`, `failed` with its error code), the text
//! the client received (to estimate usage when a stream was cut before `response.completed`), and the
//! built-in tool calls (web search, file search, code interpreter, …) that are billed per call.

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// Output item types of tools that run at the provider and may be billed per call. Function calls,
/// custom tools and the tools the client runs itself (computer, shell, apply_patch) are not.
fn is_builtin_tool_call(kind: &str) -> bool {
    kind.ends_with("_call")
        && !matches!(
            kind,
            "function_call"
                | "custom_tool_call"
                | "computer_call"
                | "local_shell_call"
                | "shell_call"
                | "apply_patch_call"
        )
}

/// Token counts as the Responses API reports them (`input_tokens` includes the cached ones,
/// `output_tokens` the reasoning ones, like the call event).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponsesTokens {
    pub input: u64,
    pub cached: u64,
    pub cache_write: u64,
    pub output: u64,
    pub reasoning: u64,
}

/// Everything metering takes from one Responses answer, filled event by event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponsesMeta {
    pub response_id: Option<String>,
    pub model: Option<String>,
    pub usage: Option<ResponsesTokens>,
    /// `completed`, `max_output_tokens` / `content_filter` (incomplete), or `failed`.
    pub finish: Option<String>,
    /// The error code of a failed response or an `error` event.
    pub error: Option<String>,
    /// A terminal event (`response.completed`, `.incomplete`, `.failed`) or a whole body was seen.
    pub terminal: bool,
    /// Built-in tool calls by output item type.
    pub tool_calls: BTreeMap<String, u64>,
    /// Text, arguments and reasoning the client was sent.
    pub output_text: String,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    input_tokens_details: Option<InputDetails>,
    #[serde(default)]
    output_tokens_details: Option<OutputDetails>,
}

#[derive(Deserialize)]
struct InputDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    cache_write_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct OutputDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct Item {
    #[serde(rename = "type", default)]
    kind: String,
}

#[derive(Deserialize)]
struct ResponseObj {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    output: Option<Vec<Item>>,
    #[serde(default)]
    incomplete_details: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
}

/// One streamed event: only the fields metering looks at.
#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    response: Option<ResponseObj>,
    #[serde(default)]
    delta: Option<Value>,
    #[serde(default)]
    item: Option<Item>,
    #[serde(default)]
    code: Option<String>,
}

impl ResponsesMeta {
    fn absorb_response(&mut self, r: ResponseObj, terminal: bool) {
        if let Some(id) = r.id.filter(|i| !i.is_empty()) {
            self.response_id = Some(id);
        }
        if let Some(m) = r.model.filter(|m| !m.is_empty()) {
            self.model = Some(m);
        }
        if let Some(u) = r.usage {
            let input = u.input_tokens_details.as_ref();
            self.usage = Some(ResponsesTokens {
                input: u.input_tokens,
                cached: input.and_then(|d| d.cached_tokens).unwrap_or(0),
                cache_write: input.and_then(|d| d.cache_write_tokens).unwrap_or(0),
                output: u.output_tokens,
                reasoning: u.output_tokens_details.and_then(|d| d.reasoning_tokens).unwrap_or(0),
            });
        }
        if !terminal {
            return;
        }
        self.terminal = true;
        if let Some(output) = r.output {
            // The final output lists every item once: it replaces what streamed item events counted.
            self.tool_calls.clear();
            for item in output.iter().filter(|i| is_builtin_tool_call(&i.kind)) {
                *self.tool_calls.entry(item.kind.clone()).or_default() += 1;
            }
        }
        self.finish = match r.status.as_deref() {
            Some("incomplete") => Some(
                r.incomplete_details
                    .as_ref()
                    .and_then(|d| d.get("reason"))
                    .and_then(Value::as_str)
                    .unwrap_or("incomplete")
                    .to_string(),
            ),
            Some(s) => Some(s.to_string()),
            None => self.finish.take(),
        };
        if let Some(code) = r.error.as_ref().and_then(|e| e.get("code")).and_then(Value::as_str) {
            self.error = Some(code.to_string());
        }
    }

    /// One SSE `data:` payload of a Responses stream.
    pub fn absorb_event(&mut self, payload: &[u8]) {
        let Ok(ev) = serde_json::from_slice::<Event>(payload) else { return };
        match ev.kind.as_str() {
            "response.output_text.delta"
            | "response.refusal.delta"
            | "response.function_call_arguments.delta"
            | "response.custom_tool_call_input.delta"
            | "response.reasoning_text.delta"
            | "response.reasoning_summary_text.delta" => {
                if let Some(Value::String(d)) = &ev.delta {
                    self.output_text.push_str(d);
                }
            }
            "response.output_item.done" => {
                if let Some(item) = ev.item.filter(|i| is_builtin_tool_call(&i.kind)) {
                    *self.tool_calls.entry(item.kind).or_default() += 1;
                }
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                if let Some(r) = ev.response {
                    self.absorb_response(r, true);
                }
            }
            "error" => self.error = Some(ev.code.unwrap_or_else(|| "error".into())),
            _ => {
                if let Some(r) = ev.response {
                    self.absorb_response(r, false);
                }
            }
        }
    }

    /// A whole (non-stream) `response` object; false when the bytes are not one.
    pub fn absorb_whole(&mut self, body: &[u8]) -> bool {
        match serde_json::from_slice::<ResponseObj>(body) {
            Ok(r) if r.id.is_some() || r.status.is_some() => {
                self.absorb_response(r, true);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &[&str] = &[
        r#"{"type":"response.created","sequence_number":0,"response":{"id":"resp_1","object":"response","status":"in_progress","model":"gpt-4.1-2025-04-14","output":[],"usage":null}}"#,
        r#"{"type":"response.output_item.added","sequence_number":1,"output_index":0,"item":{"id":"ws_1","type":"web_search_call","status":"in_progress"}}"#,
        r#"{"type":"response.output_item.done","sequence_number":2,"output_index":0,"item":{"id":"ws_1","type":"web_search_call","status":"completed"}}"#,
        r#"{"type":"response.output_text.delta","sequence_number":3,"item_id":"msg_1","output_index":1,"content_index":0,"delta":"Hel","logprobs":[]}"#,
        r#"{"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_1","output_index":1,"content_index":0,"delta":"lo","logprobs":[]}"#,
        r#"{"type":"response.function_call_arguments.delta","sequence_number":5,"item_id":"fc_1","output_index":2,"delta":"{}"}"#,
        r#"{"type":"response.completed","sequence_number":6,"response":{"id":"resp_1","status":"completed","model":"gpt-4.1-2025-04-14","output":[{"type":"web_search_call"},{"type":"message"},{"type":"function_call"}],"usage":{"input_tokens":120,"input_tokens_details":{"cached_tokens":100},"output_tokens":40,"output_tokens_details":{"reasoning_tokens":25},"total_tokens":160}}}"#,
    ];

    #[test]
    fn a_stream_yields_usage_of_every_kind_and_tool_calls_once() {
        let mut m = ResponsesMeta::default();
        for p in STREAM {
            m.absorb_event(p.as_bytes());
        }
        assert!(m.terminal);
        assert_eq!(m.response_id.as_deref(), Some("resp_1"));
        assert_eq!(m.model.as_deref(), Some("gpt-4.1-2025-04-14"));
        assert_eq!(
            m.usage,
            Some(ResponsesTokens { input: 120, cached: 100, cache_write: 0, output: 40, reasoning: 25 })
        );
        assert_eq!(m.finish.as_deref(), Some("completed"));
        assert_eq!(m.output_text, "Hello{}");
        assert_eq!(m.tool_calls, BTreeMap::from([("web_search_call".to_string(), 1)]), "counted once, not twice");
    }

    #[test]
    fn a_cut_stream_keeps_what_it_saw_and_endings_are_told_apart() {
        let mut m = ResponsesMeta::default();
        for p in &STREAM[..5] {
            m.absorb_event(p.as_bytes());
        }
        assert!(!m.terminal && m.usage.is_none());
        assert_eq!(m.output_text, "Hello");
        assert_eq!(m.tool_calls.get("web_search_call"), Some(&1));

        let mut m = ResponsesMeta::default();
        m.absorb_event(br#"{"type":"response.incomplete","response":{"id":"r","status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"usage":{"input_tokens":5,"output_tokens":9}}}"#);
        assert_eq!((m.finish.as_deref(), m.usage.map(|u| u.output)), (Some("max_output_tokens"), Some(9)));
        let mut m = ResponsesMeta::default();
        m.absorb_event(br#"{"type":"response.failed","response":{"id":"r","status":"failed","error":{"code":"server_error","message":"x"}}}"#);
        assert_eq!((m.finish.as_deref(), m.error.as_deref()), (Some("failed"), Some("server_error")));
    }

    #[test]
    fn a_whole_body_is_read_like_the_final_event() {
        let mut m = ResponsesMeta::default();
        let body = br#"{"id":"resp_9","object":"response","status":"completed","model":"o3","output":[{"type":"file_search_call"},{"type":"file_search_call"},{"type":"computer_call"}],"usage":{"input_tokens":3,"input_tokens_details":{"cached_tokens":0},"output_tokens":2,"output_tokens_details":{"reasoning_tokens":1},"total_tokens":5}}"#;
        assert!(m.absorb_whole(body));
        assert_eq!(m.tool_calls, BTreeMap::from([("file_search_call".to_string(), 2)]));
        assert_eq!(m.usage.map(|u| (u.input, u.output, u.reasoning)), Some((3, 2, 1)));
        assert!(!ResponsesMeta::default().absorb_whole(b"[1,2]"));
    }
}
