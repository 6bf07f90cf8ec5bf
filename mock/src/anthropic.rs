//! Anthropic's wire format: `POST /v1/messages` (whole message or SSE events) and
//! `POST /v1/messages/count_tokens`, steered by the same `MOCK[...]` directives as the OpenAI side.
//!
//! Like the real API it refuses a request without an `anthropic-version` header or without `max_tokens`,
//! so a gateway that forgets either is caught. Usage follows Anthropic's split: `input_tokens` excludes
//! `cache_read_input_tokens` (directive `cached`) and `cache_creation_input_tokens` (`cache_write`);
//! streams carry input counts in `message_start` and the final output count in `message_delta`.

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::body::{FramesBody, Stop};
use crate::directive::{self, Directives};
use crate::{json_ok, sse_ok, Shared, DEFAULT_TOKENS};

#[derive(Deserialize)]
struct MessagesRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    system: Option<Value>,
    #[serde(default)]
    messages: Vec<Value>,
    #[serde(default)]
    tools: Vec<Value>,
}

/// Anthropic's error body.
fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = json!({"type": "error", "error": {"type": kind, "message": message}}).to_string();
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn invalid(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "invalid_request_error", message)
}

/// Anthropic's `error.type` for a status.
fn error_kind(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

/// Text of a string or a list of blocks (text blocks, and the content of tool results).
fn collect_texts<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(blocks) => {
            for b in blocks {
                if let Some(t) = b.get("text").and_then(Value::as_str) {
                    out.push(t);
                }
                if let Some(c) = b.get("content") {
                    collect_texts(c, out);
                }
            }
        }
        _ => {}
    }
}

struct Parsed<'a> {
    texts: Vec<&'a str>,
    turns: u64,
}

fn texts_of(req: &MessagesRequest) -> Parsed<'_> {
    let mut texts = Vec::new();
    if let Some(s) = &req.system {
        collect_texts(s, &mut texts);
    }
    for m in &req.messages {
        if let Some(c) = m.get("content") {
            collect_texts(c, &mut texts);
        }
    }
    Parsed { texts, turns: req.messages.len() as u64 }
}

/// Prompt tokens: `prompt_tokens=N`, else words + 3 per message.
fn prompt_tokens(d: &Directives, p: &Parsed<'_>) -> u64 {
    let words: usize = p.texts.iter().map(|t| t.split_whitespace().count()).sum();
    d.prompt_tokens.unwrap_or(words as u64 + 3 * p.turns)
}

/// Applies `first_delay_ms`, then answers early, in Anthropic's shape, when `status` asks for an error.
async fn before_headers(d: &Directives) -> Option<Response> {
    if d.first_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(d.first_delay_ms)).await;
    }
    let status = d.status?;
    let Ok(code) = StatusCode::from_u16(status) else {
        return Some(invalid(&format!("MOCK status {status} is not an HTTP status")));
    };
    if code.is_success() {
        return None;
    }
    let mut resp = error(code, error_kind(status), &format!("MOCK status {status}: simulated upstream error"));
    if let Some(secs) = d.retry_after {
        resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    Some(resp)
}

/// The request, or the message of the 400 the real API would give.
fn parse(headers: &HeaderMap, body: &Bytes) -> Result<MessagesRequest, String> {
    if headers.get("anthropic-version").is_none() {
        return Err("anthropic-version: header is required".into());
    }
    serde_json::from_slice::<MessagesRequest>(body).map_err(|e| format!("invalid JSON body: {e}"))
}

pub(crate) async fn count_tokens(shared: &Arc<Shared>, headers: &HeaderMap, body: &Bytes) -> Response {
    let req = match parse(headers, body) {
        Ok(r) => r,
        Err(message) => return invalid(&message),
    };
    let p = texts_of(&req);
    let d = match directive::from_texts(p.texts.iter().copied(), shared.instance().as_deref()) {
        Ok(d) => d,
        Err(message) => return invalid(&message),
    };
    let mut resp = Response::new(Body::from(json!({"input_tokens": prompt_tokens(&d, &p)}).to_string()));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

pub(crate) async fn messages(shared: &Arc<Shared>, headers: &HeaderMap, body: &Bytes) -> Response {
    let req = match parse(headers, body) {
        Ok(r) => r,
        Err(message) => return invalid(&message),
    };
    if req.max_tokens.is_none() {
        return invalid("max_tokens: Field required");
    }
    let p = texts_of(&req);
    let d = match directive::from_texts(p.texts.iter().copied(), shared.instance().as_deref()) {
        Ok(d) => d,
        Err(message) => return invalid(&message),
    };
    if let Some(early) = before_headers(&d).await {
        return early;
    }
    let stream = req.stream.unwrap_or(false);
    if let Some(name) = &d.fixture {
        return fixture(shared, name, stream, &d).await;
    }
    let prompt = prompt_tokens(&d, &p);
    let tokens = d.tokens.unwrap_or(DEFAULT_TOKENS);
    let usage = Usage {
        input: prompt.saturating_sub(d.cached).saturating_sub(d.cache_write),
        cache_read: d.cached,
        cache_write: d.cache_write,
        output: tokens.saturating_add(d.reasoning),
    };
    // `call`: use the first tool (a custom one: server tools have a `type`) instead of answering in text.
    let tool = req
        .tools
        .iter()
        .find(|t| t.get("type").is_none_or(|k| k == "custom"))
        .and_then(|t| t.get("name"))
        .and_then(Value::as_str)
        .filter(|_| d.call)
        .map(str::to_string);
    let default_stop = if tool.is_some() { "tool_use" } else { "end_turn" };
    let m = Message {
        id: format!("msg_mock{}", shared.next_id.fetch_add(1, Ordering::Relaxed)),
        model: req.model.clone().unwrap_or_else(|| "mock-model".into()),
        tokens,
        thinking: d.reasoning,
        stop_reason: d.finish.clone().unwrap_or_else(|| default_stop.into()),
        usage,
        tool,
    };
    if !stream {
        if d.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(d.delay_ms.saturating_mul(tokens))).await;
        }
        return json_ok(shared, Bytes::from(m.whole().to_string()));
    }
    let (frames, content) = m.events();
    crate::responses::paced_stream(shared, &d, frames, content)
}

/// Replays a recorded `NAME.sse` (streams: events separated by blank lines, sent as they are) or
/// `NAME.json` (whole message).
async fn fixture(shared: &Arc<Shared>, name: &str, stream: bool, d: &Directives) -> Response {
    let file = if Path::new(name).extension().is_some() {
        name.to_owned()
    } else if stream {
        format!("{name}.sse")
    } else {
        format!("{name}.json")
    };
    let path = shared.fixture_dir.join(&file);
    let text = match tokio::fs::read_to_string(&path).await {
        Ok(text) => text,
        Err(e) => return invalid(&format!("MOCK fixture {} unreadable: {e}", path.display())),
    };
    if !stream {
        return json_ok(shared, Bytes::from(text));
    }
    let frames = sse_frames(&text);
    let last = frames.len().saturating_sub(1);
    let stop = if d.hang {
        Stop::Hang(1.min(last))
    } else if let Some(n) = d.cut {
        Stop::Cut(usize::try_from(n).map_or(last, |n| n.min(last)))
    } else {
        Stop::Never
    };
    sse_ok(FramesBody::stream(frames, 0..last, Duration::from_millis(d.delay_ms), stop, Arc::clone(shared)))
}

/// One frame per SSE event of a recorded stream, each ending in its blank line.
pub(crate) fn sse_frames(text: &str) -> Vec<Bytes> {
    text.replace("\r\n", "\n")
        .split("\n\n")
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| Bytes::from(format!("{e}\n\n")))
        .collect()
}

#[derive(Debug, Clone, Copy)]
struct Usage {
    input: u64,
    cache_read: u64,
    cache_write: u64,
    output: u64,
}

impl Usage {
    fn json(&self, output: u64) -> Value {
        json!({
            "input_tokens": self.input,
            "cache_creation_input_tokens": self.cache_write,
            "cache_read_input_tokens": self.cache_read,
            "output_tokens": output,
            "service_tier": "standard"
        })
    }
}

/// A generated reply: optional thinking (`reasoning=N` words), then `tokens` words `"tok{i} "`.
struct Message {
    id: String,
    model: String,
    tokens: u64,
    thinking: u64,
    stop_reason: String,
    usage: Usage,
    /// Call this tool with `{"q": "<tokens words>"}` instead of answering in text.
    tool: Option<String>,
}

/// The streamed pieces of a tool call's `{"q": "tok0 tok1 …"}` input, one per token.
fn tool_input_parts(tokens: u64) -> Vec<String> {
    let mut parts = vec!["{\"q\":\"".to_string()];
    parts.extend((0..tokens).map(|i| format!("tok{i} ")));
    parts.push("\"}".to_string());
    parts
}

fn words(prefix: &str, n: u64) -> String {
    (0..n).map(|i| format!("{prefix}{i} ")).collect()
}

fn event(out: &mut Vec<Bytes>, v: &Value) {
    let kind = v.get("type").and_then(Value::as_str).unwrap_or("unknown");
    let mut b = BytesMut::new();
    b.extend_from_slice(format!("event: {kind}\ndata: {v}\n\n").as_bytes());
    out.push(b.freeze());
}

impl Message {
    fn whole(&self) -> Value {
        let mut content = Vec::new();
        if self.thinking > 0 {
            content.push(
                json!({"type": "thinking", "thinking": words("think", self.thinking), "signature": "c2lnbmF0dXJl"}),
            );
        }
        match &self.tool {
            Some(name) => {
                let input: Value = serde_json::from_str(&tool_input_parts(self.tokens).concat()).unwrap_or_default();
                content.push(
                    json!({"type": "tool_use", "id": format!("toolu_{}", self.id), "name": name, "input": input}),
                );
            }
            None => content.push(json!({"type": "text", "text": words("tok", self.tokens)})),
        }
        json!({
            "id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": content,
            "stop_reason": self.stop_reason, "stop_sequence": null, "usage": self.usage.json(self.usage.output)
        })
    }

    /// The SSE events, one frame each, and the range of text-delta frames (what `delay_ms` paces and
    /// `cut=N` counts).
    fn events(&self) -> (Vec<Bytes>, Range<usize>) {
        let mut f = Vec::new();
        let message = json!({
            "id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": null, "stop_sequence": null, "usage": self.usage.json(1)
        });
        event(&mut f, &json!({"type": "message_start", "message": message}));
        let mut index = 0;
        if self.thinking > 0 {
            event(
                &mut f,
                &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
            );
            for i in 0..self.thinking {
                let delta = json!({"type": "thinking_delta", "thinking": format!("think{i} ")});
                event(&mut f, &json!({"type": "content_block_delta", "index": 0, "delta": delta}));
            }
            let sig = json!({"type": "signature_delta", "signature": "c2lnbmF0dXJl"});
            event(&mut f, &json!({"type": "content_block_delta", "index": 0, "delta": sig}));
            event(&mut f, &json!({"type": "content_block_stop", "index": 0}));
            index = 1;
        }
        let (block, deltas): (Value, Vec<Value>) = match &self.tool {
            Some(name) => (
                json!({"type": "tool_use", "id": format!("toolu_{}", self.id), "name": name, "input": {}}),
                tool_input_parts(self.tokens)
                    .into_iter()
                    .map(|p| json!({"type": "input_json_delta", "partial_json": p}))
                    .collect(),
            ),
            None => (
                json!({"type": "text", "text": ""}),
                (0..self.tokens).map(|i| json!({"type": "text_delta", "text": format!("tok{i} ")})).collect(),
            ),
        };
        event(&mut f, &json!({"type": "content_block_start", "index": index, "content_block": block}));
        event(&mut f, &json!({"type": "ping"}));
        let start = f.len();
        for delta in deltas {
            event(&mut f, &json!({"type": "content_block_delta", "index": index, "delta": delta}));
        }
        let end = f.len();
        event(&mut f, &json!({"type": "content_block_stop", "index": index}));
        event(
            &mut f,
            &json!({"type": "message_delta", "delta": {"stop_reason": self.stop_reason, "stop_sequence": null},
                "usage": {"output_tokens": self.usage.output}}),
        );
        event(&mut f, &json!({"type": "message_stop"}));
        (f, start..end)
    }
}
