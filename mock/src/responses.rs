//! OpenAI's Responses API: `POST /v1/responses` (a whole `response` object, or SSE with typed events:
//! `response.created`, `response.in_progress`, `response.output_item.added`, `response.content_part.added`,
//! `response.output_text.delta`, `response.function_call_arguments.delta`, …, and one terminal event,
//! `response.completed`, `response.incomplete` or `response.failed`), `GET /v1/responses/{id}` and
//! `DELETE /v1/responses/{id}`, steered by the same `MOCK[...]` directives as chat.
//!
//! Like the real API, each instance remembers the responses it stored (bounded) and refuses a
//! `previous_response_id` it does not hold, so a gateway that sends a follow-up to the wrong upstream is
//! caught. Directives of note here: `call` answers with a call of the first function tool (its arguments
//! streamed in `tokens` deltas), `reasoning=N` adds a reasoning item and N reasoning tokens,
//! `web_search=N` adds N built-in web search calls, `finish=incomplete|content_filter|failed` ends the
//! response that way.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::response::Response;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, StatusCode};
use serde_json::{json, Value};

use crate::body::{FramesBody, Stop};
use crate::directive::{self, Directives};
use crate::{before_headers, error_response, invalid_request, json_ok, sse_ok, unix_now, Shared, DEFAULT_TOKENS};

/// How many stored responses an instance keeps; the oldest is forgotten first.
const MAX_STORED: usize = 1_000;

/// Responses this instance stored (`store` not false), for GET, DELETE and `previous_response_id`.
#[derive(Default)]
pub(crate) struct Store {
    items: Mutex<VecDeque<(String, Value)>>,
}

impl Store {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(String, Value)>> {
        self.items.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(&self, id: String, v: Value) {
        let mut items = self.lock();
        if items.len() >= MAX_STORED {
            items.pop_front();
        }
        items.push_back((id, v));
    }

    fn get(&self, id: &str) -> Option<Value> {
        self.lock().iter().find(|(k, _)| k == id).map(|(_, v)| v.clone())
    }

    fn remove(&self, id: &str) -> bool {
        let mut items = self.lock();
        let before = items.len();
        items.retain(|(k, _)| k != id);
        items.len() != before
    }
}

/// Text of an input: a string, a list of items, each with string or part-list `content`, or the
/// `output` of a function call.
fn collect_texts<'a>(v: &'a Value, out: &mut Vec<&'a str>, items: &mut u64) {
    match v {
        Value::String(s) => {
            out.push(s);
            *items += 1;
        }
        Value::Array(list) => {
            for item in list {
                *items += 1;
                for key in ["content", "output"] {
                    match item.get(key) {
                        Some(Value::String(s)) => out.push(s),
                        Some(Value::Array(parts)) => {
                            out.extend(parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)));
                        }
                        _ => {}
                    }
                }
            }
        }
        _ => {}
    }
}

fn not_found(id: &str) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        &format!("Response with id '{id}' not found."),
        "invalid_request_error",
        "not_found",
    )
}

/// `GET /v1/responses/{id}`.
pub(crate) fn get(shared: &Arc<Shared>, id: &str) -> Response {
    match shared.responses.get(id) {
        Some(v) => json_ok(shared, Bytes::from(v.to_string())),
        None => not_found(id),
    }
}

/// `DELETE /v1/responses/{id}`.
pub(crate) fn delete(shared: &Arc<Shared>, id: &str) -> Response {
    if shared.responses.remove(id) {
        json_ok(shared, Bytes::from(json!({"id": id, "object": "response.deleted", "deleted": true}).to_string()))
    } else {
        not_found(id)
    }
}

/// How the response ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Completed,
    Incomplete(&'static str),
    Failed,
}

impl End {
    fn of(d: &Directives) -> Result<End, String> {
        match d.finish.as_deref() {
            None | Some("completed" | "stop") => Ok(End::Completed),
            Some("incomplete" | "length" | "max_output_tokens") => Ok(End::Incomplete("max_output_tokens")),
            Some("content_filter") => Ok(End::Incomplete("content_filter")),
            Some("failed") => Ok(End::Failed),
            Some(other) => Err(format!("MOCK finish `{other}` is not a Responses ending")),
        }
    }

    fn status(self) -> &'static str {
        match self {
            End::Completed => "completed",
            End::Incomplete(_) => "incomplete",
            End::Failed => "failed",
        }
    }

    fn event(self) -> &'static str {
        match self {
            End::Completed => "response.completed",
            End::Incomplete(_) => "response.incomplete",
            End::Failed => "response.failed",
        }
    }
}

/// One generated answer: its output items (done state) and the deltas a stream splits them into.
struct Answer {
    id: String,
    base: Value,
    items: Vec<Value>,
    /// For each item, the deltas of its text or arguments (empty for items without streamed content).
    deltas: Vec<Vec<String>>,
    end: End,
    usage: Value,
}

fn words(n: u64) -> Vec<String> {
    (0..n).map(|i| format!("tok{i} ")).collect()
}

impl Answer {
    fn response(&self, status: &str, output: Vec<Value>, usage: Value) -> Value {
        let mut r = self.base.clone();
        r["status"] = json!(status);
        r["output"] = Value::Array(output);
        r["usage"] = usage;
        if status == "incomplete" {
            if let End::Incomplete(reason) = self.end {
                r["incomplete_details"] = json!({"reason": reason});
            }
        }
        if status == "failed" {
            r["error"] = json!({"code": "server_error", "message": "MOCK finish=failed: simulated model failure"});
        }
        r
    }

    fn whole(&self) -> Value {
        self.response(self.end.status(), self.items.clone(), self.usage.clone())
    }

    /// The SSE frames and the range of delta frames (what `delay_ms` paces and `cut=N` counts).
    fn events(&self) -> (Vec<Bytes>, Range<usize>) {
        let mut seq = 0u64;
        let mut f: Vec<Bytes> = Vec::new();
        let mut push = |f: &mut Vec<Bytes>, mut v: Value| {
            v["sequence_number"] = json!(seq);
            seq += 1;
            let kind = v.get("type").and_then(Value::as_str).unwrap_or("unknown").to_string();
            f.push(Bytes::from(format!("event: {kind}\ndata: {v}\n\n")));
        };
        let pending = self.response("in_progress", Vec::new(), Value::Null);
        push(&mut f, json!({"type": "response.created", "response": pending}));
        push(&mut f, json!({"type": "response.in_progress", "response": pending}));
        // The frames that carry content: start at the first content frame, end after the last (none yet).
        let mut content = std::ops::Range { start: usize::MAX, end: 0 };
        for (i, (item, deltas)) in self.items.iter().zip(&self.deltas).enumerate() {
            let item_id = item.get("id").cloned().unwrap_or(Value::Null);
            let mut added = item.clone();
            added["status"] = json!("in_progress");
            match item.get("type").and_then(Value::as_str) {
                Some("message") => {
                    added["content"] = json!([]);
                    push(&mut f, json!({"type": "response.output_item.added", "output_index": i, "item": added}));
                    let empty = json!({"type": "output_text", "annotations": [], "logprobs": [], "text": ""});
                    push(
                        &mut f,
                        json!({"type": "response.content_part.added", "item_id": item_id, "output_index": i,
                            "content_index": 0, "part": empty}),
                    );
                    content.start = content.start.min(f.len());
                    for d in deltas {
                        push(
                            &mut f,
                            json!({"type": "response.output_text.delta", "item_id": item_id, "output_index": i,
                                "content_index": 0, "delta": d, "logprobs": []}),
                        );
                    }
                    content.end = f.len();
                    let part = item.pointer("/content/0").cloned().unwrap_or(Value::Null);
                    push(
                        &mut f,
                        json!({"type": "response.output_text.done", "item_id": item_id, "output_index": i,
                            "content_index": 0, "text": part.get("text"), "logprobs": []}),
                    );
                    push(
                        &mut f,
                        json!({"type": "response.content_part.done", "item_id": item_id, "output_index": i,
                            "content_index": 0, "part": part}),
                    );
                }
                Some("function_call") => {
                    added["arguments"] = json!("");
                    push(&mut f, json!({"type": "response.output_item.added", "output_index": i, "item": added}));
                    content.start = content.start.min(f.len());
                    for d in deltas {
                        push(
                            &mut f,
                            json!({"type": "response.function_call_arguments.delta", "item_id": item_id,
                                "output_index": i, "delta": d}),
                        );
                    }
                    content.end = f.len();
                    push(
                        &mut f,
                        json!({"type": "response.function_call_arguments.done", "item_id": item_id,
                            "output_index": i, "name": item.get("name"), "arguments": item.get("arguments")}),
                    );
                }
                _ => {
                    push(&mut f, json!({"type": "response.output_item.added", "output_index": i, "item": added}));
                }
            }
            push(&mut f, json!({"type": "response.output_item.done", "output_index": i, "item": item}));
        }
        let done = self.whole();
        push(&mut f, json!({"type": self.end.event(), "response": done}));
        if content.start > content.end {
            content = 0..0;
        }
        (f, content)
    }
}

pub(crate) async fn create(shared: &Arc<Shared>, body: &Bytes) -> Response {
    let req: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return invalid_request("the body must be a JSON object", "invalid_json"),
        Err(error) => return invalid_request(&format!("invalid JSON body: {error}"), "invalid_json"),
    };
    let Some(model) = req.get("model").and_then(Value::as_str).map(str::to_string) else {
        return invalid_request("Missing required parameter: 'model'.", "missing_required_parameter");
    };
    let previous = req.get("previous_response_id").and_then(Value::as_str);
    if let Some(prev) = previous {
        if shared.responses.get(prev).is_none() {
            // The real API names the parameter.
            let body = json!({"error": {"message": format!("Previous response with id '{prev}' not found."),
                "type": "invalid_request_error", "param": "previous_response_id",
                "code": "previous_response_not_found"}});
            let mut resp = Response::new(axum::body::Body::from(body.to_string()));
            *resp.status_mut() = StatusCode::BAD_REQUEST;
            resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            return resp;
        }
    }
    let mut texts: Vec<&str> = Vec::new();
    let mut items = 0u64;
    if let Some(s) = req.get("instructions").and_then(Value::as_str) {
        texts.push(s);
        items += 1;
    }
    if let Some(input) = req.get("input") {
        collect_texts(input, &mut texts, &mut items);
    }
    let d = match directive::from_texts(texts.iter().copied(), shared.instance().as_deref()) {
        Ok(d) => d,
        Err(message) => return invalid_request(&message, "invalid_mock_directive"),
    };
    let end = match End::of(&d) {
        Ok(e) => e,
        Err(message) => return invalid_request(&message, "invalid_mock_directive"),
    };
    if let Some(early) = before_headers(&d).await {
        return early;
    }
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let store = req.get("store").and_then(Value::as_bool).unwrap_or(true);
    let words_in: usize = texts.iter().map(|t| t.split_whitespace().count()).sum();
    let prompt = d.prompt_tokens.unwrap_or(words_in as u64 + 3 * items);
    let tokens = d.tokens.unwrap_or(DEFAULT_TOKENS);
    let n = shared.next_id.fetch_add(1, Ordering::Relaxed);
    // Unique across instances in one process too: tests run several mocks as different upstreams.
    let id = format!("resp_mock{:x}_{n}", Arc::as_ptr(shared) as usize);
    let usage = if d.no_usage {
        Value::Null
    } else {
        json!({
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": d.cached},
            "output_tokens": tokens + d.reasoning,
            "output_tokens_details": {"reasoning_tokens": d.reasoning},
            "total_tokens": prompt + tokens + d.reasoning
        })
    };
    let mut out_items = Vec::new();
    let mut deltas = Vec::new();
    if d.reasoning > 0 {
        out_items.push(json!({"id": format!("rs_mock{n}"), "type": "reasoning", "summary": []}));
        deltas.push(Vec::new());
    }
    for i in 0..d.web_search {
        out_items.push(json!({"id": format!("ws_mock{n}_{i}"), "type": "web_search_call", "status": "completed",
            "action": {"type": "search", "query": "mock"}}));
        deltas.push(Vec::new());
    }
    let first_tool = req
        .get("tools")
        .and_then(Value::as_array)
        .and_then(|t| t.iter().find(|t| t.get("type").and_then(Value::as_str) == Some("function")))
        .and_then(|t| t.get("name"))
        .and_then(Value::as_str);
    match first_tool.filter(|_| d.call) {
        Some(name) => {
            let mut parts = vec!["{\"q\":\"".to_string()];
            parts.extend(words(tokens));
            parts.push("\"}".to_string());
            out_items.push(json!({"id": format!("fc_mock{n}"), "type": "function_call", "status": "completed",
                "arguments": parts.concat(), "call_id": format!("call_mock{n}"), "name": name}));
            deltas.push(parts);
        }
        None => {
            let parts = words(tokens);
            let text = json!({"type": "output_text", "annotations": [], "logprobs": [], "text": parts.concat()});
            out_items.push(json!({"id": format!("msg_mock{n}"), "type": "message", "status": "completed",
                "role": "assistant", "content": [text]}));
            deltas.push(parts);
        }
    }
    let pick = |k: &str, default: Value| req.get(k).filter(|v| !v.is_null()).cloned().unwrap_or(default);
    let base = json!({
        "id": id, "object": "response", "created_at": unix_now(), "status": "in_progress", "background": false,
        "error": null, "incomplete_details": null, "instructions": pick("instructions", Value::Null),
        "max_output_tokens": pick("max_output_tokens", Value::Null), "model": model, "output": [],
        "parallel_tool_calls": pick("parallel_tool_calls", json!(true)),
        "previous_response_id": previous, "reasoning": pick("reasoning", json!({"effort": null, "summary": null})),
        "store": store, "temperature": pick("temperature", json!(1.0)),
        "text": pick("text", json!({"format": {"type": "text"}})), "tool_choice": pick("tool_choice", json!("auto")),
        "tools": pick("tools", json!([])), "top_p": pick("top_p", json!(1.0)), "truncation": "disabled",
        "usage": null, "user": null, "metadata": pick("metadata", json!({}))
    });
    let answer = Answer { id, base, items: out_items, deltas, end, usage };
    if store && end != End::Failed {
        shared.responses.insert(answer.id.clone(), answer.whole());
    }
    if !stream {
        if d.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(d.delay_ms.saturating_mul(tokens))).await;
        }
        return json_ok(shared, Bytes::from(answer.whole().to_string()));
    }
    let (frames, content) = answer.events();
    paced_stream(shared, &d, frames, content)
}

/// An SSE body of `frames` whose `content` frames are paced by `delay_ms`, cut after `cut=N` of them or
/// hung after the first frame (`hang`).
pub(crate) fn paced_stream(
    shared: &Arc<Shared>,
    d: &Directives,
    frames: Vec<Bytes>,
    content: Range<usize>,
) -> Response {
    let stop = if d.hang {
        Stop::Hang(1)
    } else if let Some(n) = d.cut {
        Stop::Cut(usize::try_from(n).map_or(content.end, |n| content.start.saturating_add(n).min(content.end)))
    } else {
        Stop::Never
    };
    sse_ok(FramesBody::stream(frames, content, Duration::from_millis(d.delay_ms), stop, Arc::clone(shared)))
}
