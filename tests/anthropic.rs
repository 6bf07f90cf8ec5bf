//! End-to-end tests of the Anthropic Messages API and of translation between client and upstream
//! formats, through the real `tollgate` binary and the mock upstream (which speaks OpenAI's and
//! Anthropic's wire formats on one port). Each case checks what the upstream received, what the client
//! got, and the call event to the token and the nano-dollar.

// Test code: failing loudly is its job.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};

/// An Anthropic upstream (`claude-*`) and an Azure OpenAI one (`gpt-4.1-nano`), next to the harness's
/// OpenAI-compatible upstream (`gpt-4o-mini`, …), all served by the same mock.
const EXTRA_UPSTREAMS: &str = r#"
[[upstreams]]
name = "claude"
kind = "anthropic"
base_url = "{mock_base}"
api_key_env = "TG_TEST_UPSTREAM_KEY"
models = ["claude-sonnet-4-5", "claude-haiku-4-5"]
default_max_tokens = 777
request_timeout_ms = 1500
idle_timeout_ms = 5000
[[upstreams]]
name = "azure"
kind = "azure_openai"
base_url = "{mock_root}"
api_key_env = "TG_TEST_UPSTREAM_KEY"
api_version = "2024-10-21"
models = ["gpt-4.1-nano"]
deployments = { "gpt-4.1-nano" = "nano-prod" }
request_timeout_ms = 1500
idle_timeout_ms = 5000
"#;

async fn start() -> Gateway {
    Gateway::start_with(Opts { extra: EXTRA_UPSTREAMS.into(), ..Opts::default() }).await
}

// Built-in prices, nano-USD per million tokens (USD per million x 10^9).
const SONNET: Rates = Rates { input: 3_000_000_000, cached: 300_000_000, write: 3_750_000_000, output: 15_000_000_000 };
const HAIKU: Rates = Rates { input: 1_000_000_000, cached: 100_000_000, write: 1_250_000_000, output: 5_000_000_000 };
const MINI: Rates = Rates { input: 150_000_000, cached: 75_000_000, write: 150_000_000, output: 600_000_000 };
const NANO: Rates = Rates { input: 100_000_000, cached: 25_000_000, write: 100_000_000, output: 400_000_000 };
const O4_MINI: Rates = Rates { input: 1_100_000_000, cached: 275_000_000, write: 1_100_000_000, output: 4_400_000_000 };

#[derive(Clone, Copy)]
struct Rates {
    input: u64,
    cached: u64,
    write: u64,
    output: u64,
}

/// Cost of a call in nano-USD: `input` includes `cached` and `write`; reasoning is billed as output.
fn cost(r: Rates, input: u64, cached: u64, write: u64, output: u64) -> u64 {
    let micro = (input - cached - write) * r.input + cached * r.cached + write * r.write + output * r.output;
    (micro + 500_000) / 1_000_000
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Client {
    OpenAi,
    Anthropic,
}

/// Posts `body` as the given client format would, with its own auth header.
async fn call(gw: &Gateway, client: Client, rid: &str, body: &Value) -> reqwest::Response {
    let req = match client {
        Client::OpenAi => gw.http.post(format!("{}/v1/chat/completions", gw.url)).bearer_auth(ENG_KEY),
        Client::Anthropic => gw
            .http
            .post(format!("{}/v1/messages", gw.url))
            .header("x-api-key", ENG_KEY)
            .header("anthropic-version", "2023-06-01"),
    };
    req.header("content-type", "application/json")
        .header("x-request-id", rid)
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

/// `(event name, data JSON)` of an SSE body; `[DONE]` comes back as a string.
fn sse(text: &str) -> Vec<(Option<String>, Value)> {
    assert!(text.ends_with("\n\n"), "partial event at the end of {text:?}");
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let name = e.lines().find_map(|l| l.strip_prefix("event: ")).map(str::to_string);
            let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap_or_else(|| panic!("no data in {e:?}"));
            let v = serde_json::from_str(data).unwrap_or_else(|_| Value::String(data.to_string()));
            (name, v)
        })
        .collect()
}

/// The upstream request the mock received for a request id.
fn upstream_request(gw: &Gateway, rid: &str) -> tollgate_mock::RecordedRequest {
    gw.mock
        .requests()
        .into_iter()
        .find(|r| r.header("x-request-id") == Some(rid))
        .unwrap_or_else(|| panic!("the upstream never received {rid}"))
}

struct Expect {
    input: u64,
    cached: u64,
    write: u64,
    output: u64,
    reasoning: u64,
    cost: u64,
    provider: &'static str,
    finish: &'static str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_format_reaches_every_upstream_kind_metered_exactly() {
    let gw = start().await;
    // One directive for all upstreams: Anthropic reports 500 plain + 400 cache-read + 100 cache-write
    // input tokens and 3 text + 2 thinking output tokens; OpenAI-format upstreams report a 1000-token
    // prompt of which 400 cached, and 5 completion tokens of which 2 reasoning.
    let directive = "MOCK[tokens=3,prompt_tokens=1000,cached=400,cache_write=100,reasoning=2]";
    let anthropic_up = Expect {
        input: 1000,
        cached: 400,
        write: 100,
        output: 5,
        reasoning: 0,
        cost: 0,
        provider: "anthropic",
        finish: "end_turn",
    };
    let openai_up =
        Expect { input: 1000, cached: 400, write: 0, output: 5, reasoning: 2, cost: 0, provider: "", finish: "stop" };
    let cases = [
        ("gpt-4o-mini", Expect { cost: cost(MINI, 1000, 400, 0, 5), provider: "openai_compatible", ..openai_up }),
        ("claude-sonnet-4-5", Expect { cost: cost(SONNET, 1000, 400, 100, 5), ..anthropic_up }),
        ("gpt-4.1-nano", Expect { cost: cost(NANO, 1000, 400, 0, 5), provider: "azure_openai", ..openai_up }),
    ];
    assert_eq!(cases[1].1.cost, 1_500_000 + 120_000 + 375_000 + 75_000);
    let mut n = 0;
    for client in [Client::OpenAi, Client::Anthropic] {
        for (model, exp) in &cases {
            for stream in [false, true] {
                let rid = format!("t-{client:?}-{model}-{stream}");
                let body = match client {
                    Client::OpenAi => json!({
                        "model": model, "stream": stream, "temperature": 0.5, "stop": ["END"],
                        "messages": [
                            {"role": "system", "content": "Be brief."},
                            {"role": "user", "content": "first question"},
                            {"role": "assistant", "content": "first answer"},
                            {"role": "user", "content": format!("second {directive}")}
                        ]
                    }),
                    Client::Anthropic => json!({
                        "model": model, "stream": stream, "temperature": 0.5, "stop_sequences": ["END"], "max_tokens": 256,
                        "system": "Be brief.",
                        "messages": [
                            {"role": "user", "content": "first question"},
                            {"role": "assistant", "content": "first answer"},
                            {"role": "user", "content": [{"type": "text", "text": format!("second {directive}")}]}
                        ]
                    }),
                };
                let r = call(&gw, client, &rid, &body).await;
                assert_eq!(r.status(), 200, "{rid}");
                let ct = r.headers()["content-type"].to_str().unwrap().to_string();
                let text = r.text().await.unwrap();
                n += 1;
                check_upstream_request(&gw, &rid, client, model, stream, &body);
                check_client_response(&rid, client, exp.provider, stream, &ct, &text);
            }
        }
    }
    gw.wait_events(n).await;
    for client in [Client::OpenAi, Client::Anthropic] {
        for (model, exp) in &cases {
            for stream in [false, true] {
                let rid = format!("t-{client:?}-{model}-{stream}");
                let ev = gw.event(&rid).await;
                let tokens = (
                    u(&ev, "input_tokens"),
                    u(&ev, "cached_input_tokens"),
                    u(&ev, "cache_write_tokens"),
                    u(&ev, "output_tokens"),
                    u(&ev, "reasoning_tokens"),
                );
                assert_eq!(tokens, (exp.input, exp.cached, exp.write, exp.output, exp.reasoning), "{rid}: {ev}");
                assert_eq!(u(&ev, "cost_nanousd"), exp.cost, "{rid}: {ev}");
                assert_eq!(s(&ev, "usage_source"), "provider", "{rid}");
                assert_eq!(s(&ev, "outcome"), "ok", "{rid}");
                assert_eq!(s(&ev, "provider"), exp.provider, "{rid}");
                assert_eq!(s(&ev, "finish_reason"), exp.finish, "{rid}");
                assert_eq!(ev["stream"], stream, "{rid}");
                let (api, endpoint) = match client {
                    Client::OpenAi => ("openai", "chat"),
                    Client::Anthropic => ("anthropic", "messages"),
                };
                assert_eq!((s(&ev, "client_api"), s(&ev, "endpoint")), (api, endpoint), "{rid}");
                assert_eq!(s(&ev, "department"), "engineering");
            }
        }
    }
}

fn check_upstream_request(gw: &Gateway, rid: &str, client: Client, model: &str, stream: bool, sent: &Value) {
    let req = upstream_request(gw, rid);
    let body = req.json();
    match model {
        "claude-sonnet-4-5" => {
            assert_eq!(req.path, "/v1/messages", "{rid}");
            assert_eq!(req.header("x-api-key"), Some(UPSTREAM_SECRET), "{rid}");
            assert_eq!(req.header("anthropic-version"), Some("2023-06-01"), "{rid}");
            assert_eq!(req.header("authorization"), None, "{rid}: the Anthropic upstream gets x-api-key only");
            let expected = json!({
                "model": model, "stream": stream, "temperature": 0.5, "stop_sequences": ["END"],
                "max_tokens": if client == Client::OpenAi { 777 } else { 256 },
                "system": "Be brief.",
                "messages": [
                    {"role": "user", "content": "first question"},
                    {"role": "assistant", "content": "first answer"},
                    {"role": "user", "content": sent["messages"].as_array().unwrap().last().unwrap()["content"].clone()}
                ]
            });
            assert_eq!(body, expected, "{rid}");
            if client == Client::Anthropic {
                assert_eq!(req.body, sent.to_string().as_bytes(), "{rid}: same format must be forwarded byte for byte");
            }
        }
        _ => {
            if model == "gpt-4.1-nano" {
                assert_eq!(req.path, "/openai/deployments/nano-prod/chat/completions", "{rid}");
                assert_eq!(req.query, "api-version=2024-10-21", "{rid}");
                assert_eq!(req.header("api-key"), Some(UPSTREAM_SECRET), "{rid}");
            } else {
                assert_eq!(req.path, "/v1/chat/completions", "{rid}");
                assert_eq!(req.header("authorization"), Some(format!("Bearer {UPSTREAM_SECRET}").as_str()), "{rid}");
            }
            assert_eq!(req.header("anthropic-version"), None, "{rid}");
            let last_text = match client {
                Client::OpenAi => sent["messages"][3]["content"].clone(),
                Client::Anthropic => sent["messages"][2]["content"][0]["text"].clone(),
            };
            let mut expected = json!({
                "model": model, "stream": stream, "temperature": 0.5, "stop": ["END"],
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "first question"},
                    {"role": "assistant", "content": "first answer"},
                    {"role": "user", "content": last_text}
                ]
            });
            if client == Client::Anthropic {
                expected["max_tokens"] = json!(256);
            }
            if stream {
                expected["stream_options"] = json!({"include_usage": true});
            }
            assert_eq!(body, expected, "{rid}");
            if client == Client::OpenAi && !stream {
                assert_eq!(req.body, sent.to_string().as_bytes(), "{rid}: same format must be forwarded byte for byte");
            }
        }
    }
}

fn check_client_response(rid: &str, client: Client, provider: &str, stream: bool, ct: &str, text: &str) {
    let from_anthropic = provider == "anthropic";
    match (client, stream) {
        (Client::OpenAi, false) => {
            assert_eq!(ct, "application/json", "{rid}");
            let v: Value = serde_json::from_str(text).unwrap();
            assert_eq!(v["object"], "chat.completion", "{rid}");
            let choice = &v["choices"][0];
            assert_eq!(choice["message"]["content"], "tok0 tok1 tok2 ", "{rid}");
            assert_eq!(choice["finish_reason"], "stop", "{rid}");
            if from_anthropic {
                assert_eq!(choice["message"]["reasoning_content"], "think0 think1 ", "{rid}");
            }
            assert_eq!(v["usage"]["prompt_tokens"], 1000, "{rid}");
            assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 400, "{rid}");
            assert_eq!(v["usage"]["completion_tokens"], 5, "{rid}");
        }
        (Client::OpenAi, true) => {
            assert_eq!(ct, "text/event-stream", "{rid}");
            let events = sse(text);
            assert_eq!(events.last().unwrap().1, "[DONE]", "{rid}");
            let chunks = &events[..events.len() - 1];
            assert!(chunks.iter().all(|(name, c)| name.is_none() && c["object"] == "chat.completion.chunk"), "{rid}");
            assert!(
                chunks.iter().all(|(_, c)| c.get("usage").is_none_or(Value::is_null)),
                "{rid}: usage not asked for"
            );
            assert_eq!(chunks[0].1["choices"][0]["delta"]["role"], "assistant", "{rid}");
            let content: String =
                chunks.iter().filter_map(|(_, c)| c["choices"][0]["delta"]["content"].as_str()).collect();
            assert_eq!(content, "tok0 tok1 tok2 ", "{rid}");
            let finishes: Vec<&str> =
                chunks.iter().filter_map(|(_, c)| c["choices"][0]["finish_reason"].as_str()).collect();
            assert_eq!(finishes, ["stop"], "{rid}");
            if from_anthropic {
                let thinking: String =
                    chunks.iter().filter_map(|(_, c)| c["choices"][0]["delta"]["reasoning_content"].as_str()).collect();
                assert_eq!(thinking, "think0 think1 ", "{rid}");
            }
        }
        (Client::Anthropic, false) => {
            assert_eq!(ct, "application/json", "{rid}");
            let v: Value = serde_json::from_str(text).unwrap();
            assert_eq!((&v["type"], &v["role"]), (&json!("message"), &json!("assistant")), "{rid}");
            let texts: Vec<&Value> = v["content"].as_array().unwrap().iter().filter(|b| b["type"] == "text").collect();
            assert_eq!(texts, [&json!({"type": "text", "text": "tok0 tok1 tok2 "})], "{rid}");
            assert_eq!(v["stop_reason"], "end_turn", "{rid}");
            let usage = &v["usage"];
            let expected = if from_anthropic { (500, 400, 100) } else { (600, 400, 0) };
            assert_eq!(
                (&usage["input_tokens"], &usage["cache_read_input_tokens"], &usage["cache_creation_input_tokens"]),
                (&json!(expected.0), &json!(expected.1), &json!(expected.2)),
                "{rid}"
            );
            assert_eq!(usage["output_tokens"], 5, "{rid}");
        }
        (Client::Anthropic, true) => {
            assert_eq!(ct, "text/event-stream", "{rid}");
            let events = sse(text);
            for (name, data) in &events {
                assert_eq!(name.as_deref(), data["type"].as_str(), "{rid}: event name and data type differ");
            }
            let names: Vec<&str> = events.iter().map(|(_, d)| d["type"].as_str().unwrap()).collect();
            assert_eq!(names[0], "message_start", "{rid}");
            assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"], "{rid}");
            // Blocks open and close in order, each delta inside its block.
            let mut open: Option<u64> = None;
            for (_, d) in &events {
                match d["type"].as_str().unwrap() {
                    "content_block_start" => {
                        assert!(open.is_none(), "{rid}: block opened inside another");
                        open = d["index"].as_u64();
                    }
                    "content_block_delta" => assert_eq!(open, d["index"].as_u64(), "{rid}"),
                    "content_block_stop" => {
                        assert_eq!(open, d["index"].as_u64(), "{rid}");
                        open = None;
                    }
                    _ => {}
                }
            }
            let text: String = events.iter().filter_map(|(_, d)| d["delta"]["text"].as_str()).collect();
            assert_eq!(text, "tok0 tok1 tok2 ", "{rid}");
            let delta = &events[events.len() - 2].1;
            assert_eq!(delta["delta"]["stop_reason"], "end_turn", "{rid}");
            assert_eq!(delta["usage"]["output_tokens"], 5, "{rid}");
            if !from_anthropic {
                // Translated: the real prompt counts arrive with the last delta.
                assert_eq!(delta["usage"]["input_tokens"], 600, "{rid}");
                assert_eq!(delta["usage"]["cache_read_input_tokens"], 400, "{rid}");
            }
        }
    }
}

fn tools_openai() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather", "description": "Current weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}, "unit": {"type": "string"}}, "required": ["location"]}
    }}])
}

fn tools_anthropic() -> Value {
    json!([{
        "name": "get_weather", "description": "Current weather",
        "input_schema": {"type": "object", "properties": {"location": {"type": "string"}, "unit": {"type": "string"}}, "required": ["location"]}
    }])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_translate_both_ways_streamed_and_whole() {
    let gw = start().await;

    // OpenAI client, Anthropic upstream, streamed: a recorded Anthropic tool-use stream.
    let body = json!({
        "model": "claude-haiku-4-5", "stream": true, "tools": tools_openai(), "tool_choice": "auto",
        "messages": [
            {"role": "user", "content": "Weather in Paris? MOCK[fixture=anthropic_messages_stream_tools]"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_prev", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"location\":\"Lyon\"}"}}]},
            {"role": "tool", "tool_call_id": "call_prev", "content": "18C"}
        ]
    });
    let r = call(&gw, Client::OpenAi, "tools-oa-an-stream", &body).await;
    let events = sse(&r.text().await.unwrap());
    let up = upstream_request(&gw, "tools-oa-an-stream").json();
    assert_eq!(up["tools"], tools_anthropic());
    assert_eq!(up["tool_choice"], json!({"type": "auto"}));
    assert_eq!(
        up["messages"][1],
        json!({"role": "assistant", "content": [{"type": "tool_use", "id": "call_prev", "name": "get_weather", "input": {"location": "Lyon"}}]})
    );
    assert_eq!(
        up["messages"][2],
        json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_prev", "content": "18C"}]})
    );
    let chunks: Vec<&Value> = events.iter().map(|(_, v)| v).filter(|v| v.is_object()).collect();
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "I'll check the weather in Paris for you.");
    let calls: Vec<&Value> =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array()).flatten().collect();
    assert_eq!(calls[0]["id"], "toolu_01A9sKq3mZx7WbN2rT5yVc4E");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert!(calls.iter().all(|c| c["index"] == 0));
    let args: String = calls.iter().filter_map(|c| c["function"]["arguments"].as_str()).collect();
    assert_eq!(serde_json::from_str::<Value>(&args).unwrap(), json!({"location": "Paris, France", "unit": "celsius"}));
    assert!(calls.len() >= 4, "arguments arrive as streamed deltas, not at once");
    let finish: Vec<&str> = chunks.iter().filter_map(|c| c["choices"][0]["finish_reason"].as_str()).collect();
    assert_eq!(finish, ["tool_calls"]);
    assert_eq!(events.last().unwrap().1, "[DONE]");

    // Anthropic client, OpenAI upstream, streamed: a recorded OpenAI tool-call stream.
    let body = json!({
        "model": "gpt-4o-mini", "stream": true, "max_tokens": 100, "tools": tools_anthropic(),
        "tool_choice": {"type": "any"},
        "messages": [{"role": "user", "content": "Weather? MOCK[fixture=openai_chat_stream_tools]"}]
    });
    let r = call(&gw, Client::Anthropic, "tools-an-oa-stream", &body).await;
    let events = sse(&r.text().await.unwrap());
    let up = upstream_request(&gw, "tools-an-oa-stream").json();
    assert_eq!(up["tools"], tools_openai());
    assert_eq!(up["tool_choice"], "required");
    let starts: Vec<&Value> = events
        .iter()
        .filter(|(n, _)| n.as_deref() == Some("content_block_start"))
        .map(|(_, d)| &d["content_block"])
        .collect();
    assert_eq!(
        starts,
        [&json!({"type": "tool_use", "id": "call_Xk3nT9bq2LmV8sPdW4rJ7uYc", "name": "get_weather", "input": {}})]
    );
    let partial: Vec<&str> = events.iter().filter_map(|(_, d)| d["delta"]["partial_json"].as_str()).collect();
    assert!(partial.len() >= 10, "every upstream argument delta becomes an input_json_delta: {partial:?}");
    let args: String = partial.concat();
    assert_eq!(serde_json::from_str::<Value>(&args).unwrap(), json!({"location": "Paris, France", "unit": "celsius"}));
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(
        delta["usage"],
        json!({"input_tokens": 81, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 23})
    );

    // OpenAI client, Anthropic upstream, whole.
    let body = json!({
        "model": "claude-haiku-4-5", "tools": tools_openai(), "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "max_completion_tokens": 64,
        "messages": [{"role": "user", "content": "MOCK[fixture=anthropic_messages_nonstream_tools]"}]
    });
    let r = call(&gw, Client::OpenAi, "tools-oa-an-whole", &body).await;
    let v: Value = r.json().await.unwrap();
    let up = upstream_request(&gw, "tools-oa-an-whole").json();
    assert_eq!(up["tool_choice"], json!({"type": "tool", "name": "get_weather"}));
    assert_eq!(up["max_tokens"], 64);
    let m = &v["choices"][0]["message"];
    assert_eq!(m["content"], "I'll look that up.");
    assert_eq!(m["tool_calls"][0]["id"], "toolu_01Bq7Xw3Ns9Kd2Lm5Vr8TjYc");
    assert_eq!(
        serde_json::from_str::<Value>(m["tool_calls"][0]["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"location": "Paris, France", "unit": "celsius"})
    );
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(v["usage"]["prompt_tokens"], 391 + 1024);

    // Anthropic client, OpenAI upstream, whole, with cached and reasoning usage.
    let body = json!({
        "model": "gpt-4o-mini", "max_tokens": 300, "tools": tools_anthropic(),
        "messages": [{"role": "user", "content": "MOCK[fixture=openai_chat_nonstream_tools]"}]
    });
    let r = call(&gw, Client::Anthropic, "tools-an-oa-whole", &body).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["content"],
        json!([{"type": "tool_use", "id": "call_Zr4mK8nT2qWx6Lb9Vc3Yp7Ds", "name": "get_weather", "input": {"location": "Paris, France", "unit": "celsius"}}])
    );
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 290, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 1920, "output_tokens": 283})
    );

    gw.wait_events(4).await;
    let check = |ev: &Value, t: (u64, u64, u64, u64, u64), c: u64, finish: &str| {
        let got = (
            u(ev, "input_tokens"),
            u(ev, "cached_input_tokens"),
            u(ev, "cache_write_tokens"),
            u(ev, "output_tokens"),
            u(ev, "reasoning_tokens"),
        );
        assert_eq!(got, t, "{ev}");
        assert_eq!(u(ev, "cost_nanousd"), c, "{ev}");
        assert_eq!(s(ev, "finish_reason"), finish, "{ev}");
        assert_eq!(s(ev, "usage_source"), "provider", "{ev}");
    };
    let ev = gw.event("tools-oa-an-stream").await;
    assert_eq!(s(&ev, "served_model"), "claude-haiku-4-5-20251001");
    check(&ev, (472, 0, 0, 89, 0), cost(HAIKU, 472, 0, 0, 89), "tool_use");
    assert_eq!(u(&ev, "cost_nanousd"), 472_000 + 445_000);
    check(&gw.event("tools-an-oa-stream").await, (81, 0, 0, 23, 0), cost(MINI, 81, 0, 0, 23), "tool_calls");
    check(&gw.event("tools-oa-an-whole").await, (1415, 1024, 0, 64, 0), cost(HAIKU, 1415, 1024, 0, 64), "tool_use");
    // Served by o4-mini per the recorded body: priced at o4-mini's rates, reasoning billed as output.
    let ev = gw.event("tools-an-oa-whole").await;
    check(&ev, (2210, 1920, 0, 283, 256), cost(O4_MINI, 2210, 1920, 0, 283), "tool_calls");
    assert_eq!(u(&ev, "cost_nanousd"), 319_000 + 528_000 + 1_245_200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_passthrough_is_byte_for_byte_and_sums_split_usage_right() {
    let gw = start().await;
    let fixtures = tollgate_mock::default_fixture_dir();
    for (rid, stream, fixture) in [
        ("pass-stream", true, "anthropic_messages_stream_text.sse"),
        ("pass-whole", false, "anthropic_messages_nonstream.json"),
    ] {
        let name = fixture.split('.').next().unwrap();
        let body = json!({
            "model": "claude-sonnet-4-5", "max_tokens": 1024, "stream": stream,
            "system": [{"type": "text", "text": "You answer from the invoice.", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": format!("MOCK[fixture={name}]")}]
        });
        let r = gw
            .http
            .post(format!("{}/v1/messages", gw.url))
            .bearer_auth(ENG_KEY)
            .header("anthropic-version", "2023-06-01")
            .header("anthropic-beta", "prompt-caching-2024-07-31")
            .header("x-request-id", rid)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let got = r.bytes().await.unwrap();
        let recorded = std::fs::read_to_string(fixtures.join(fixture)).unwrap();
        if stream {
            // The mock sends each recorded event as it is; the gateway must not change a byte.
            let expected: String =
                recorded.split("\n\n").map(str::trim).filter(|e| !e.is_empty()).map(|e| format!("{e}\n\n")).collect();
            assert_eq!(String::from_utf8_lossy(&got), expected);
        } else {
            assert_eq!(&got[..], recorded.as_bytes());
        }
        let up = upstream_request(&gw, rid);
        assert_eq!(up.body, body.to_string().as_bytes());
        assert_eq!(up.header("anthropic-beta"), Some("prompt-caching-2024-07-31"));
    }
    gw.wait_events(2).await;
    // message_start: 21 plain + 1210 cache-write + 3072 cache-read input, output 2 (a placeholder);
    // message_delta: the same input counts again and output 11, cumulative. Summed right: 4303 in, 11 out.
    let ev = gw.event("pass-stream").await;
    assert_eq!(
        (u(&ev, "input_tokens"), u(&ev, "cached_input_tokens"), u(&ev, "cache_write_tokens"), u(&ev, "output_tokens")),
        (4303, 3072, 1210, 11),
        "{ev}"
    );
    assert_eq!(u(&ev, "cost_nanousd"), cost(SONNET, 4303, 3072, 1210, 11));
    assert_eq!(u(&ev, "cost_nanousd"), 63_000 + 921_600 + 4_537_500 + 165_000);
    assert_eq!(s(&ev, "served_model"), "claude-sonnet-4-5-20250929");
    assert!(s(&ev, "price_id").starts_with("claude-sonnet-4-5@"));
    let ev = gw.event("pass-whole").await;
    assert_eq!(
        (u(&ev, "input_tokens"), u(&ev, "cached_input_tokens"), u(&ev, "cache_write_tokens"), u(&ev, "output_tokens")),
        (12336, 10240, 2048, 27)
    );
    assert_eq!(u(&ev, "cost_nanousd"), 144_000 + 3_072_000 + 7_680_000 + 405_000);
}

/// Reads a stream until `needle` has arrived, then hangs up.
async fn read_until_then_drop(r: reqwest::Response, needle: &str) -> String {
    let mut stream = r.bytes_stream();
    let mut got = String::new();
    while let Some(b) = stream.next().await {
        got.push_str(&String::from_utf8_lossy(&b.unwrap()));
        if got.contains(needle) {
            break;
        }
    }
    drop(stream);
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_and_cut_streams_in_both_formats_are_metered_once() {
    let gw = start().await;
    let slow = "please count MOCK[tokens=50,delay_ms=100,prompt_tokens=40]";
    let cases = [
        ("hang-an-an", Client::Anthropic, "claude-sonnet-4-5"),
        ("hang-oa-an", Client::OpenAi, "claude-sonnet-4-5"),
        ("hang-an-oa", Client::Anthropic, "gpt-4o-mini"),
        ("hang-oa-oa", Client::OpenAi, "gpt-4o-mini"),
    ];
    for (rid, client, model) in cases {
        let body =
            json!({"model": model, "stream": true, "max_tokens": 500, "messages": [{"role": "user", "content": slow}]});
        let r = call(&gw, client, rid, &body).await;
        assert_eq!(r.status(), 200);
        let got = read_until_then_drop(r, "tok1 ").await;
        assert!(got.contains("tok0 "), "{rid}: {got}");
    }
    // The upstream cuts an Anthropic stream after 3 tokens; the OpenAI client sees the abort.
    let body = json!({"model": "claude-sonnet-4-5", "stream": true, "messages": [{"role": "user", "content": "MOCK[tokens=20,cut=3,prompt_tokens=40]"}]});
    let r = call(&gw, Client::OpenAi, "cut-oa-an", &body).await;
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
    assert!(errored && got.contains("tok2 ") && !got.contains("[DONE]"), "{got}");

    assert_eq!(gw.wait_events(5).await, 5, "exactly one event per request");
    for (rid, _, model) in cases {
        let ev = gw.event(rid).await;
        assert_eq!(s(&ev, "outcome"), "client_disconnect", "{rid}: {ev}");
        assert_eq!(u(&ev, "status_code"), 200, "{rid}");
        assert!(u(&ev, "output_tokens") >= 2, "{rid}: what was streamed is counted: {ev}");
        assert!(u(&ev, "cost_nanousd") > 0, "{rid}");
        if model.starts_with("claude") {
            // The prompt count came with message_start; the output is counted with cl100k_base, an
            // approximation for Claude, and the event says so.
            assert_eq!(u(&ev, "input_tokens"), 40, "{rid}: {ev}");
            assert_eq!(s(&ev, "usage_source"), "estimated_approx", "{rid}");
        } else {
            assert_eq!(s(&ev, "usage_source"), "estimated", "{rid}");
        }
    }
    let ev = gw.event("cut-oa-an").await;
    assert_eq!((s(&ev, "outcome"), s(&ev, "error_type")), ("upstream_error", "upstream_stream_cut"));
    assert_eq!(u(&ev, "input_tokens"), 40);
    assert!((3..=9).contains(&u(&ev, "output_tokens")), "{ev}");
    assert_eq!(s(&ev, "usage_source"), "estimated_approx");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_reach_each_client_in_its_own_shape() {
    let gw = start().await;
    let msg = |model: &str, text: &str| json!({"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": text}]});
    let post_messages = |rid: &'static str, key: Option<&'static str>, body: String| {
        let gw = &gw;
        async move {
            let mut req = gw.http.post(format!("{}/v1/messages", gw.url)).header("x-request-id", rid).body(body);
            if let Some(k) = key {
                req = req.header("x-api-key", k);
            }
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let headers = r.headers().clone();
            (status, headers, r.json::<Value>().await.unwrap())
        }
    };
    let anthropic_shape = |v: &Value, kind: &str| {
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["error"]["type"], kind, "{v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty(), "{v}");
    };

    let (st, _, v) = post_messages("e-nokey", None, msg("claude-sonnet-4-5", "x").to_string()).await;
    assert_eq!(st, 401);
    anthropic_shape(&v, "authentication_error");
    let (st, _, v) = post_messages("e-badkey", Some("sk-nope"), msg("claude-sonnet-4-5", "x").to_string()).await;
    assert_eq!(st, 401);
    anthropic_shape(&v, "authentication_error");
    let (st, _, v) = post_messages("e-badjson", Some(ENG_KEY), "{nope".into()).await;
    assert_eq!(st, 400);
    anthropic_shape(&v, "invalid_request_error");
    let (st, _, v) = post_messages("e-nomodel", Some(ENG_KEY), msg("claude-9", "x").to_string()).await;
    assert_eq!(st, 404);
    anthropic_shape(&v, "not_found_error");
    let (st, _, v) = post_messages("e-forbidden", Some(FIN_KEY), msg("claude-sonnet-4-5", "x").to_string()).await;
    assert_eq!(st, 403);
    anthropic_shape(&v, "permission_error");

    // What cannot be translated is refused, naming the field, in the client's shape; nothing goes upstream.
    let mut body = msg("gpt-4o-mini", "x");
    body["top_k"] = json!(40);
    let (st, _, v) = post_messages("e-topk", Some(ENG_KEY), body.to_string()).await;
    assert_eq!(st, 400);
    anthropic_shape(&v, "invalid_request_error");
    assert!(v["error"]["message"].as_str().unwrap().contains("`top_k`"), "{v}");
    let body = json!({"model": "claude-sonnet-4-5", "n": 2, "messages": [{"role": "user", "content": "x"}]});
    let r = call(&gw, Client::OpenAi, "e-n", &body).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!((&v["error"]["param"], &v["error"]["code"]), (&json!("n"), &json!("unsupported_parameter")), "{v}");
    let r = gw
        .http
        .post(format!("{}/v1/embeddings", gw.url))
        .bearer_auth(ENG_KEY)
        .header("x-request-id", "e-emb")
        .body(json!({"model": "claude-sonnet-4-5", "input": "x"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["param"], "model", "{v}");
    assert!(gw.mock.requests().iter().all(|r| !matches!(r.header("x-request-id"), Some("e-topk" | "e-n" | "e-emb"))));

    // Upstream errors: passed through when formats match, rewritten (message kept) when they differ.
    let (st, h, v) =
        post_messages("e-529", Some(ENG_KEY), msg("claude-sonnet-4-5", "MOCK[status=529]").to_string()).await;
    assert_eq!(st, 529);
    assert_eq!(
        v,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "MOCK status 529: simulated upstream error"}})
    );
    assert!(h.get("retry-after").is_none());
    let (st, h, v) =
        post_messages("e-500", Some(ENG_KEY), msg("gpt-4o-mini", "MOCK[status=500,retry_after=2]").to_string()).await;
    assert_eq!(st, 500);
    assert_eq!(
        v,
        json!({"type": "error", "error": {"type": "api_error", "message": "MOCK status 500: simulated upstream error"}})
    );
    assert_eq!(h["retry-after"], "2");
    let body = json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "MOCK[status=429,retry_after=3]"}]});
    let r = call(&gw, Client::OpenAi, "e-429", &body).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "3");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert_eq!(v["error"]["message"], "MOCK status 429: simulated upstream error");

    let expected = [
        ("e-nokey", "unauthorized", 401, ""),
        ("e-badkey", "unauthorized", 401, ""),
        ("e-badjson", "invalid_request", 400, ""),
        ("e-nomodel", "invalid_request", 404, ""),
        ("e-forbidden", "invalid_request", 403, ""),
        ("e-topk", "invalid_request", 400, "unsupported_parameter"),
        ("e-n", "invalid_request", 400, "unsupported_parameter"),
        ("e-emb", "invalid_request", 400, "unsupported_parameter"),
        ("e-529", "upstream_error", 529, "overloaded_error"),
        ("e-500", "upstream_error", 500, "server_error"),
        ("e-429", "upstream_error", 429, "rate_limit_error"),
    ];
    assert_eq!(gw.wait_events(expected.len() as u64).await, expected.len() as u64);
    for (rid, outcome, status, etype) in expected {
        let ev = gw.event(rid).await;
        assert_eq!((s(&ev, "outcome"), u(&ev, "status_code")), (outcome, status), "{rid}: {ev}");
        if !etype.is_empty() {
            assert_eq!(s(&ev, "error_type"), etype, "{rid}");
        }
        assert_eq!(u(&ev, "cost_nanousd"), 0, "{rid}");
    }
    assert_eq!(s(&gw.event("e-topk").await, "client_api"), "anthropic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_tokens_is_forwarded_to_anthropic_or_counted_here() {
    let gw = start().await;
    let count = |rid: &'static str, model: &'static str, text: &'static str| {
        let gw = &gw;
        async move {
            let body = json!({"model": model, "system": "Be brief.", "messages": [{"role": "user", "content": text}]});
            gw.http
                .post(format!("{}/v1/messages/count_tokens", gw.url))
                .header("x-api-key", ENG_KEY)
                .header("anthropic-version", "2023-06-01")
                .header("x-request-id", rid)
                .body(body.to_string())
                .send()
                .await
                .unwrap()
        }
    };
    let r = count("c-anthropic", "claude-sonnet-4-5", "MOCK[prompt_tokens=42]").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"input_tokens": 42}));
    let up = upstream_request(&gw, "c-anthropic");
    assert_eq!((up.path.as_str(), up.header("x-api-key")), ("/v1/messages/count_tokens", Some(UPSTREAM_SECRET)));

    let r = count("c-openai", "gpt-4o-mini", "hello world").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-tollgate-token-count"], "tokenizer");
    // o200k: 3 (reply) + system 3 + "Be brief." 3 + user 3 + "user" 1 + "hello world" 2.
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"input_tokens": 15}));
    assert!(gw.mock.requests().iter().all(|r| r.header("x-request-id") != Some("c-openai")));

    gw.wait_events(2).await;
    for rid in ["c-anthropic", "c-openai"] {
        let ev = gw.event(rid).await;
        assert_eq!((s(&ev, "outcome"), s(&ev, "endpoint"), s(&ev, "client_api")), ("ok", "other", "anthropic"));
        assert_eq!((u(&ev, "input_tokens"), u(&ev, "cost_nanousd")), (0, 0), "counting tokens is free: {ev}");
    }
}

/// A real Anthropic client that this project did not write (the `async-anthropic` crate), pointed at the
/// gateway: whole and streamed messages, from an Anthropic upstream (passthrough) and from an OpenAI one
/// (translated), and a streamed tool call. It dispatches on SSE event names and refuses unknown ones, so
/// it checks the event sequence as well as the JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_party_anthropic_client_works_unchanged() {
    use async_anthropic::types::{
        ContentBlockDelta, CreateMessagesRequestBuilder, MessageBuilder, MessageContent, MessageRole,
        MessagesStreamEvent,
    };
    let gw = start().await;
    let client = async_anthropic::Client::builder()
        .base_url(gw.url.clone())
        .api_key(ENG_KEY.to_string())
        .version("2023-06-01")
        .build()
        .unwrap();
    let request = |model: &str, text: &str, stream: bool| {
        let mut b = CreateMessagesRequestBuilder::default();
        b.model(model).max_tokens(200).stream(stream).system("Be brief.").messages(vec![MessageBuilder::default()
            .role(MessageRole::User)
            .content(text)
            .build()
            .unwrap()]);
        b.build().unwrap()
    };
    for model in ["claude-sonnet-4-5", "gpt-4o-mini"] {
        let resp =
            client.messages().create(request(model, "hello MOCK[tokens=3,prompt_tokens=100]", false)).await.unwrap();
        let content = resp.content.unwrap();
        assert_eq!(content[0].as_text().unwrap().text, "tok0 tok1 tok2 ", "{model}");
        assert_eq!(resp.stop_reason.as_deref(), Some("end_turn"), "{model}");
        let usage = resp.usage.unwrap();
        assert_eq!((usage.input_tokens, usage.output_tokens), (Some(100), Some(3)), "{model}");

        let mut stream =
            client.messages().create_stream(request(model, "hi MOCK[tokens=4,prompt_tokens=50]", true)).await;
        let mut events = Vec::new();
        while let Some(ev) = stream.next().await {
            events.push(ev.unwrap());
        }
        assert!(matches!(events.first(), Some(MessagesStreamEvent::MessageStart { .. })), "{model}: {events:?}");
        assert!(matches!(events.last(), Some(MessagesStreamEvent::MessageStop)), "{model}: {events:?}");
        let text: String = events
            .iter()
            .filter_map(|e| match e {
                MessagesStreamEvent::ContentBlockDelta { delta: ContentBlockDelta::TextDelta { text }, .. } => {
                    Some(text.as_str())
                }
                _ => None,
            })
            .collect();
        assert_eq!(text, "tok0 tok1 tok2 tok3 ", "{model}");
        let out = events.iter().find_map(|e| match e {
            MessagesStreamEvent::MessageDelta { usage, delta } => {
                assert_eq!(delta.stop_reason.as_deref(), Some("end_turn"));
                usage.as_ref().and_then(|u| u.output_tokens)
            }
            _ => None,
        });
        assert_eq!(out, Some(4), "{model}");
    }

    // A streamed tool call from an OpenAI upstream, as the client assembles it.
    let mut req = request("gpt-4o-mini", "Weather? MOCK[fixture=openai_chat_stream_tools]", true);
    req.tools = Some(vec![tools_anthropic()[0].as_object().unwrap().clone()]);
    let mut stream = client.messages().create_stream(req).await;
    let mut tool = None;
    let mut args = String::new();
    while let Some(ev) = stream.next().await {
        match ev.unwrap() {
            MessagesStreamEvent::ContentBlockStart { content_block: MessageContent::ToolUse(t), .. } => tool = Some(t),
            MessagesStreamEvent::ContentBlockDelta {
                delta: ContentBlockDelta::InputJsonDelta { partial_json },
                ..
            } => args.push_str(&partial_json),
            _ => {}
        }
    }
    let tool = tool.unwrap();
    assert_eq!((tool.id.as_str(), tool.name.as_str()), ("call_Xk3nT9bq2LmV8sPdW4rJ7uYc", "get_weather"));
    assert_eq!(serde_json::from_str::<Value>(&args).unwrap(), json!({"location": "Paris, France", "unit": "celsius"}));

    gw.wait_events(5).await;
    let rows = gw
        .sql("SELECT requested_model, stream, input_tokens, output_tokens, cost_nanousd, client_api, outcome FROM calls ORDER BY ts_start")
        .await;
    let got: Vec<(String, bool, u64, u64, u64)> = rows
        .iter()
        .map(|r| {
            assert_eq!((s(r, "client_api"), s(r, "outcome")), ("anthropic", "ok"), "{r}");
            (
                s(r, "requested_model").to_string(),
                r["stream"].as_bool().unwrap(),
                u(r, "input_tokens"),
                u(r, "output_tokens"),
                u(r, "cost_nanousd"),
            )
        })
        .collect();
    let row = |m: &str, stream, i, o, r| (m.to_string(), stream, i, o, cost(r, i, 0, 0, o));
    assert_eq!(
        got,
        [
            row("claude-sonnet-4-5", false, 100, 3, SONNET),
            row("claude-sonnet-4-5", true, 50, 4, SONNET),
            row("gpt-4o-mini", false, 100, 3, MINI),
            row("gpt-4o-mini", true, 50, 4, MINI),
            row("gpt-4o-mini", true, 81, 23, MINI),
        ]
    );
}
