//! Responses API answers built from an upstream that does not speak it: a [`ResponsesBuilder`] takes
//! content as it arrives (text, reasoning text, function calls and their argument pieces) and writes the
//! Responses stream's typed events (`response.created`, `response.output_item.added`,
//! `response.output_text.delta`, `response.function_call_arguments.delta`, …, then exactly one of
//! `response.completed`, `response.incomplete`, `response.failed`), and can render the whole `response`
//! object at any point. Stream translators (`responses_stream`) and the whole-body translations below
//! drive it, so a streamed and a whole answer from the same upstream reply are the same response.

use bytes::{BufMut, BytesMut};
use serde_json::{json, Map, Value};

/// How a response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseEnd {
    Completed,
    /// `incomplete_details.reason`: `max_output_tokens` or `content_filter`.
    Incomplete(&'static str),
}

impl ResponseEnd {
    /// From a chat completions `finish_reason`.
    pub fn from_chat(finish_reason: &str) -> ResponseEnd {
        match finish_reason {
            "length" => ResponseEnd::Incomplete("max_output_tokens"),
            "content_filter" => ResponseEnd::Incomplete("content_filter"),
            _ => ResponseEnd::Completed,
        }
    }

    /// From an Anthropic `stop_reason`.
    pub fn from_anthropic(stop_reason: &str) -> ResponseEnd {
        match stop_reason {
            "max_tokens" | "model_context_window_exceeded" => ResponseEnd::Incomplete("max_output_tokens"),
            "refusal" => ResponseEnd::Incomplete("content_filter"),
            _ => ResponseEnd::Completed,
        }
    }
}

/// Responses usage from a chat completions usage object.
pub fn responses_usage_from_chat(u: &Value) -> Value {
    let n = |p: &str| u.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    usage(
        n("/prompt_tokens"),
        n("/prompt_tokens_details/cached_tokens"),
        0,
        n("/completion_tokens"),
        n("/completion_tokens_details/reasoning_tokens"),
    )
}

/// Responses usage from Anthropic usage (whose `input_tokens` excludes cache reads and writes).
pub fn responses_usage_from_anthropic(u: &Value) -> Value {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let (read, write) = (n("cache_read_input_tokens"), n("cache_creation_input_tokens"));
    usage(n("input_tokens") + read + write, read, write, n("output_tokens"), 0)
}

fn usage(input: u64, cached: u64, cache_write: u64, output: u64, reasoning: u64) -> Value {
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": cache_write},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input + output
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Message,
    Reasoning,
    Call { call_id: String, name: String },
}

#[derive(Debug)]
struct Item {
    id: String,
    kind: Kind,
    /// The upstream's index for this piece (chat tool-call index, Anthropic block index).
    key: Option<u64>,
    text: String,
    closed: bool,
    status: &'static str,
}

impl Item {
    fn json(&self, status: &str) -> Value {
        match &self.kind {
            Kind::Message => json!({
                "id": self.id, "type": "message", "status": status, "role": "assistant",
                "content": if status == "in_progress" { json!([]) } else { json!([self.part()]) }
            }),
            Kind::Reasoning => json!({
                "id": self.id, "type": "reasoning", "summary": [],
                "content": if status == "in_progress" { json!([]) } else { json!([self.part()]) }
            }),
            Kind::Call { call_id, name } => json!({
                "id": self.id, "type": "function_call", "status": status, "call_id": call_id, "name": name,
                "arguments": if status == "in_progress" { "" } else { self.text.as_str() }
            }),
        }
    }

    fn part(&self) -> Value {
        match self.kind {
            Kind::Reasoning => json!({"type": "reasoning_text", "text": self.text}),
            _ => json!({"type": "output_text", "text": self.text, "annotations": [], "logprobs": []}),
        }
    }
}

/// Request fields a `response` object echoes, with the API's defaults.
const ECHOED: &[(&str, fn() -> Value)] = &[
    ("instructions", || Value::Null),
    ("max_output_tokens", || Value::Null),
    ("metadata", || json!({})),
    ("parallel_tool_calls", || json!(true)),
    ("reasoning", || json!({"effort": null, "summary": null})),
    ("temperature", || json!(1.0)),
    ("text", || json!({"format": {"type": "text"}})),
    ("tool_choice", || json!("auto")),
    ("tools", || json!([])),
    ("top_p", || json!(1.0)),
    ("user", || Value::Null),
];

/// Builds one response from upstream content, writing stream events as it goes.
pub struct ResponsesBuilder {
    id: String,
    model: String,
    created_at: u64,
    echo: Map<String, Value>,
    seq: u64,
    started: bool,
    done: bool,
    items: Vec<Item>,
    open: Option<usize>,
}

impl ResponsesBuilder {
    /// `request` is the client's Responses request (for the fields a response echoes).
    pub fn new(request: &Value, created_at: u64) -> ResponsesBuilder {
        let mut echo = Map::new();
        for (k, default) in ECHOED {
            let v = request.get(*k).filter(|v| !v.is_null()).cloned().unwrap_or_else(default);
            echo.insert((*k).to_string(), v);
        }
        ResponsesBuilder {
            id: String::new(),
            model: request.get("model").and_then(Value::as_str).unwrap_or_default().to_string(),
            created_at,
            echo,
            seq: 0,
            started: false,
            done: false,
            items: Vec::new(),
            open: None,
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    pub fn is_started(&self) -> bool {
        self.started
    }

    fn event(&mut self, out: &mut BytesMut, mut v: Value) {
        let kind = v.get("type").and_then(Value::as_str).unwrap_or("unknown").to_string();
        if let Some(o) = v.as_object_mut() {
            o.insert("sequence_number".into(), json!(self.seq));
        }
        self.seq += 1;
        out.put_slice(b"event: ");
        out.put_slice(kind.as_bytes());
        out.put_slice(b"\ndata: ");
        out.put_slice(v.to_string().as_bytes());
        out.put_slice(b"\n\n");
    }

    /// The `response` object in its current state.
    pub fn response(
        &self,
        status: &str,
        usage: Option<&Value>,
        incomplete: Option<&str>,
        error: Option<Value>,
    ) -> Value {
        let output: Vec<Value> = self
            .items
            .iter()
            .filter(|i| status != "in_progress" || i.closed)
            .map(|i| i.json(if i.closed { i.status } else { status }))
            .collect();
        let mut r = json!({
            "id": self.id, "object": "response", "created_at": self.created_at, "status": status,
            "background": false, "error": error, "incomplete_details": incomplete.map(|reason| json!({"reason": reason})),
            "model": self.model, "output": output, "previous_response_id": null, "store": false,
            "truncation": "disabled", "usage": usage
        });
        if let Some(o) = r.as_object_mut() {
            for (k, v) in &self.echo {
                o.insert(k.clone(), v.clone());
            }
        }
        r
    }

    /// `response.created` and `response.in_progress`, once; `id` is the upstream's id for this reply.
    pub fn start(&mut self, id: &str, model: &str, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        self.id = if id.starts_with("resp_") { id.to_string() } else { format!("resp_{id}") };
        if !model.is_empty() {
            self.model = model.to_string();
        }
        let r = self.response("in_progress", None, None, None);
        self.event(out, json!({"type": "response.created", "response": r}));
        self.event(out, json!({"type": "response.in_progress", "response": r}));
    }

    fn close(&mut self, i: usize, status: &'static str, out: &mut BytesMut) {
        let Some(item) = self.items.get_mut(i) else { return };
        if item.closed {
            return;
        }
        item.closed = true;
        item.status = status;
        let (id, part, done) = (item.id.clone(), item.part(), item.json(status));
        let text = item.text.clone();
        match &item.kind {
            Kind::Message => {
                self.event(
                    out,
                    json!({"type": "response.output_text.done", "item_id": id, "output_index": i,
                    "content_index": 0, "text": text, "logprobs": []}),
                );
                self.event(
                    out,
                    json!({"type": "response.content_part.done", "item_id": id, "output_index": i,
                    "content_index": 0, "part": part}),
                );
            }
            Kind::Reasoning => {
                self.event(
                    out,
                    json!({"type": "response.reasoning_text.done", "item_id": id, "output_index": i,
                    "content_index": 0, "text": text}),
                );
                self.event(
                    out,
                    json!({"type": "response.content_part.done", "item_id": id, "output_index": i,
                    "content_index": 0, "part": part}),
                );
            }
            Kind::Call { name, .. } => {
                let name = name.clone();
                self.event(
                    out,
                    json!({"type": "response.function_call_arguments.done", "item_id": id,
                    "output_index": i, "name": name, "arguments": text}),
                );
            }
        }
        self.event(out, json!({"type": "response.output_item.done", "output_index": i, "item": done}));
        if self.open == Some(i) {
            self.open = None;
        }
    }

    /// Closes the open item (the upstream ended the block it came from).
    pub fn close_open(&mut self, out: &mut BytesMut) {
        if let Some(i) = self.open {
            self.close(i, "completed", out);
        }
    }

    fn open_item(&mut self, kind: Kind, key: Option<u64>, out: &mut BytesMut) -> usize {
        if let Some(i) = self.open {
            if self.items[i].kind == kind && self.items[i].key == key {
                return i;
            }
        }
        self.close_open(out);
        let i = self.items.len();
        let prefix = match kind {
            Kind::Message => "msg",
            Kind::Reasoning => "rs",
            Kind::Call { .. } => "fc",
        };
        let id = format!("{prefix}_{i}_{}", self.id.trim_start_matches("resp_"));
        self.items.push(Item { id: id.clone(), kind, key, text: String::new(), closed: false, status: "in_progress" });
        self.open = Some(i);
        let added = self.items[i].json("in_progress");
        self.event(out, json!({"type": "response.output_item.added", "output_index": i, "item": added}));
        match self.items[i].kind {
            Kind::Message => {
                let part = json!({"type": "output_text", "text": "", "annotations": [], "logprobs": []});
                self.event(
                    out,
                    json!({"type": "response.content_part.added", "item_id": id, "output_index": i,
                    "content_index": 0, "part": part}),
                );
            }
            Kind::Reasoning => {
                let part = json!({"type": "reasoning_text", "text": ""});
                self.event(
                    out,
                    json!({"type": "response.content_part.added", "item_id": id, "output_index": i,
                    "content_index": 0, "part": part}),
                );
            }
            Kind::Call { .. } => {}
        }
        i
    }

    /// Answer text.
    pub fn text(&mut self, s: &str, out: &mut BytesMut) {
        if s.is_empty() || self.done {
            return;
        }
        let i = self.open_item(Kind::Message, None, out);
        self.items[i].text.push_str(s);
        let id = self.items[i].id.clone();
        self.event(
            out,
            json!({"type": "response.output_text.delta", "item_id": id, "output_index": i,
            "content_index": 0, "delta": s, "logprobs": []}),
        );
    }

    /// Reasoning text (Anthropic thinking, `reasoning_content` of chat servers).
    pub fn reasoning(&mut self, s: &str, out: &mut BytesMut) {
        if s.is_empty() || self.done {
            return;
        }
        let i = self.open_item(Kind::Reasoning, None, out);
        self.items[i].text.push_str(s);
        let id = self.items[i].id.clone();
        self.event(
            out,
            json!({"type": "response.reasoning_text.delta", "item_id": id, "output_index": i,
            "content_index": 0, "delta": s}),
        );
    }

    /// A function call begins; `key` identifies it in later [`tool_args`](Self::tool_args).
    pub fn tool_start(&mut self, key: u64, call_id: &str, name: &str, out: &mut BytesMut) {
        if self.done {
            return;
        }
        let kind = Kind::Call { call_id: call_id.to_string(), name: name.to_string() };
        self.open_item(kind, Some(key), out);
    }

    /// A piece of a function call's arguments.
    pub fn tool_args(&mut self, key: u64, s: &str, out: &mut BytesMut) {
        if s.is_empty() || self.done {
            return;
        }
        let found = self.items.iter().rposition(|it| it.key == Some(key) && matches!(it.kind, Kind::Call { .. }));
        let Some(i) = found else { return };
        if self.items[i].closed {
            return;
        }
        self.items[i].text.push_str(s);
        let id = self.items[i].id.clone();
        self.event(
            out,
            json!({"type": "response.function_call_arguments.delta", "item_id": id,
            "output_index": i, "delta": s}),
        );
    }

    /// Closes every item and writes `response.completed` or `response.incomplete`.
    pub fn finish(&mut self, end: ResponseEnd, usage: Option<&Value>, out: &mut BytesMut) -> Value {
        let (status, event, reason) = match end {
            ResponseEnd::Completed => ("completed", "response.completed", None),
            ResponseEnd::Incomplete(r) => ("incomplete", "response.incomplete", Some(r)),
        };
        for i in 0..self.items.len() {
            self.close(i, status, out);
        }
        self.done = true;
        let r = self.response(status, usage, reason, None);
        self.event(out, json!({"type": event, "response": r}));
        r
    }

    /// Writes `response.failed` with the error (what a stream gets when the upstream fails mid-way).
    pub fn fail(&mut self, code: &str, message: &str, usage: Option<&Value>, out: &mut BytesMut) {
        if self.done {
            return;
        }
        if !self.started {
            self.start("failed", "", out);
        }
        for i in 0..self.items.len() {
            self.close(i, "incomplete", out);
        }
        self.done = true;
        let r = self.response("failed", usage, None, Some(json!({"code": code, "message": message})));
        self.event(out, json!({"type": "response.failed", "response": r}));
    }
}

/// A whole chat completion → a whole Responses `response`.
pub fn chat_to_responses(resp: &Value, request: &Value, created_at: u64) -> Value {
    let mut b = ResponsesBuilder::new(request, created_at);
    let mut scratch = BytesMut::new();
    let id = resp.get("id").and_then(Value::as_str).unwrap_or("chat");
    b.start(id, resp.get("model").and_then(Value::as_str).unwrap_or_default(), &mut scratch);
    let choice = resp.pointer("/choices/0").unwrap_or(&Value::Null);
    let m = choice.get("message").unwrap_or(&Value::Null);
    if let Some(r) = m.get("reasoning_content").and_then(Value::as_str) {
        b.reasoning(r, &mut scratch);
    }
    for key in ["content", "refusal"] {
        if let Some(t) = m.get(key).and_then(Value::as_str) {
            b.text(t, &mut scratch);
        }
    }
    for (k, c) in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let f = c.get("function").unwrap_or(&Value::Null);
        let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
        b.tool_start(k as u64, &s(c.get("id")), &s(f.get("name")), &mut scratch);
        b.tool_args(k as u64, &s(f.get("arguments")), &mut scratch);
    }
    let end = ResponseEnd::from_chat(choice.get("finish_reason").and_then(Value::as_str).unwrap_or("stop"));
    let usage = resp.get("usage").filter(|u| !u.is_null()).map(responses_usage_from_chat);
    b.finish(end, usage.as_ref(), &mut scratch)
}

/// A whole Anthropic message → a whole Responses `response`.
pub fn anthropic_to_responses(msg: &Value, request: &Value, created_at: u64) -> Value {
    let mut b = ResponsesBuilder::new(request, created_at);
    let mut scratch = BytesMut::new();
    let id = msg.get("id").and_then(Value::as_str).unwrap_or("message");
    b.start(id, msg.get("model").and_then(Value::as_str).unwrap_or_default(), &mut scratch);
    for (k, block) in msg.get("content").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let s = |key: &str| block.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
        match block.get("type").and_then(Value::as_str) {
            Some("text") => b.text(&s("text"), &mut scratch),
            Some("thinking") => b.reasoning(&s("thinking"), &mut scratch),
            Some("tool_use") => {
                b.tool_start(k as u64, &s("id"), &s("name"), &mut scratch);
                let input = block.get("input").map(Value::to_string).unwrap_or_else(|| "{}".into());
                b.tool_args(k as u64, &input, &mut scratch);
            }
            _ => {}
        }
        b.close_open(&mut scratch);
    }
    let end = ResponseEnd::from_anthropic(msg.get("stop_reason").and_then(Value::as_str).unwrap_or("end_turn"));
    let usage = msg.get("usage").filter(|u| !u.is_null()).map(responses_usage_from_anthropic);
    b.finish(end, usage.as_ref(), &mut scratch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chat_completion_with_tool_calls_becomes_a_response() {
        let resp = json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "llama-3",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": "Let me check.",
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]}}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 9, "prompt_tokens_details": {"cached_tokens": 4},
                "completion_tokens_details": {"reasoning_tokens": 2}}
        });
        let req = json!({"model": "llama-3", "input": "hi", "instructions": "be brief", "tools": [{"type": "function", "name": "weather"}]});
        let r = chat_to_responses(&resp, &req, 7);
        assert_eq!(r["id"], "resp_chatcmpl-1");
        assert_eq!(r["object"], "response");
        assert_eq!(r["status"], "completed");
        assert_eq!(r["created_at"], 7);
        assert_eq!(r["instructions"], "be brief");
        assert_eq!(r["tools"], req["tools"]);
        assert_eq!(r["output"][0]["type"], "message");
        assert_eq!(
            r["output"][0]["content"][0],
            json!({"type": "output_text", "text": "Let me check.", "annotations": [], "logprobs": []})
        );
        assert_eq!(r["output"][1]["type"], "function_call");
        assert_eq!(r["output"][1]["call_id"], "call_1");
        assert_eq!(r["output"][1]["name"], "weather");
        assert_eq!(r["output"][1]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(r["output"][1]["status"], "completed");
        assert_eq!(
            r["usage"],
            json!({"input_tokens": 20, "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
                "output_tokens": 9, "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 29})
        );
    }

    #[test]
    fn an_anthropic_message_becomes_a_response_with_reasoning_and_incomplete_end() {
        let msg = json!({
            "id": "msg_1", "type": "message", "model": "claude-x", "stop_reason": "max_tokens",
            "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"}, {"type": "text", "text": "Par"}],
            "usage": {"input_tokens": 10, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20, "output_tokens": 7}
        });
        let r = anthropic_to_responses(&msg, &json!({"model": "claude-x", "input": "hi"}), 1);
        assert_eq!(r["id"], "resp_msg_1");
        assert_eq!(r["status"], "incomplete");
        assert_eq!(r["incomplete_details"], json!({"reason": "max_output_tokens"}));
        assert_eq!(r["output"][0]["type"], "reasoning");
        assert_eq!(r["output"][0]["content"][0], json!({"type": "reasoning_text", "text": "hmm"}));
        assert_eq!(r["output"][1]["content"][0]["text"], "Par");
        assert_eq!(r["usage"]["input_tokens"], 130);
        assert_eq!(r["usage"]["input_tokens_details"], json!({"cached_tokens": 100, "cache_write_tokens": 20}));
        assert_eq!(r["usage"]["total_tokens"], 137);
        assert_eq!(r["parallel_tool_calls"], true);
    }
}
