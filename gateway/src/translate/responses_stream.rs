//! Streams translated into the Responses API's typed events for a client that called `/v1/responses`
//! on a model whose upstream speaks chat completions or Anthropic Messages. Each upstream event is
//! turned into Responses events as soon as it arrives (through [`ResponsesBuilder`]); the terminal
//! event waits for the upstream's own end (`[DONE]` after the usage chunk, `message_stop`), and an
//! upstream that ends early, or sends an error event, gives the client `response.failed`.

use super::responses_response::{
    responses_usage_from_anthropic, responses_usage_from_chat, ResponseEnd, ResponsesBuilder,
};
use bytes::BytesMut;
use serde_json::{Map, Value};
use std::collections::HashSet;

/// Error code of the `response.failed` a client gets when the upstream's stream stopped without an end.
const CUT_CODE: &str = "upstream_stream_ended";

/// A chat completions stream (OpenAI-format upstream) → Responses events.
pub struct ChatToResponses {
    b: ResponsesBuilder,
    end: Option<ResponseEnd>,
    usage: Option<Value>,
    /// Tool-call indexes already started.
    tools: HashSet<u64>,
}

impl ChatToResponses {
    /// `request` is the client's Responses request; `created_at` Unix seconds.
    pub fn new(request: &Value, created_at: u64) -> ChatToResponses {
        ChatToResponses { b: ResponsesBuilder::new(request, created_at), end: None, usage: None, tools: HashSet::new() }
    }

    pub fn on_data(&mut self, payload: &[u8], out: &mut BytesMut) {
        if self.b.is_done() {
            return;
        }
        if payload == b"[DONE]" {
            match self.end {
                Some(end) => {
                    self.b.finish(end, self.usage.as_ref(), out);
                }
                None => self.b.fail(
                    CUT_CODE,
                    "the upstream ended its stream without a finish reason",
                    self.usage.as_ref(),
                    out,
                ),
            }
            return;
        }
        let Ok(chunk) = serde_json::from_slice::<Value>(payload) else { return };
        if let Some(e) = chunk.get("error") {
            let code = e.get("code").or_else(|| e.get("type")).and_then(Value::as_str).unwrap_or("upstream_error");
            let message = e.get("message").and_then(Value::as_str).unwrap_or("the upstream provider returned an error");
            self.b.fail(code, message, self.usage.as_ref(), out);
            return;
        }
        let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
        self.b.start(&s(chunk.get("id")), &s(chunk.get("model")), out);
        if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
            self.usage = Some(responses_usage_from_chat(u));
        }
        let Some(choice) = chunk.pointer("/choices/0") else { return };
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        if let Some(r) = delta.get("reasoning_content").and_then(Value::as_str) {
            self.b.reasoning(r, out);
        }
        for key in ["content", "refusal"] {
            if let Some(t) = delta.get(key).and_then(Value::as_str) {
                self.b.text(t, out);
            }
        }
        for call in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
            let k = call.get("index").and_then(Value::as_u64).unwrap_or(0);
            let f = call.get("function").unwrap_or(&Value::Null);
            if self.tools.insert(k) {
                self.b.tool_start(k, &s(call.get("id")), &s(f.get("name")), out);
            }
            if let Some(args) = f.get("arguments").and_then(Value::as_str) {
                self.b.tool_args(k, args, out);
            }
        }
        if let Some(fr) = choice.get("finish_reason").and_then(Value::as_str) {
            self.end = Some(ResponseEnd::from_chat(fr));
        }
    }

    /// The upstream's body ended: a stream that had its finish reason but no `[DONE]` is complete.
    pub fn on_end(&mut self, out: &mut BytesMut) {
        if self.b.is_done() || !self.b.is_started() {
            return;
        }
        match self.end {
            Some(end) => {
                self.b.finish(end, self.usage.as_ref(), out);
            }
            None => self.b.fail(
                CUT_CODE,
                "the upstream's stream ended before the response was complete",
                self.usage.as_ref(),
                out,
            ),
        }
    }
}

/// An Anthropic Messages stream → Responses events.
pub struct AnthropicToResponses {
    b: ResponsesBuilder,
    end: Option<ResponseEnd>,
    /// Latest value of each Anthropic usage field (later events carry cumulative counts).
    usage: Map<String, Value>,
}

impl AnthropicToResponses {
    pub fn new(request: &Value, created_at: u64) -> AnthropicToResponses {
        AnthropicToResponses { b: ResponsesBuilder::new(request, created_at), end: None, usage: Map::new() }
    }

    fn take_usage(&mut self, u: Option<&Value>) {
        for (k, v) in u.and_then(Value::as_object).into_iter().flatten() {
            if v.is_u64() {
                self.usage.insert(k.clone(), v.clone());
            }
        }
    }

    fn usage(&self) -> Option<Value> {
        (!self.usage.is_empty()).then(|| responses_usage_from_anthropic(&Value::Object(self.usage.clone())))
    }

    pub fn on_data(&mut self, payload: &[u8], out: &mut BytesMut) {
        if self.b.is_done() {
            return;
        }
        let Ok(ev) = serde_json::from_slice::<Value>(payload) else { return };
        let index = ev.get("index").and_then(Value::as_u64).unwrap_or(0);
        let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
        match ev.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                let m = ev.get("message").unwrap_or(&Value::Null);
                self.b.start(&s(m.get("id")), &s(m.get("model")), out);
                self.take_usage(m.get("usage"));
            }
            Some("content_block_start") => {
                let block = ev.get("content_block").unwrap_or(&Value::Null);
                match block.get("type").and_then(Value::as_str) {
                    Some("tool_use") => self.b.tool_start(index, &s(block.get("id")), &s(block.get("name")), out),
                    Some("text") => self.b.text(&s(block.get("text")), out),
                    Some("thinking") => self.b.reasoning(&s(block.get("thinking")), out),
                    _ => {}
                }
            }
            Some("content_block_delta") => {
                let d = ev.get("delta").unwrap_or(&Value::Null);
                match d.get("type").and_then(Value::as_str) {
                    Some("text_delta") => self.b.text(&s(d.get("text")), out),
                    Some("thinking_delta") => self.b.reasoning(&s(d.get("thinking")), out),
                    Some("input_json_delta") => self.b.tool_args(index, &s(d.get("partial_json")), out),
                    _ => {}
                }
            }
            Some("content_block_stop") => self.b.close_open(out),
            Some("message_delta") => {
                self.take_usage(ev.get("usage"));
                if let Some(r) = ev.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.end = Some(ResponseEnd::from_anthropic(r));
                }
            }
            Some("message_stop") => {
                let usage = self.usage();
                self.b.finish(self.end.unwrap_or(ResponseEnd::Completed), usage.as_ref(), out);
            }
            Some("error") => {
                let e = ev.get("error").unwrap_or(&Value::Null);
                let code = e.get("type").and_then(Value::as_str).unwrap_or("api_error");
                let message =
                    e.get("message").and_then(Value::as_str).unwrap_or("the upstream provider returned an error");
                let usage = self.usage();
                self.b.fail(code, message, usage.as_ref(), out);
            }
            // ping, and event types added later.
            _ => {}
        }
    }

    pub fn on_end(&mut self, out: &mut BytesMut) {
        if self.b.is_done() || !self.b.is_started() {
            return;
        }
        let usage = self.usage();
        self.b.fail(CUT_CODE, "the upstream's stream ended before the response was complete", usage.as_ref(), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// (event name, data) of each SSE event; checks that `event:` matches the data's `type`.
    fn events(out: &BytesMut) -> Vec<Value> {
        let text = std::str::from_utf8(out).unwrap();
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let mut lines = e.lines();
                let name = lines.next().unwrap().strip_prefix("event: ").unwrap();
                let data: Value = serde_json::from_str(lines.next().unwrap().strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(data["type"], name);
                data
            })
            .collect()
    }

    fn kinds(ev: &[Value]) -> Vec<&str> {
        ev.iter().map(|e| e["type"].as_str().unwrap()).collect()
    }

    #[test]
    fn chat_chunks_become_typed_events_with_usage_at_the_end() {
        let mut t = ChatToResponses::new(&json!({"model": "llama-3", "input": "hi"}), 5);
        let mut out = BytesMut::new();
        for p in [
            r#"{"id":"c1","model":"llama-3","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"id":"c1","model":"llama-3","choices":[{"index":0,"delta":{"content":"Hel"}}]}"#,
            r#"{"id":"c1","model":"llama-3","choices":[{"index":0,"delta":{"content":"lo"}}]}"#,
            r#"{"id":"c1","model":"llama-3","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]}}]}"#,
            r#"{"id":"c1","model":"llama-3","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":"}}]}}]}"#,
            r#"{"id":"c1","model":"llama-3","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]}}]}"#,
            r#"{"id":"c1","model":"llama-3","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
            r#"{"id":"c1","model":"llama-3","choices":[],"usage":{"prompt_tokens":11,"completion_tokens":6}}"#,
            "[DONE]",
        ] {
            t.on_data(p.as_bytes(), &mut out);
        }
        t.on_end(&mut out);
        let ev = events(&out);
        assert_eq!(
            kinds(&ev),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed"
            ]
        );
        let seqs: Vec<u64> = ev.iter().map(|e| e["sequence_number"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (0..ev.len() as u64).collect::<Vec<_>>());
        assert_eq!(ev[0]["response"]["id"], "resp_c1");
        assert_eq!(ev[0]["response"]["status"], "in_progress");
        assert_eq!(ev[6]["text"], "Hello");
        assert_eq!(ev[9]["item"]["call_id"], "call_1");
        assert_eq!(ev[12]["arguments"], "{\"a\":1}");
        let done = &ev[14]["response"];
        assert_eq!(done["status"], "completed");
        assert_eq!(done["output"][1]["arguments"], "{\"a\":1}");
        assert_eq!(done["usage"]["input_tokens"], 11);
        assert_eq!(done["usage"]["output_tokens"], 6);
    }

    #[test]
    fn anthropic_events_become_typed_events_and_a_cut_fails_the_response() {
        let req = json!({"model": "claude-x", "input": "hi"});
        let feed = |t: &mut AnthropicToResponses, n: usize| {
            let mut out = BytesMut::new();
            for p in [
                r#"{"type":"message_start","message":{"id":"msg_1","model":"claude-x","usage":{"input_tokens":10,"cache_read_input_tokens":5,"output_tokens":1}}}"#,
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}"#,
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}"#,
                r#"{"type":"content_block_stop","index":0}"#,
                r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"f","input":{}}}"#,
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a\":1}"}}"#,
                r#"{"type":"content_block_stop","index":1}"#,
                r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":12}}"#,
                r#"{"type":"message_stop"}"#,
            ]
            .iter()
            .take(n)
            {
                t.on_data(p.as_bytes(), &mut out);
            }
            t.on_end(&mut out);
            events(&out)
        };
        let mut t = AnthropicToResponses::new(&req, 1);
        let ev = feed(&mut t, 9);
        let last = ev.last().unwrap();
        assert_eq!(last["type"], "response.completed");
        assert_eq!(last["response"]["output"][0]["type"], "reasoning");
        assert_eq!(last["response"]["output"][1]["name"], "f");
        assert_eq!(last["response"]["output"][1]["arguments"], "{\"a\":1}");
        assert_eq!(last["response"]["usage"]["input_tokens"], 15);
        assert_eq!(last["response"]["usage"]["output_tokens"], 12);
        assert!(kinds(&ev).contains(&"response.reasoning_text.delta"));

        let mut t = AnthropicToResponses::new(&req, 1);
        let ev = feed(&mut t, 6);
        let last = ev.last().unwrap();
        assert_eq!(last["type"], "response.failed");
        assert_eq!(last["response"]["error"]["code"], CUT_CODE);
        assert_eq!(last["response"]["output"][1]["status"], "incomplete");
        assert_eq!(ev.iter().filter(|e| e["type"] == "response.failed").count(), 1);
    }

    #[test]
    fn an_upstream_error_event_fails_the_response_once() {
        let mut t = AnthropicToResponses::new(&json!({"model": "c"}), 1);
        let mut out = BytesMut::new();
        t.on_data(br#"{"type":"message_start","message":{"id":"m","model":"c","usage":{"input_tokens":3}}}"#, &mut out);
        t.on_data(br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#, &mut out);
        t.on_data(br#"{"type":"message_stop"}"#, &mut out);
        t.on_end(&mut out);
        let ev = events(&out);
        assert_eq!(kinds(&ev), ["response.created", "response.in_progress", "response.failed"]);
        assert_eq!(ev[2]["response"]["error"], json!({"code": "overloaded_error", "message": "Overloaded"}));
    }
}
