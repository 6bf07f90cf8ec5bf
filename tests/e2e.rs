//! End-to-end tests of `tollgate serve`: a real OpenAI client (async-openai) and raw HTTP against the real
//! binary, a mock upstream speaking OpenAI's JSON and SSE, then the stored call events checked through the
//! query API to the token and the nano-dollar.

// Test code: failing loudly is its job.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequestArgs};
use async_openai::types::embeddings::CreateEmbeddingRequestArgs;
use async_openai::Client;
use common::*;
use futures_util::StreamExt;
use std::time::Instant;

fn openai(gw: &Gateway, key: &str) -> Client<OpenAIConfig> {
    Client::with_config(OpenAIConfig::new().with_api_base(gw.base()).with_api_key(key))
}

fn chat_request(model: &str, prompt: &str) -> async_openai::types::chat::CreateChatCompletionRequest {
    CreateChatCompletionRequestArgs::default()
        .model(model)
        .messages([ChatCompletionRequestUserMessageArgs::default().content(prompt).build().unwrap().into()])
        .build()
        .unwrap()
}

// Published prices, nano-USD per token x 1000 (i.e. per million tokens / 1000):
// gpt-4o-mini $0.15/M in (150 nano per 1000 tokens = 0.15 nano/token), $0.60/M out, $0.075/M cached.
// Written out as per-million integers so each expectation below is plain arithmetic.
const MINI_IN: u64 = 150_000_000; // nano-USD per million tokens
const MINI_OUT: u64 = 600_000_000;
const MINI_CACHED: u64 = 75_000_000;
const EMB_IN: u64 = 20_000_000; // text-embedding-3-small $0.02/M

fn cost(per_million: &[(u64, u64)]) -> u64 {
    let micro: u64 = per_million.iter().map(|(tokens, rate)| tokens * rate).sum();
    (micro + 500_000) / 1_000_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_non_stream_stream_and_embeddings_are_metered_exactly() {
    let gw = Gateway::start().await;
    let client = openai(&gw, ENG_KEY);

    // Non-stream, with cached and reasoning usage reported by the provider.
    let resp = client
        .chat()
        .create(chat_request("gpt-4o-mini", "hello MOCK[tokens=7,prompt_tokens=1200,cached=1000,reasoning=5]"))
        .await
        .unwrap();
    assert_eq!(resp.choices[0].message.content.as_deref(), Some("tok0 tok1 tok2 tok3 tok4 tok5 tok6 "));
    let usage = resp.usage.unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (1200, 12));

    // Stream, client did not ask for usage: the gateway asks upstream and hides the extra chunk.
    let mut stream =
        client.chat().create_stream(chat_request("gpt-4o-mini", "hi MOCK[tokens=4,prompt_tokens=300]")).await.unwrap();
    let mut text = String::new();
    let mut chunks = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        assert!(chunk.usage.is_none(), "client did not ask for usage but got {chunk:?}");
        assert!(!chunk.choices.is_empty(), "usage-only chunk leaked to the client");
        for c in &chunk.choices {
            text.push_str(c.delta.content.as_deref().unwrap_or(""));
        }
        chunks += 1;
    }
    assert_eq!(text, "tok0 tok1 tok2 tok3 ");
    assert_eq!(chunks, 6, "role chunk + 4 content chunks + finish chunk");
    let upstream_body = gw.mock.requests().iter().rev().find(|r| r.path.ends_with("/chat/completions")).unwrap().json();
    assert_eq!(upstream_body["stream_options"]["include_usage"], true, "gateway must request usage upstream");

    // Embeddings.
    let emb = client
        .embeddings()
        .create(
            CreateEmbeddingRequestArgs::default()
                .model("text-embedding-3-small")
                .input("one two three four")
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(emb.data.len(), 1);

    gw.wait_events(3).await;
    let rows = gw
        .sql("SELECT endpoint, stream, input_tokens, output_tokens, cached_input_tokens, reasoning_tokens, cost_nanousd, usage_source, outcome, department, team, project, \"user\", api_key_id, price_id, ttft_ms, latency_ms FROM calls ORDER BY ts_start")
        .await;
    assert_eq!(rows.len(), 3);
    let (a, b, c) = (&rows[0], &rows[1], &rows[2]);
    // 200 uncached at 0.15 + 1000 cached at 0.075 + 12 output at 0.60 (reasoning billed as output).
    assert_eq!(u(a, "cost_nanousd"), cost(&[(200, MINI_IN), (1000, MINI_CACHED), (12, MINI_OUT)]));
    assert_eq!(u(a, "cost_nanousd"), 30_000 + 75_000 + 7_200);
    assert_eq!((u(a, "cached_input_tokens"), u(a, "reasoning_tokens")), (1000, 5));
    assert_eq!(s(a, "usage_source"), "provider");
    assert_eq!(u(b, "cost_nanousd"), cost(&[(300, MINI_IN), (4, MINI_OUT)]));
    assert_eq!(b["stream"], true);
    assert_eq!((u(b, "input_tokens"), u(b, "output_tokens")), (300, 4));
    assert_eq!(s(c, "endpoint"), "embeddings");
    // The mock counts words (4) + 0 per input for embeddings.
    assert_eq!(u(c, "input_tokens"), 4);
    assert_eq!(u(c, "cost_nanousd"), cost(&[(4, EMB_IN)]));
    for r in &rows {
        assert_eq!(s(r, "outcome"), "ok");
        assert_eq!(
            (s(r, "department"), s(r, "team"), s(r, "project"), s(r, "user")),
            ("engineering", "core", "search", "alice")
        );
        assert_eq!(s(r, "api_key_id"), "eng-key");
        assert!(s(r, "price_id").contains("@builtin-"), "{r}");
        assert!(u(r, "ttft_ms") <= u(r, "latency_ms"));
    }

    // Showback sums the same events to the nano-dollar, as JSON and CSV.
    let expected_total = u(a, "cost_nanousd") + u(b, "cost_nanousd") + u(c, "cost_nanousd");
    let r = gw
        .http
        .get(format!("{}/v1/showback?group_by=department,model", gw.url))
        .bearer_auth(ENG_KEY)
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(u(&v["total"], "cost_nanousd"), expected_total, "{v}");
    assert_eq!(u(&v["total"], "calls"), 3);
    assert_eq!(u(&v["total"], "input_tokens"), 1200 + 300 + 4);
    let mini = v["rows"].as_array().unwrap().iter().find(|r| r["model"] == "gpt-4o-mini").unwrap();
    assert_eq!(u(mini, "calls"), 2);
    assert_eq!(s(mini, "cost_usd"), format!("0.{:09}", u(a, "cost_nanousd") + u(b, "cost_nanousd")));
    let csv = gw
        .http
        .get(format!("{}/v1/showback?group_by=department&format=csv", gw.url))
        .bearer_auth(ENG_KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "period,department,calls,rejected,attempts,input_tokens,output_tokens,cached_input_tokens,cache_write_tokens,reasoning_tokens,cost_usd,cost_usd_rounded,cost_nanousd,cache_hits,saved_usd,saved_nanousd");
    let (period, rest) = lines[1].split_once(',').unwrap();
    assert!(period.contains('/'), "{period}");
    assert_eq!(
        rest,
        format!("engineering,3,0,3,1504,16,1000,0,5,0.{expected_total:09},0.00,{expected_total},0,0.000000000,0")
    );

    // Latency answers for the same calls.
    let r = gw.http.get(format!("{}/v1/latency?group_by=model", gw.url)).bearer_auth(ENG_KEY).send().await.unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    let mini = v["rows"].as_array().unwrap().iter().find(|r| r["model"] == "gpt-4o-mini").unwrap();
    assert_eq!(u(mini, "calls"), 2);
    assert!(mini["latency_ms"]["p50"].is_u64() && mini["ttft_ms"]["p99"].is_u64(), "{v}");

    // The upstream got the gateway's key, never the client's; the client's key is not in the log.
    for r in gw.mock.requests() {
        assert_eq!(r.header("authorization"), Some(format!("Bearer {UPSTREAM_SECRET}").as_str()));
        assert!(r.headers.iter().all(|(_, v)| !v.contains(ENG_KEY)));
    }
    assert!(!gw.log().contains(ENG_KEY) && !gw.log().contains(UPSTREAM_SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_asks_for_usage_gets_the_usage_chunk_and_price_override_is_exact() {
    let gw = Gateway::start().await;
    let body = r#"{"model":"house-llm","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"MOCK[tokens=2,prompt_tokens=1000]"}]}"#;
    let r = gw.post("/v1/chat/completions", Some(ENG_KEY), body).await;
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let text = r.text().await.unwrap();
    let usage_events: Vec<&str> =
        text.lines().filter(|l| l.contains("\"choices\":[]") && l.contains("\"prompt_tokens\":1000")).collect();
    assert_eq!(usage_events.len(), 1, "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"));
    gw.wait_events(1).await;
    let ev = &gw.sql("SELECT * FROM calls").await[0];
    // Config price: $0.0375/M input (0.0375 nano per token), $1.10/M output.
    // 1000 x 37_500_000 + 2 x 1_100_000_000 = 37_500_000_000 + 2_200_000_000 micro -> 39_700 nano.
    assert_eq!(u(ev, "cost_nanousd"), 39_700);
    assert!(s(ev, "price_id").starts_with("house-llm@config-"), "{ev}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_chunks_reach_the_client_before_the_upstream_finishes() {
    let gw = Gateway::start().await;
    let body =
        r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"MOCK[tokens=8,delay_ms=250]"}]}"#;
    let answered_before = gw.mock.answered();
    let t0 = Instant::now();
    let r = gw.post("/v1/chat/completions", Some(ENG_KEY), body).await;
    let mut stream = r.bytes_stream();
    let mut seen = String::new();
    let mut first_content = None;
    while let Some(b) = stream.next().await {
        seen.push_str(&String::from_utf8_lossy(&b.unwrap()));
        if first_content.is_none() && seen.contains("tok0") {
            first_content = Some(t0.elapsed());
            // Causal check: the upstream has not finished its response when the first token arrives.
            assert_eq!(gw.mock.answered(), answered_before, "first token arrived only after the upstream finished");
        }
    }
    let total = t0.elapsed();
    assert!(seen.contains("tok7") && seen.contains("[DONE]"));
    assert_eq!(gw.mock.answered(), answered_before + 1);
    // Ratio within one run: the first token came well before the end (8 tokens x 250 ms apart).
    assert!(first_content.unwrap() * 2 < total, "first {:?} total {total:?}", first_content);
    gw.wait_events(1).await;
    let ev = &gw.sql("SELECT ttft_ms, latency_ms FROM calls").await[0];
    assert!(u(ev, "ttft_ms") * 2 < u(ev, "latency_ms"), "{ev}");
}

/// Sends a request with its own x-request-id.
async fn send(gw: &Gateway, rid: &str, key: Option<&str>, body: &str) -> reqwest::Response {
    let mut req =
        gw.http.post(format!("{}/v1/chat/completions", gw.url)).header("x-request-id", rid).body(body.to_string());
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.unwrap()
}

fn chat_body(model: &str, prompt: &str, stream: bool) -> String {
    serde_json::json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": prompt}]}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outcome_produces_exactly_one_event() {
    let gw = Gateway::start().await;
    let mut expected: Vec<(&str, &str, u16)> = Vec::new();

    // No key, bad key.
    let r = send(&gw, "r-nokey", None, &chat_body("gpt-4o-mini", "x", false)).await;
    assert_eq!(r.status(), 401);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "missing_api_key");
    expected.push(("r-nokey", "unauthorized", 401));
    let r = send(&gw, "r-badkey", Some("sk-nope"), &chat_body("gpt-4o-mini", "x", false)).await;
    assert_eq!(r.status(), 401);
    expected.push(("r-badkey", "unauthorized", 401));

    // Invalid body, unknown model, model not allowed for the key.
    let r = send(&gw, "r-badjson", Some(ENG_KEY), "{not json").await;
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    expected.push(("r-badjson", "invalid_request", 400));
    let r = send(&gw, "r-nomodel", Some(ENG_KEY), &chat_body("gpt-9-ultra", "x", false)).await;
    assert_eq!(r.status(), 404);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "model_not_found");
    expected.push(("r-nomodel", "invalid_request", 404));
    let r = send(&gw, "r-notallowed", Some(FIN_KEY), &chat_body("gpt-4o", "x", false)).await;
    assert_eq!(r.status(), 403);
    expected.push(("r-notallowed", "invalid_request", 403));

    // Upstream errors are passed through in OpenAI's shape, with Retry-After.
    let r = send(&gw, "r-500", Some(ENG_KEY), &chat_body("gpt-4o-mini", "MOCK[status=500]", false)).await;
    assert_eq!(r.status(), 500);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "server_error");
    expected.push(("r-500", "upstream_error", 500));
    let r = send(&gw, "r-429", Some(ENG_KEY), &chat_body("gpt-4o-mini", "MOCK[status=429,retry_after=7]", true)).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    expected.push(("r-429", "upstream_error", 429));

    // Upstream too slow to answer (request_timeout_ms = 1500 in the harness).
    let r = send(&gw, "r-timeout", Some(ENG_KEY), &chat_body("gpt-4o-mini", "MOCK[first_delay_ms=4000]", false)).await;
    assert_eq!(r.status(), 504);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_timeout");
    expected.push(("r-timeout", "timeout", 504));

    // Upstream cuts the stream after 3 tokens: the client sees the abort; tokens are estimated.
    let r =
        send(&gw, "r-cut", Some(ENG_KEY), &chat_body("gpt-4o-mini", "hello there MOCK[tokens=20,cut=3]", true)).await;
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let mut got = String::new();
    let mut errored = false;
    while let Some(b) = stream.next().await {
        match b {
            Ok(b) => got.push_str(&String::from_utf8_lossy(&b)),
            Err(_) => {
                errored = true;
                break;
            }
        }
    }
    assert!(errored, "client must see the cut, got {got}");
    assert!(got.contains("tok2") && !got.contains("[DONE]"));
    expected.push(("r-cut", "upstream_error", 200));

    // Client hangs up after two tokens of a slow stream.
    let dropped_before = gw.mock.dropped_early();
    let r = send(
        &gw,
        "r-hangup",
        Some(ENG_KEY),
        &chat_body("gpt-4o-mini", "please count MOCK[tokens=50,delay_ms=100]", true),
    )
    .await;
    let mut stream = r.bytes_stream();
    let mut got = String::new();
    while let Some(b) = stream.next().await {
        got.push_str(&String::from_utf8_lossy(&b.unwrap()));
        if got.contains("tok1 ") {
            break;
        }
    }
    drop(stream);
    expected.push(("r-hangup", "client_disconnect", 200));

    // And one normal call.
    let r = send(&gw, "r-ok", Some(ENG_KEY), &chat_body("gpt-4o-mini", "MOCK[prompt_tokens=10,tokens=2]", false)).await;
    assert_eq!(r.status(), 200);
    expected.push(("r-ok", "ok", 200));

    let n = expected.len() as u64;
    assert_eq!(gw.wait_events(n).await, n, "exactly one event per request");
    for (rid, outcome, status) in &expected {
        let ev = gw.event(rid).await;
        assert_eq!(s(&ev, "outcome"), *outcome, "{rid}: {ev}");
        assert_eq!(u(&ev, "status_code"), u64::from(*status), "{rid}: {ev}");
    }
    // The gateway closed the upstream connection when the client left (the provider stops generating).
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while gw.mock.dropped_early() <= dropped_before {
        assert!(Instant::now() < deadline, "upstream stream was not closed after the client hung up");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Rejections carry no tokens or cost; attribution is still there when the key was known.
    let ev = gw.event("r-nomodel").await;
    assert_eq!((u(&ev, "input_tokens"), u(&ev, "cost_nanousd")), (0, 0));
    assert_eq!(s(&ev, "department"), "engineering");
    assert_eq!(s(&ev, "error_type"), "model_not_found");
    assert_eq!(s(&ev, "usage_source"), "none");
    let ev = gw.event("r-429").await;
    assert_eq!(s(&ev, "error_type"), "rate_limit_exceeded");
    assert_eq!(u(&ev, "cost_nanousd"), 0);

    // Cut and hang-up: what was streamed is counted with the tokenizer and priced, marked estimated.
    for rid in ["r-cut", "r-hangup"] {
        let ev = gw.event(rid).await;
        assert_eq!(s(&ev, "usage_source"), "estimated", "{ev}");
        assert!(u(&ev, "input_tokens") > 0 && u(&ev, "output_tokens") >= 2, "{ev}");
        assert!(u(&ev, "cost_nanousd") > 0, "{ev}");
        assert!(u(&ev, "ttft_ms") > 0 || u(&ev, "latency_ms") >= u(&ev, "ttft_ms"));
    }
    let cut = gw.event("r-cut").await;
    assert_eq!(s(&cut, "error_type"), "upstream_stream_cut");
    // "tok0 tok1 tok2 " in o200k is 6 tokens ("tok", "0", " tok", "1", ...); bounds keep this honest
    // without tying the test to one tokenizer's exact split.
    assert!((3..=9).contains(&u(&cut, "output_tokens")), "{cut}");
    let ok = gw.event("r-ok").await;
    assert_eq!(u(&ok, "cost_nanousd"), cost(&[(10, MINI_IN), (2, MINI_OUT)]));
    // The timed-out call was sent upstream: its prompt is estimated (the provider may bill it).
    let t = gw.event("r-timeout").await;
    assert_eq!(s(&t, "usage_source"), "estimated");
    assert_eq!(u(&t, "output_tokens"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attribution_headers_only_for_keys_that_allow_them() {
    let gw = Gateway::start().await;
    for (rid, key) in [("h-allowed", HDR_KEY), ("h-denied", ENG_KEY)] {
        let r = gw
            .http
            .post(format!("{}/v1/chat/completions", gw.url))
            .bearer_auth(key)
            .header("x-request-id", rid)
            .header("x-tollgate-project", "apollo")
            .header("x-tollgate-user", "bob")
            .header("x-tollgate-tags", "feature=summarise, ticket=T-1")
            .body(chat_body("gpt-4o-mini", "MOCK[tokens=1]", false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    gw.wait_events(2).await;
    let a = gw.event("h-allowed").await;
    assert_eq!((s(&a, "project"), s(&a, "user"), s(&a, "department")), ("apollo", "bob", "research"));
    assert_eq!(a["tag_keys"], serde_json::json!(["feature", "ticket"]));
    assert_eq!(a["tag_values"], serde_json::json!(["summarise", "T-1"]));
    let d = gw.event("h-denied").await;
    assert_eq!((s(&d, "project"), s(&d, "user")), ("search", "alice"));
    assert_eq!(d["tag_keys"], serde_json::json!(["env"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_endpoint_is_read_only_capped_and_authenticated() {
    let gw = Gateway::start_with(Opts {
        query: "sql_max_rows = 2\nsql_timeout_ms = 3000\nmemory_limit_mb = 64".into(),
        ..Opts::default()
    })
    .await;
    for i in 0..3 {
        let r = send(&gw, &format!("q-{i}"), Some(ENG_KEY), &chat_body("gpt-4o-mini", "MOCK[tokens=1]", false)).await;
        assert_eq!(r.status(), 200);
    }
    gw.wait_events(3).await;

    let q = |sql: &'static str| {
        let gw = &gw;
        async move {
            let r = gw.post("/v1/sql", Some(ENG_KEY), &serde_json::json!({ "sql": sql }).to_string()).await;
            let status = r.status().as_u16();
            (status, r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (st, v) = q("SELECT event_id FROM calls").await;
    assert_eq!(st, 200);
    assert_eq!((v["row_count"].as_u64(), v["truncated"].as_bool()), (Some(2), Some(true)));

    for bad in [
        "INSERT INTO calls SELECT * FROM calls",
        "DROP TABLE calls",
        "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/etc/'",
        "COPY calls TO '/tmp/x.parquet'",
        "SET datafusion.execution.batch_size = 1",
        "DELETE FROM calls",
        "SELECT 1; DROP TABLE calls",
        "WITH x AS (SELECT 1) INSERT INTO calls SELECT * FROM calls",
        "SELECT * FROM information_schema.tables",
        "SELECT * FROM no_such_table",
    ] {
        let (st, v) = q(bad).await;
        assert_eq!(st, 400, "{bad} -> {v}");
        let code = v["error"]["code"].as_str().unwrap();
        assert!(code == "not_read_only" || code == "invalid_sql", "{bad} -> {v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    // The table is still all there.
    assert_eq!(gw.wait_events(3).await, 3);

    // A query that would run for minutes is cancelled at the configured limit, and the server goes on
    // serving LLM traffic meanwhile (queries run on their own thread).
    let (st, v) = q("SELECT count(*) FROM range(100000000000) WHERE value % 7 = 3").await;
    assert_eq!(st, 504, "{v}");
    assert_eq!(v["error"]["code"], "query_timeout");
    let r = send(&gw, "q-after", Some(ENG_KEY), &chat_body("gpt-4o-mini", "MOCK[tokens=1]", false)).await;
    assert_eq!(r.status(), 200);
    // One that needs more memory than `query.memory_limit_mb` fails cleanly instead of taking the host.
    let (st, v) =
        q("SELECT a.value, b.value FROM range(100000000) a CROSS JOIN range(100000000) b ORDER BY 1 DESC LIMIT 1")
            .await;
    assert!(st == 400 || st == 504, "{v}");
    assert_eq!(gw.wait_events(4).await, 4);

    // Report parameters are never pasted into SQL.
    for path in [
        "/v1/showback?group_by=department;DROP%20TABLE%20calls",
        "/v1/showback?from=2026-01-01'%20OR%201=1--",
        "/v1/showback?format=xml",
        "/v1/latency?group_by=cost_nanousd",
    ] {
        let r = gw.http.get(format!("{}{path}", gw.url)).bearer_auth(ENG_KEY).send().await.unwrap();
        assert_eq!(r.status(), 400, "{path}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_parameter", "{path}");
    }

    // Only keys with `query = true` may read the call log.
    let r = gw.http.get(format!("{}/v1/showback", gw.url)).bearer_auth(FIN_KEY).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "query_not_allowed");
    let r = gw.http.get(format!("{}/v1/showback", gw.url)).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_flushes_every_event_and_report_reads_them() {
    // Batches would not be written for ten minutes: only the shutdown flush can land these events.
    let mut gw = Gateway::start_with(Opts {
        collector: "flush_interval_ms = 600000\nbatch_max_rows = 1000000".into(),
        ..Opts::default()
    })
    .await;
    let mut expected_cost = 0;
    for (i, key) in [ENG_KEY, FIN_KEY, ENG_KEY, FIN_KEY, ENG_KEY].iter().enumerate() {
        let prompt = format!("MOCK[prompt_tokens={},tokens={}]", 100 * (i + 1), i + 1);
        let r = send(&gw, &format!("g-{i}"), Some(key), &chat_body("gpt-4o-mini", &prompt, i % 2 == 0)).await;
        assert_eq!(r.status(), 200);
        let _ = r.bytes().await.unwrap();
        expected_cost += cost(&[(100 * (i as u64 + 1), MINI_IN), (i as u64 + 1, MINI_OUT)]);
    }
    assert!(parquet_files(&gw.data_dir()).is_empty(), "nothing should be flushed yet");
    let status = gw.stop();
    assert!(status.success(), "exit status {status:?}; log:\n{}", gw.log());
    assert!(!parquet_files(&gw.data_dir()).is_empty());

    let out = std::process::Command::new(bin())
        .args(["report", "--format", "csv", "--group-by", "department", "--config"])
        .arg(&gw.config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let csv = String::from_utf8(out.stdout).unwrap();
    let mut total = 0;
    let mut calls = 0;
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        calls += f[col("calls")].parse::<u64>().unwrap();
        total += f[col("cost_nanousd")].parse::<u64>().unwrap();
    }
    assert_eq!((calls, total), (5, expected_cost), "{csv}");
    // engineering made calls 0, 2, 4.
    let eng = csv.lines().find(|l| l.contains(",engineering,")).unwrap();
    let eng_cost: u64 = [0u64, 2, 4].iter().map(|i| cost(&[(100 * (i + 1), MINI_IN), (i + 1, MINI_OUT)])).sum();
    assert!(eng.contains(&format!(",{eng_cost},")), "{eng}");

    let table = std::process::Command::new(bin()).args(["report", "--config"]).arg(&gw.config).output().unwrap();
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.contains("TOTAL") && table.contains(&format!("0.{expected_cost:09}")), "{table}");
}

/// A stream still running when the shutdown's grace period ends is cut, not waited for: its event is stored
/// as the client's disconnect with part of the stream's tokens (waited for, the stream would have ended a
/// minute later, `ok` with all 600). Connections live on threads of their own (`listen::serve`); the cut
/// must reach them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cuts_a_stream_that_outlives_the_grace_period_and_stores_its_event() {
    let mut gw = Gateway::start_with(Opts { server: "shutdown_grace_ms = 300".into(), ..Opts::default() }).await;
    // 600 chunks 100 ms apart: a minute.
    let slow = chat_body("gpt-4o-mini", "MOCK[tokens=600,delay_ms=100]", true);
    let r = send(&gw, "cut-1", Some(ENG_KEY), &slow).await;
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    body.next().await.unwrap().unwrap();
    let status = gw.stop();
    assert!(status.success(), "exit status {status:?}; log:\n{}", gw.log());
    drop(body);
    gw.spawn();
    let ev = gw.event("cut-1").await;
    assert_eq!(s(&ev, "outcome"), "client_disconnect", "{ev}");
    assert!(u(&ev, "output_tokens") < 600, "the stream ran to its end: {ev}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_event_queue_spills_to_disk_and_loses_nothing() {
    // A queue of one event and a burst of concurrent calls: most events take the spill path.
    let gw = Gateway::start_with(Opts { gateway: "event_queue_capacity = 1".into(), ..Opts::default() }).await;
    let n = 60u64;
    let calls = (0..n).map(|i| {
        let gw = &gw;
        async move {
            let r = send(
                gw,
                &format!("burst-{i}"),
                Some(ENG_KEY),
                &chat_body("gpt-4o-mini", "MOCK[prompt_tokens=10,tokens=2]", false),
            )
            .await;
            assert_eq!(r.status(), 200);
        }
    });
    futures_util::future::join_all(calls).await;
    assert_eq!(gw.wait_events(n).await, n);
    let rows = gw.sql("SELECT count(DISTINCT event_id) AS ids, count(DISTINCT request_id) AS rids, sum(cost_nanousd) AS cost FROM calls").await;
    assert_eq!((u(&rows[0], "ids"), u(&rows[0], "rids")), (n, n), "{rows:?}");
    assert_eq!(u(&rows[0], "cost"), n * cost(&[(10, MINI_IN), (2, MINI_OUT)]));
    let metrics = gw.http.get(format!("{}/metrics", gw.url)).send().await.unwrap().text().await.unwrap();
    let metric = |name: &str| -> u64 {
        metrics.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok())).unwrap_or(0)
    };
    assert!(metric("tollgate_events_spilled_total ") > 0, "the spill path was not exercised:\n{metrics}");
    assert_eq!(metric("tollgate_events_replayed_total "), metric("tollgate_events_spilled_total "));
    assert_eq!(metric("tollgate_events_lost_total "), 0);
    assert_eq!(metric("tollgate_events_emitted_total "), n);
}

#[test]
fn bad_config_exits_with_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[[upstreams]]\nname = \"a\"\nbase_url = \"http://x/v1\"\nmodels = [\"my-llama\"]\n", "upstreams[0].models"),
        ("[collector]\nflush_interval_ms = \"soon\"\n", "flush_interval_ms"),
        ("[server]\nlisten = \"127.0.0.1:1\"\ncolour = \"blue\"\n", "colour"),
        ("[server]\nio_threads = 100000\n", "server.io_threads"),
        ("[[upstreams]]\nname = \"a\"\nbase_url = \"ftp://x\"\nmodels = [\"gpt-4o\"]\n", "upstreams[0].base_url"),
        ("[[keys]]\nid = \"k\"\nhash = \"hunter2\"\n", "keys[0].hash"),
        ("[prices.\"m\"]\ninput = \"1.2.3\"\noutput = 1\n", "prices"),
    ];
    for (i, (toml, key)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("c{i}.toml"));
        std::fs::write(&path, toml).unwrap();
        for cmd in ["check", "serve"] {
            let out = std::process::Command::new(bin()).args([cmd, "--config"]).arg(&path).output().unwrap();
            assert_eq!(out.status.code(), Some(2), "{cmd} {toml}");
            let err = String::from_utf8(out.stderr).unwrap();
            assert_eq!(err.trim_end().lines().count(), 1, "one line expected: {err}");
            assert!(err.contains(key), "`{key}` not named in: {err}");
        }
    }
}

/// The background threads (metering, write-ahead log, Parquet writes) run `SCHED_BATCH` and, on a kernel
/// with per-thread slices (Linux 6.12 and later, where `sched_getattr` reports a slice for every
/// ordinary thread), ask for a 20 ms slice, longer than the connection threads' default, so a connection
/// thread that wakes takes the core from them at once; the connection threads keep the default policy.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_threads_yield_the_core_to_connection_threads() {
    let gw = Gateway::start().await;
    let r = gw.post("/v1/chat/completions", Some(ENG_KEY), &chat_body("gpt-4o-mini", "hi", false)).await;
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    gw.wait_events(1).await;
    let pid = gw.child.as_ref().unwrap().id();
    let (mut events, mut io) = (Vec::new(), Vec::new());
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let tid: i32 = task.file_name().unwrap().to_str().unwrap().parse().unwrap();
        let Ok(comm) = std::fs::read_to_string(task.join("comm")) else { continue };
        // (policy, slice in ns) as the kernel reports them: `struct sched_attr`, first version.
        let mut attr = [0u8; 48];
        // SAFETY: reads thread `tid`'s attributes into a 48-byte buffer, the size passed.
        let rc = unsafe { libc::syscall(libc::SYS_sched_getattr, tid, attr.as_mut_ptr(), 48u32, 0u32) };
        if rc != 0 {
            continue; // the thread ended meanwhile
        }
        let policy = u32::from_ne_bytes(attr[4..8].try_into().unwrap());
        let slice = u64::from_ne_bytes(attr[24..32].try_into().unwrap());
        match comm.trim() {
            "tollgate-events" => events.push((policy, slice)),
            c if c.starts_with("tollgate-io") => io.push((policy, slice)),
            _ => {}
        }
    }
    assert!(!events.is_empty() && !io.is_empty(), "events {events:?} io {io:?}");
    let slices = io.iter().all(|&(_, s)| s > 0);
    for &(policy, slice) in &events {
        assert_eq!(policy, libc::SCHED_BATCH as u32, "{events:?}");
        if slices {
            assert_eq!(slice, 20_000_000, "{events:?}");
        }
    }
    for &(policy, slice) in &io {
        assert_eq!(policy, libc::SCHED_OTHER as u32, "{io:?}");
        assert!(slice < 20_000_000, "{io:?}");
    }
}

/// The gateway keeps its upstream connections alive: calls one after another (non-stream, stream, an
/// Anthropic-format call translated, an upstream error) go over the one connection the first call opened;
/// a client that hangs up mid-stream costs that connection (HTTP/1 cannot drop half an answer) and one new
/// connection, nothing more; and every call, the hung-up one included, has its event. One connection
/// thread: each keeps upstream connections of its own (`inline_client`'s unit tests), so with more the
/// count would depend on which thread the client's connections were dealt to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused_across_calls_and_a_hang_up_costs_one() {
    let gw = Gateway::start_with(Opts { server: "shutdown_grace_ms = 5000\nio_threads = 1".into(), ..Opts::default() })
        .await;
    let first = gw.post("/v1/chat/completions", Some(ENG_KEY), &chat_body("gpt-4o-mini", "hi", false)).await;
    assert_eq!(first.status(), 200);
    first.bytes().await.unwrap();
    let opened = gw.mock.connections();
    assert!(opened >= 1);

    let mut calls = 1;
    for i in 0..6 {
        let stream = i % 2 == 1;
        let r =
            gw.post("/v1/chat/completions", Some(ENG_KEY), &chat_body("gpt-4o-mini", "MOCK[tokens=3]", stream)).await;
        assert_eq!(r.status(), 200);
        let text = String::from_utf8(r.bytes().await.unwrap().to_vec()).unwrap();
        assert!(text.contains("tok2"), "{text}");
        calls += 1;
    }
    let anthropic = serde_json::json!({"model": "gpt-4o-mini", "max_tokens": 50, "stream": true,
        "messages": [{"role": "user", "content": "MOCK[tokens=2]"}]});
    let r = gw.post("/v1/messages", Some(ENG_KEY), &anthropic.to_string()).await;
    assert_eq!(r.status(), 200);
    assert!(String::from_utf8(r.bytes().await.unwrap().to_vec()).unwrap().contains("message_stop"));
    calls += 1;
    let r = gw.post("/v1/chat/completions", Some(ENG_KEY), &chat_body("gpt-4o-mini", "MOCK[status=400]", false)).await;
    assert_eq!(r.status(), 400);
    r.bytes().await.unwrap();
    calls += 1;
    assert_eq!(gw.mock.connections(), opened, "calls one after another opened connections of their own");

    // A client that hangs up after the first chunk of a slow stream.
    let slow = chat_body("gpt-4o-mini", "MOCK[tokens=20,delay_ms=50]", true);
    let r = gw.post("/v1/chat/completions", Some(ENG_KEY), &slow).await;
    let mut body = r.bytes_stream();
    body.next().await.unwrap().unwrap();
    drop(body);
    calls += 1;
    for _ in 0..3 {
        let r = gw.post("/v1/chat/completions", Some(ENG_KEY), &chat_body("gpt-4o-mini", "MOCK[tokens=2]", true)).await;
        assert!(String::from_utf8(r.bytes().await.unwrap().to_vec()).unwrap().contains("[DONE]"));
        calls += 1;
    }
    assert_eq!(gw.mock.connections(), opened + 1);
    assert_eq!(gw.wait_events(calls).await, calls);
    let rows = gw.sql("SELECT outcome, count(*) AS n FROM calls GROUP BY outcome ORDER BY outcome").await;
    let n = |o: &str| rows.iter().find(|r| r["outcome"] == o).map_or(0, |r| u(r, "n"));
    assert_eq!((n("ok"), n("upstream_error"), n("client_disconnect")), (calls - 2, 1, 1), "{rows:?}");
}
