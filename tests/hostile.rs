//! Issue 15 through the real binary: nothing a client or an upstream sends stops the gateway or its
//! metering. Hostile upstreams (a raw TCP server answering scripted bytes) and hostile clients (raw TCP
//! writes), each checked on what the client got and on the one call event stored for it.

// Test code: failing loudly is its job.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::hostile::{head, peak_rss, sse, Hostile, Step};
use common::*;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A gateway with the hostile upstream serving `gpt-4.1` (OpenAI format) and `claude-haiku-4-5`
/// (Anthropic format), next to the harness's mock.
async fn start(gateway: &str) -> (Gateway, Hostile) {
    let hostile = Hostile::start().await;
    let extra = format!(
        r#"
[[upstreams]]
name = "hostile"
kind = "openai_compatible"
base_url = "{base}"
models = ["gpt-4.1", "gpt-4.1-mini"]
request_timeout_ms = 5000
idle_timeout_ms = 5000
[[upstreams]]
name = "hostile-anthropic"
kind = "anthropic"
base_url = "{base}"
models = ["claude-haiku-4-5"]
request_timeout_ms = 5000
idle_timeout_ms = 5000
"#,
        base = hostile.base_url()
    );
    let gw = Gateway::start_with(Opts { gateway: gateway.into(), extra, ..Opts::default() }).await;
    (gw, hostile)
}

async fn post_rid(gw: &Gateway, path: &str, rid: &str, body: &str) -> reqwest::Response {
    gw.http
        .post(format!("{}{path}", gw.url))
        .bearer_auth(ENG_KEY)
        .header("x-request-id", rid)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

fn chat(model: &str, prompt: &str, stream: bool) -> String {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": prompt}]}).to_string()
}

/// The value of an unlabelled metric on `/metrics`.
async fn metric(gw: &Gateway, name: &str) -> u64 {
    let text = gw.http.get(format!("{}/metrics", gw.url)).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
        .trim()
        .parse()
        .unwrap()
}

fn chunk(content: &str) -> String {
    json!({"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4.1",
           "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]})
    .to_string()
}

fn usage_chunk(prompt: u64, completion: u64) -> String {
    json!({"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4.1", "choices": [],
           "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}})
    .to_string()
}

/// gpt-4.1: $2 / M input, $8 / M output: 2,000 and 8,000 nano-USD per token.
fn gpt41_cost(input: u64, output: u64) -> u64 {
    input * 2_000 + output * 8_000
}

/// Items 5 and 10 (SSE): the bytes after the last line end reach the client, a JSON answer to a stream
/// request reaches it whole, and events whose `data` spans lines or whose lines end in a lone CR are
/// read for usage instead of falling back to estimation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_edge_cases_reach_the_client_and_are_metered() {
    let (gw, hostile) = start("").await;
    // The client did not ask for usage, so the gateway rewrites the stream (it hides the usage chunk it
    // asked for): the last `data: [DONE]` has no line end.
    let body = format!("data: {}\n\ndata: {}\n\ndata: [DONE]", chunk("hello"), usage_chunk(11, 3));
    hostile.on("no-final-newline", sse(body.as_bytes()));
    let r = post_rid(&gw, "/v1/chat/completions", "s-tail", &chat("gpt-4.1", "HOSTILE[no-final-newline]", true)).await;
    assert_eq!(r.status(), 200);
    let got = r.text().await.unwrap();
    assert!(got.ends_with("data: [DONE]"), "the last line must reach the client: {got:?}");
    assert!(got.contains("hello") && !got.contains("\"usage\""), "{got:?}");

    // A JSON 200 to a stream request: the client gets the document, the usage in it is metered.
    let doc = json!({"id": "x", "object": "chat.completion", "model": "gpt-4.1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "whole"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 21, "completion_tokens": 5, "total_tokens": 26}})
    .to_string();
    hostile.on("json-to-stream", vec![head("application/json"), Step::Send(doc.clone().into_bytes())]);
    let r = post_rid(&gw, "/v1/chat/completions", "s-json", &chat("gpt-4.1", "HOSTILE[json-to-stream]", true)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.text().await.unwrap(), doc);

    // `data` split over two lines (joined with a newline, which JSON allows), and a usage event too.
    let c = chunk("multi");
    let (a, b) = c.split_at(c.find("\"choices\"").unwrap());
    let uc = usage_chunk(31, 7);
    let (ua, ub) = uc.split_at(uc.find("\"usage\"").unwrap());
    let body = format!("data: {a}\ndata: {b}\n\ndata:{ua}\ndata:{ub}\n\ndata: [DONE]\n\n");
    hostile.on("multi-line", sse(body.as_bytes()));
    let r = post_rid(&gw, "/v1/chat/completions", "s-multi", &chat("gpt-4.1", "HOSTILE[multi-line]", true)).await;
    let got = r.text().await.unwrap();
    assert!(got.contains("multi") && !got.contains("usage"), "the hidden usage event spans lines: {got:?}");

    // Lone CR line ends throughout, with a comment line.
    let body = format!(": keep-alive\rdata: {}\r\rdata: {}\r\rdata: [DONE]\r\r", chunk("cr"), usage_chunk(41, 9));
    hostile.on("cr-only", sse(body.as_bytes()));
    let r = post_rid(&gw, "/v1/chat/completions", "s-cr", &chat("gpt-4.1", "HOSTILE[cr-only]", true)).await;
    let got = r.text().await.unwrap();
    assert!(got.contains("cr") && got.ends_with("data: [DONE]\r\r") && !got.contains("usage"), "{got:?}");

    // The same CR-only stream to a client that asked for usage: forwarded byte for byte.
    let with_usage = json!({"model": "gpt-4.1", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "HOSTILE[cr-only]"}]})
    .to_string();
    let r = post_rid(&gw, "/v1/chat/completions", "s-cr-usage", &with_usage).await;
    assert_eq!(r.text().await.unwrap(), body);

    gw.wait_events(5).await;
    for (rid, input, output) in
        [("s-tail", 11, 3), ("s-json", 21, 5), ("s-multi", 31, 7), ("s-cr", 41, 9), ("s-cr-usage", 41, 9)]
    {
        let ev = gw.event(rid).await;
        assert_eq!(s(&ev, "usage_source"), "provider", "{rid}: {ev}");
        assert_eq!((u(&ev, "input_tokens"), u(&ev, "output_tokens")), (input, output), "{rid}");
        assert_eq!(u(&ev, "cost_nanousd"), gpt41_cost(input, output), "{rid}");
        assert_eq!((s(&ev, "outcome"), u(&ev, "status_code")), ("ok", 200), "{rid}");
    }
}

/// Item 6: a line far over `max_sse_line_bytes` is passed on without being kept, in both the byte for
/// byte and the rewritten path; the gateway's memory does not follow it, the metric counts it, and the
/// usage after it is still metered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlong_sse_line_is_passed_on_unread() {
    let (gw, hostile) = start("max_sse_line_bytes = 65536").await;
    const LINE: usize = 48 * 1024 * 1024;
    let steps = |rid: &str| {
        vec![
            head("text/event-stream"),
            Step::Send(format!("data: {}\n\ndata: {{\"junk\":\"", chunk(rid)).into_bytes()),
            Step::Repeat(b"x".to_vec(), LINE),
            Step::Send(format!("\"}}\n\ndata: {}\n\ndata: [DONE]\n\n", usage_chunk(13, 2)).into_bytes()),
        ]
    };
    hostile.on("long-a", steps("long-a"));
    hostile.on("long-b", steps("long-b"));
    let pid = gw.child.as_ref().unwrap().id();
    // Warm up (first connection, first event) before taking the baseline.
    gw.post("/v1/chat/completions", Some(ENG_KEY), &chat("gpt-4o-mini", "warm", false)).await;
    let before = peak_rss(pid);
    let with_usage = json!({"model": "gpt-4.1", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "HOSTILE[long-a]"}]})
    .to_string();
    for (rid, body) in [("long-a", with_usage), ("long-b", chat("gpt-4.1", "HOSTILE[long-b]", true))] {
        let r = post_rid(&gw, "/v1/chat/completions", rid, &body).await;
        assert_eq!(r.status(), 200);
        let got = r.bytes().await.unwrap();
        assert!(got.len() > LINE, "{rid}: the long line reaches the client ({} bytes)", got.len());
        assert!(got.ends_with(b"data: [DONE]\n\n"), "{rid}");
    }
    let grown = peak_rss(pid).saturating_sub(before);
    assert!(grown < 24 * 1024 * 1024, "peak RSS grew by {grown} bytes for a {LINE}-byte line");
    assert_eq!(metric(&gw, "tollgate_sse_lines_too_long_total").await, 2);
    gw.wait_events(3).await;
    for rid in ["long-a", "long-b"] {
        let ev = gw.event(rid).await;
        assert_eq!((u(&ev, "input_tokens"), u(&ev, "output_tokens")), (13, 2), "{rid}: {ev}");
        assert_eq!(s(&ev, "usage_source"), "provider");
    }
}

/// Item 8: an upstream that refuses the gateway's credentials is a 502 to the client, and the event
/// says 502 too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_credential_refusal_is_recorded_as_what_the_client_got() {
    let gw = Gateway::start().await;
    for (rid, status) in [("a-401", 401), ("a-403", 403)] {
        let prompt = format!("MOCK[status={status}]");
        let r = post_rid(&gw, "/v1/chat/completions", rid, &chat("gpt-4o-mini", &prompt, false)).await;
        assert_eq!(r.status(), 502);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "upstream_auth_failed");
    }
    gw.wait_events(2).await;
    for rid in ["a-401", "a-403"] {
        let ev = gw.event(rid).await;
        assert_eq!(u(&ev, "status_code"), 502, "{ev}");
        assert_eq!(s(&ev, "outcome"), "upstream_error");
        assert_eq!(s(&ev, "error_type"), "upstream_auth_failed");
    }
}

/// Sends raw bytes to the gateway and returns what it answered before closing (bounded wait).
async fn raw(gw: &Gateway, parts: &[&[u8]], then_close: bool) -> String {
    let addr = gw.url.trim_start_matches("http://");
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    for p in parts {
        tcp.write_all(p).await.unwrap();
    }
    if then_close {
        tcp.shutdown().await.unwrap();
        drop(tcp);
        return String::new();
    }
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the gateway kept the connection open; got so far: {}", String::from_utf8_lossy(&out));
    String::from_utf8_lossy(&out).into_owned()
}

fn request_head(rid: &str, extra: &str) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ENG_KEY}\r\nx-request-id: {rid}\r\ncontent-type: application/json\r\nconnection: close\r\n{extra}\r\n"
    )
}

/// Item 7 and the read timeouts of item 10: a client that hangs up mid-upload is a 499
/// `client_disconnect`, a broken chunked body a 400, a body too large a 413, a body too slow a 408, and
/// a client too slow with its headers is cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_body_failures_are_told_apart() {
    let gw = Gateway::start_with(Opts {
        gateway: "max_request_bytes = 100000\nbody_read_timeout_ms = 800\nheader_read_timeout_ms = 800".into(),
        ..Opts::default()
    })
    .await;
    let body = chat("gpt-4o-mini", "hello", false);

    let h = request_head("b-hangup", "content-length: 1000\r\n");
    raw(&gw, &[h.as_bytes(), &body.as_bytes()[..20]], true).await;

    let h = request_head("b-chunked", "transfer-encoding: chunked\r\n");
    let got = raw(&gw, &[h.as_bytes(), b"zz\r\nnot a chunk\r\n0\r\n\r\n"], false).await;
    assert!(got.starts_with("HTTP/1.1 400"), "{got}");
    assert!(got.contains("\"invalid_body\""), "{got}");

    let big = "x".repeat(200_000);
    let r = post_rid(&gw, "/v1/chat/completions", "b-large", &chat("gpt-4o-mini", &big, false)).await;
    assert_eq!(r.status(), 413);

    let h = request_head("b-slow", "content-length: 1000\r\n");
    let got = raw(&gw, &[h.as_bytes(), b"{\"model\""], false).await;
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("\"request_timeout\""), "{got}");

    // Headers that never end: the connection is closed (bounded wait in `raw`).
    raw(&gw, &[b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-slow: "], false).await;

    gw.wait_events(4).await;
    for (rid, status, outcome, code) in [
        ("b-hangup", 499, "client_disconnect", "client_disconnect"),
        ("b-chunked", 400, "invalid_request", "invalid_body"),
        ("b-large", 413, "invalid_request", "body_too_large"),
        ("b-slow", 408, "timeout", "request_timeout"),
    ] {
        let ev = gw.event(rid).await;
        assert_eq!((u(&ev, "status_code"), s(&ev, "outcome"), s(&ev, "error_type")), (status, outcome, code), "{ev}");
    }
    assert_eq!(metric(&gw, "tollgate_client_read_timeouts_total").await, 1);
}

/// Item 10: refusals at the HTTP edge answer in the client's error shape, with an event when an LLM
/// endpoint was called; `count_tokens` refuses a body it cannot read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_refusals_answer_in_the_clients_shape() {
    let gw = Gateway::start().await;
    let get = |path: &str, rid: &str| {
        gw.http.get(format!("{}{path}", gw.url)).bearer_auth(ENG_KEY).header("x-request-id", rid).send()
    };
    let r = get("/v1/chat/completions", "e-get-chat").await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "method_not_allowed", "{v}");
    let r = get("/v1/messages", "e-get-messages").await.unwrap();
    assert_eq!(r.status(), 405);
    let v: Value = r.json().await.unwrap();
    assert_eq!((v["type"].as_str(), v["error"]["type"].as_str()), (Some("error"), Some("invalid_request_error")));
    let r = gw.http.delete(format!("{}/v1/sql", gw.url)).bearer_auth(ENG_KEY).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "method_not_allowed", "{v}");

    // Headers over `max_header_bytes` (32 KiB by default) but under the HTTP layer's hard cap.
    let r = gw
        .http
        .post(format!("{}/v1/messages", gw.url))
        .header("x-api-key", ENG_KEY)
        .header("x-request-id", "e-431")
        .header("x-padding", "p".repeat(40 * 1024))
        .body(chat("gpt-4o-mini", "x", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    // The same limit on an endpoint added after the first four (it used to stop at /v1/messages).
    let r = gw
        .http
        .post(format!("{}/v1/responses", gw.url))
        .bearer_auth(ENG_KEY)
        .header("x-request-id", "e-431-responses")
        .header("x-padding", "p".repeat(40 * 1024))
        .body(r#"{"model":"gpt-4o-mini","input":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");

    let r = post_rid(&gw, "/v1/messages/batches", "e-404", "{}").await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!((v["type"].as_str(), v["error"]["type"].as_str()), (Some("error"), Some("not_found_error")));

    // Bodies that `count_tokens` cannot count: invalid UTF-8 inside a string, `messages` not a list.
    let mut bad_utf8 = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":""#.to_vec();
    bad_utf8.extend_from_slice(b"\xff\xfe\"}]}");
    let r = gw
        .http
        .post(format!("{}/v1/messages/count_tokens", gw.url))
        .header("x-api-key", ENG_KEY)
        .header("x-request-id", "e-count-utf8")
        .body(bad_utf8)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    let r =
        post_rid(&gw, "/v1/messages/count_tokens", "e-count-str", r#"{"model":"gpt-4o-mini","messages":"hi"}"#).await;
    assert_eq!(r.status(), 400);

    gw.wait_events(6).await;
    for (rid, endpoint, status) in [
        ("e-get-chat", "chat", 405),
        ("e-get-messages", "messages", 405),
        ("e-431", "messages", 431),
        ("e-431-responses", "responses", 431),
        ("e-count-utf8", "other", 400),
        ("e-count-str", "other", 400),
    ] {
        let ev = gw.event(rid).await;
        assert_eq!((s(&ev, "endpoint"), u(&ev, "status_code")), (endpoint, status), "{ev}");
        assert_eq!(s(&ev, "outcome"), "invalid_request");
    }
    assert_eq!(gw.sql("SELECT count(*) AS n FROM calls WHERE request_id = 'e-404'").await[0]["n"], 0);
}

/// Item 2: a prompt that made tiktoken-rs panic (1.1M spaces to an o200k model whose usage must be
/// estimated) is metered, later calls are metered normally (nothing spilled), and `count_tokens` with
/// the same text answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_the_tokenizer_chokes_on_is_metered_and_metering_goes_on() {
    let gw = Gateway::start().await;
    let spaces = " ".repeat(1_100_000);
    let prompt = format!("{spaces}MOCK[tokens=3,no_usage]");
    let r = post_rid(&gw, "/v1/chat/completions", "t-spaces", &chat("gpt-4o", &prompt, true)).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("[DONE]"));
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": spaces}]}).to_string();
    let r = post_rid(&gw, "/v1/messages/count_tokens", "t-count", &body).await;
    assert_eq!(r.status(), 200);
    let n = r.json::<Value>().await.unwrap()["input_tokens"].as_u64().unwrap();
    assert!(n > 0 && n <= 1_100_000, "{n}");
    for i in 0..3 {
        let r = post_rid(&gw, "/v1/chat/completions", &format!("t-after-{i}"), &chat("gpt-4o", "hi", false)).await;
        assert_eq!(r.status(), 200);
    }
    gw.wait_events(5).await;
    let ev = gw.event("t-spaces").await;
    assert_eq!(s(&ev, "usage_source"), "estimated", "{ev}");
    assert!(u(&ev, "input_tokens") > 0 && u(&ev, "output_tokens") > 0, "{ev}");
    assert!(u(&ev, "cost_nanousd") > 0);
    for i in 0..3 {
        assert_eq!(s(&gw.event(&format!("t-after-{i}")).await, "usage_source"), "provider");
    }
    assert_eq!(metric(&gw, "tollgate_events_spilled_total").await, 0);
    assert_eq!(metric(&gw, "tollgate_metering_panics_total").await, 0);
}

// Item 3 (client model names as /metrics labels) and `/metrics` access (item 10) are covered by
// tests/metrics.rs: `client_model_names_do_not_grow_metrics` and `metrics_can_require_a_query_key`.
