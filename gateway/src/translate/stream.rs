//! Streams translated event by event: an upstream's SSE `data:` payloads in, the client's SSE bytes out.
//! Each translator keeps just the state the target format needs (which content block is open, which
//! tool call a block is, the usage seen so far) and writes its output as soon as an input event arrives,
//! so a translated stream is as incremental as the upstream's.

use super::response::{anthropic_usage_from_openai, finish_reason_from_anthropic, stop_reason_from_openai};
use bytes::{BufMut, BytesMut};
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// Translates one stream; `on_data` per upstream `data:` payload, `on_end` when the upstream's body ended.
pub enum StreamTranslator {
    /// An Anthropic upstream's events for an OpenAI client.
    AnthropicToOpenAi(AnthropicToOpenAi),
    /// An OpenAI-format upstream's chunks for an Anthropic client.
    OpenAiToAnthropic(OpenAiToAnthropic),
    /// An OpenAI-format upstream's chunks for a Responses API client.
    ChatToResponses(super::responses_stream::ChatToResponses),
    /// An Anthropic upstream's events for a Responses API client.
    AnthropicToResponses(super::responses_stream::AnthropicToResponses),
}

impl StreamTranslator {
    pub fn anthropic_to_openai(include_usage: bool, created: u64) -> StreamTranslator {
        StreamTranslator::AnthropicToOpenAi(AnthropicToOpenAi {
            include_usage,
            created,
            id: String::new(),
            model: String::new(),
            tool_of_block: HashMap::new(),
            next_tool: 0,
            usage: Map::new(),
            done: false,
        })
    }

    pub fn openai_to_anthropic() -> StreamTranslator {
        StreamTranslator::OpenAiToAnthropic(OpenAiToAnthropic {
            started: false,
            open: None,
            next_block: 0,
            stop_reason: None,
            usage: None,
            done: false,
        })
    }

    pub fn on_data(&mut self, payload: &[u8], out: &mut BytesMut) {
        match self {
            StreamTranslator::AnthropicToOpenAi(t) => t.on_data(payload, out),
            StreamTranslator::OpenAiToAnthropic(t) => t.on_data(payload, out),
            StreamTranslator::ChatToResponses(t) => t.on_data(payload, out),
            StreamTranslator::AnthropicToResponses(t) => t.on_data(payload, out),
        }
    }

    pub fn on_end(&mut self, out: &mut BytesMut) {
        match self {
            StreamTranslator::AnthropicToOpenAi(_) => {}
            StreamTranslator::OpenAiToAnthropic(t) => t.close(out),
            StreamTranslator::ChatToResponses(t) => t.on_end(out),
            StreamTranslator::AnthropicToResponses(t) => t.on_end(out),
        }
    }
}

fn write_data(out: &mut BytesMut, v: &Value) {
    out.put_slice(b"data: ");
    out.put_slice(v.to_string().as_bytes());
    out.put_slice(b"\n\n");
}

fn write_event(out: &mut BytesMut, kind: &str, v: &Value) {
    out.put_slice(b"event: ");
    out.put_slice(kind.as_bytes());
    out.put_slice(b"\n");
    write_data(out, v);
}

pub struct AnthropicToOpenAi {
    include_usage: bool,
    created: u64,
    id: String,
    model: String,
    /// Anthropic content-block index → OpenAI tool-call index.
    tool_of_block: HashMap<u64, u64>,
    next_tool: u64,
    /// Latest value of each Anthropic usage field (message_delta's counts are cumulative, so a later
    /// value replaces an earlier one rather than adding to it).
    usage: Map<String, Value>,
    done: bool,
}

impl AnthropicToOpenAi {
    fn chunk(&self, out: &mut BytesMut, delta: Value, finish: Option<&str>) {
        write_data(
            out,
            &json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
            }),
        );
    }

    fn take_usage(&mut self, u: Option<&Value>) {
        for (k, v) in u.and_then(Value::as_object).into_iter().flatten() {
            if v.is_u64() {
                self.usage.insert(k.clone(), v.clone());
            }
        }
    }

    fn on_data(&mut self, payload: &[u8], out: &mut BytesMut) {
        if self.done {
            return;
        }
        let Ok(ev) = serde_json::from_slice::<Value>(payload) else { return };
        let index = ev.get("index").and_then(Value::as_u64).unwrap_or(0);
        match ev.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                let m = ev.get("message").unwrap_or(&Value::Null);
                self.id = m.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
                self.model = m.get("model").and_then(Value::as_str).unwrap_or_default().to_string();
                self.take_usage(m.get("usage"));
                self.chunk(out, json!({"role": "assistant", "content": ""}), None);
            }
            Some("content_block_start") => {
                let b = ev.get("content_block").unwrap_or(&Value::Null);
                match b.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        let k = self.next_tool;
                        self.next_tool += 1;
                        self.tool_of_block.insert(index, k);
                        let call = json!({"index": k, "id": b.get("id"), "type": "function",
                            "function": {"name": b.get("name"), "arguments": ""}});
                        self.chunk(out, json!({"tool_calls": [call]}), None);
                    }
                    Some("text") => {
                        if let Some(t) = b.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                            self.chunk(out, json!({"content": t}), None);
                        }
                    }
                    _ => {}
                }
            }
            Some("content_block_delta") => {
                let d = ev.get("delta").unwrap_or(&Value::Null);
                match d.get("type").and_then(Value::as_str) {
                    Some("text_delta") => self.chunk(out, json!({"content": d.get("text")}), None),
                    Some("thinking_delta") => self.chunk(out, json!({"reasoning_content": d.get("thinking")}), None),
                    Some("input_json_delta") => {
                        let k = self.tool_of_block.get(&index).copied().unwrap_or(0);
                        let call = json!({"index": k, "function": {"arguments": d.get("partial_json")}});
                        self.chunk(out, json!({"tool_calls": [call]}), None);
                    }
                    _ => {}
                }
            }
            Some("message_delta") => {
                self.take_usage(ev.get("usage"));
                let stop = ev.pointer("/delta/stop_reason").and_then(Value::as_str).unwrap_or("end_turn");
                self.chunk(out, json!({}), Some(finish_reason_from_anthropic(stop)));
            }
            Some("message_stop") => {
                if self.include_usage {
                    let usage = super::response::openai_usage_from_anthropic(&Value::Object(self.usage.clone()));
                    write_data(
                        out,
                        &json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                            "model": self.model, "choices": [], "usage": usage}),
                    );
                }
                out.put_slice(b"data: [DONE]\n\n");
                self.done = true;
            }
            Some("error") => {
                let e = ev.get("error").unwrap_or(&Value::Null);
                let kind = e.get("type").and_then(Value::as_str).unwrap_or("api_error");
                write_data(
                    out,
                    &json!({"error": {"message": e.get("message"), "type": kind, "param": null, "code": kind}}),
                );
                self.done = true;
            }
            // ping, content_block_stop, and event types added later.
            _ => {}
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    Thinking,
    /// The OpenAI tool-call index this tool_use block carries.
    Tool(u64),
}

pub struct OpenAiToAnthropic {
    started: bool,
    /// The open content block and its Anthropic index.
    open: Option<(Block, u64)>,
    next_block: u64,
    stop_reason: Option<&'static str>,
    usage: Option<Value>,
    done: bool,
}

impl OpenAiToAnthropic {
    fn start(&mut self, chunk: &Value, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        let message = json!({
            "id": chunk.get("id"), "type": "message", "role": "assistant", "model": chunk.get("model"),
            "content": [], "stop_reason": null, "stop_sequence": null,
            // OpenAI reports usage only at the end; the real counts go in message_delta.
            "usage": {"input_tokens": 0, "output_tokens": 0}
        });
        write_event(out, "message_start", &json!({"type": "message_start", "message": message}));
    }

    fn close_block(&mut self, out: &mut BytesMut) {
        if let Some((_, index)) = self.open.take() {
            write_event(out, "content_block_stop", &json!({"type": "content_block_stop", "index": index}));
        }
    }

    /// Makes `kind` the open block, closing the previous one; returns its index.
    fn open_block(&mut self, kind: Block, start: Value, out: &mut BytesMut) -> u64 {
        if let Some((open, index)) = self.open {
            if open == kind {
                return index;
            }
        }
        self.close_block(out);
        let index = self.next_block;
        self.next_block += 1;
        self.open = Some((kind, index));
        write_event(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": start}),
        );
        index
    }

    fn delta(out: &mut BytesMut, index: u64, delta: Value) {
        write_event(
            out,
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index, "delta": delta}),
        );
    }

    fn on_data(&mut self, payload: &[u8], out: &mut BytesMut) {
        if self.done {
            return;
        }
        if payload == b"[DONE]" {
            self.close(out);
            return;
        }
        let Ok(chunk) = serde_json::from_slice::<Value>(payload) else { return };
        if let Some(e) = chunk.get("error") {
            let status_kind = e.get("type").and_then(Value::as_str).unwrap_or("api_error");
            let kind = if status_kind == "server_error" { "api_error" } else { status_kind };
            write_event(out, "error", &json!({"type": "error", "error": {"type": kind, "message": e.get("message")}}));
            self.done = true;
            return;
        }
        self.start(&chunk, out);
        if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
            self.usage = Some(anthropic_usage_from_openai(u));
        }
        let Some(choice) = chunk.pointer("/choices/0") else { return };
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        if let Some(r) = delta.get("reasoning_content").and_then(Value::as_str).filter(|r| !r.is_empty()) {
            let i = self.open_block(Block::Thinking, json!({"type": "thinking", "thinking": ""}), out);
            Self::delta(out, i, json!({"type": "thinking_delta", "thinking": r}));
        }
        for key in ["content", "refusal"] {
            if let Some(t) = delta.get(key).and_then(Value::as_str).filter(|t| !t.is_empty()) {
                let i = self.open_block(Block::Text, json!({"type": "text", "text": ""}), out);
                Self::delta(out, i, json!({"type": "text_delta", "text": t}));
            }
        }
        for call in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
            let k = call.get("index").and_then(Value::as_u64).unwrap_or(0);
            let f = call.get("function").unwrap_or(&Value::Null);
            let start = json!({"type": "tool_use", "id": call.get("id"), "name": f.get("name"), "input": {}});
            let i = self.open_block(Block::Tool(k), start, out);
            if let Some(args) = f.get("arguments").and_then(Value::as_str).filter(|a| !a.is_empty()) {
                Self::delta(out, i, json!({"type": "input_json_delta", "partial_json": args}));
            }
        }
        if let Some(fr) = choice.get("finish_reason").and_then(Value::as_str) {
            self.stop_reason = Some(stop_reason_from_openai(fr));
        }
    }

    /// Closes the message: the open block, `message_delta` with the stop reason and the usage, and
    /// `message_stop`. Called at `[DONE]`, or at the end of a body that had none.
    fn close(&mut self, out: &mut BytesMut) {
        if self.done || !self.started {
            return;
        }
        self.done = true;
        self.close_block(out);
        let usage = self.usage.take().unwrap_or_else(|| json!({"output_tokens": 0}));
        write_event(
            out,
            "message_delta",
            &json!({"type": "message_delta",
                "delta": {"stop_reason": self.stop_reason.unwrap_or("end_turn"), "stop_sequence": null},
                "usage": usage}),
        );
        write_event(out, "message_stop", &json!({"type": "message_stop"}));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(t: &mut StreamTranslator, payloads: &[&str]) -> String {
        let mut out = BytesMut::new();
        for p in payloads {
            t.on_data(p.as_bytes(), &mut out);
        }
        t.on_end(&mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    fn data(s: &str) -> Vec<Value> {
        s.split("\n\n")
            .filter(|e| !e.is_empty())
            .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
            .map(|d| serde_json::from_str(d).unwrap_or(Value::String(d.to_string())))
            .collect()
    }

    #[test]
    fn anthropic_tool_stream_becomes_openai_chunks() {
        let mut t = StreamTranslator::anthropic_to_openai(true, 9);
        let out = run(
            &mut t,
            &[
                r#"{"type":"message_start","message":{"id":"msg_1","model":"claude-x","usage":{"input_tokens":10,"cache_read_input_tokens":5,"output_tokens":1}}}"#,
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
                r#"{"type":"ping"}"#,
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
                r#"{"type":"content_block_stop","index":0}"#,
                r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"f","input":{}}}"#,
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}"#,
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"1}"}}"#,
                r#"{"type":"content_block_stop","index":1}"#,
                r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":12}}"#,
                r#"{"type":"message_stop"}"#,
            ],
        );
        let ev = data(&out);
        assert_eq!(ev.len(), 8, "{out}");
        assert_eq!(ev[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(ev[1]["choices"][0]["delta"]["content"], "Hi");
        assert_eq!(ev[2]["choices"][0]["delta"]["tool_calls"][0]["id"], "toolu_1");
        let args: String = ev[3..5]
            .iter()
            .map(|e| e["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(args, "{\"a\":1}");
        assert_eq!(ev[5]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(ev[6]["usage"]["prompt_tokens"], 15);
        assert_eq!(ev[6]["usage"]["completion_tokens"], 12, "message_delta's count replaces message_start's");
        assert_eq!(ev[7], Value::String("[DONE]".into()));
    }

    #[test]
    fn openai_tool_stream_becomes_anthropic_events() {
        let mut t = StreamTranslator::openai_to_anthropic();
        let out = run(
            &mut t,
            &[
                r#"{"id":"c1","model":"gpt-x","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
                r#"{"id":"c1","model":"gpt-x","choices":[{"index":0,"delta":{"content":"Sure"}}]}"#,
                r#"{"id":"c1","model":"gpt-x","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]}}]}"#,
                r#"{"id":"c1","model":"gpt-x","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":1}"}}]}}]}"#,
                r#"{"id":"c1","model":"gpt-x","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
                r#"{"id":"c1","model":"gpt-x","choices":[],"usage":{"prompt_tokens":20,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens":8}}}"#,
                "[DONE]",
            ],
        );
        let kinds: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
        assert_eq!(
            kinds,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let ev = data(&out);
        assert_eq!(ev[4]["content_block"], json!({"type": "tool_use", "id": "call_1", "name": "f", "input": {}}));
        assert_eq!(ev[5]["delta"], json!({"type": "input_json_delta", "partial_json": "{\"a\":1}"}));
        assert_eq!(ev[7]["delta"]["stop_reason"], "tool_use");
        assert_eq!(
            ev[7]["usage"],
            json!({"input_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 8, "output_tokens": 4})
        );
        // Nothing more after the message is closed, even if the body ends later.
        let mut more = BytesMut::new();
        t.on_end(&mut more);
        assert!(more.is_empty());
    }
}
