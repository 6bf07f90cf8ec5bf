//! Tests of the mock over real HTTP/1.1 with hyper's low-level client.

use super::*;
use http::HeaderMap;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Vec<u8>,
    /// The body ended with an error instead of cleanly.
    pub(super) body_error: bool,
}

impl Reply {
    pub(super) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// SSE `data:` payloads in order.
    fn events(&self) -> Vec<String> {
        let text = std::str::from_utf8(&self.body).unwrap();
        assert!(text.is_empty() || text.ends_with("\n\n"), "partial event in {text:?}");
        text.split("\n\n").filter(|e| !e.is_empty()).map(|e| e.strip_prefix("data: ").unwrap().to_owned()).collect()
    }
}

pub(super) async fn send(addr: SocketAddr, method: &str, path: &str, body: &str) -> Reply {
    send_with(addr, method, path, body, &[]).await
}

pub(super) async fn send_with(addr: SocketAddr, method: &str, path: &str, body: &str, extra: &[(&str, &str)]) -> Reply {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .header("Authorization", "Bearer sk-test");
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let mut incoming = resp.into_body();
    let mut out = Vec::new();
    let mut body_error = false;
    while let Some(frame) = incoming.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    out.extend_from_slice(data);
                }
            }
            Err(_) => {
                body_error = true;
                break;
            }
        }
    }
    Reply { status, headers, body: out, body_error }
}

fn chat_body(content: &str, stream: bool, include_usage: Option<bool>) -> String {
    let mut v = json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": content},
        ],
    });
    if stream {
        v["stream"] = json!(true);
    }
    if let Some(include) = include_usage {
        v["stream_options"] = json!({"include_usage": include});
    }
    v.to_string()
}

fn chunk(event: &str) -> Value {
    serde_json::from_str(event).unwrap()
}

#[tokio::test]
async fn non_stream_matches_openai_shape() {
    let mock = MockUpstream::start().await.unwrap();
    assert_eq!(mock.base_url(), format!("http://{}/v1", mock.addr()));
    let body = chat_body("hello there MOCK[tokens=3,cached=2,reasoning=4]", false, None);
    let r = send(mock.addr(), "POST", "/v1/chat/completions", &body).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.headers["content-length"], r.body.len().to_string());
    let v = r.json();
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-mock"));
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(v["model"], "gpt-4o-mini");
    assert_eq!(v["service_tier"], "default");
    assert_eq!(v["system_fingerprint"], "fp_mock");
    let choice = &v["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(
        choice["message"],
        json!({"role": "assistant", "content": "tok0 tok1 tok2 ", "refusal": null, "annotations": []})
    );
    assert_eq!(choice["logprobs"], Value::Null);
    assert_eq!(choice["finish_reason"], "stop");
    // Words: "be brief" (2) + "hello there MOCK[...]" (3), plus 3 per message.
    assert_eq!(
        v["usage"],
        json!({
            "prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18,
            "prompt_tokens_details": {"cached_tokens": 2, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 4, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
        })
    );
    assert_eq!(mock.answered(), 1);
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].path, "/v1/chat/completions");
    assert_eq!(reqs[0].header("authorization"), Some("Bearer sk-test"));
    assert_eq!(reqs[0].header("Authorization"), Some("Bearer sk-test"));
    assert_eq!(reqs[0].json()["model"], "gpt-4o-mini");
}

#[tokio::test]
async fn stream_without_usage() {
    let mock = MockUpstream::start().await.unwrap();
    let body = chat_body("hi", true, None);
    let r = send(mock.addr(), "POST", "/v1/chat/completions", &body).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-type"], "text/event-stream");
    assert!(!r.body_error);
    let events = r.events();
    assert_eq!(events.len(), 1 + 5 + 1 + 1);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let first = chunk(&events[0]);
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["model"], "gpt-4o-mini");
    assert_eq!(first["service_tier"], "default");
    assert_eq!(first["system_fingerprint"], "fp_mock");
    assert_eq!(
        first["choices"],
        json!([{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": null},
                "logprobs": null, "finish_reason": null}])
    );
    let id = first["id"].clone();
    for (i, e) in events[1..6].iter().enumerate() {
        let c = chunk(e);
        assert_eq!(c["id"], id);
        assert_eq!(c["choices"][0]["delta"], json!({"content": format!("tok{i} ")}));
        assert_eq!(c["choices"][0]["finish_reason"], Value::Null);
    }
    let last = chunk(&events[6]);
    assert_eq!(last["choices"][0]["delta"], json!({}));
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    for e in &events[..7] {
        assert!(chunk(e).get("usage").is_none(), "usage in {e}");
    }
    assert_eq!(mock.answered(), 1);
    assert_eq!(mock.dropped_early(), 0);

    // include_usage: false is the same as absent.
    let body = chat_body("hi", true, Some(false));
    let r = send(mock.addr(), "POST", "/v1/chat/completions", &body).await;
    assert_eq!(r.events().len(), 8);
    assert!(!String::from_utf8(r.body).unwrap().contains("usage"));
}

#[tokio::test]
async fn stream_with_usage() {
    let mock = MockUpstream::start().await.unwrap();
    let body =
        chat_body("one two MOCK[tokens=2,prompt_tokens=40,cached=8,reasoning=1,finish=length]", true, Some(true));
    let r = send(mock.addr(), "POST", "/v1/chat/completions", &body).await;
    let events = r.events();
    assert_eq!(events.len(), 1 + 2 + 1 + 1 + 1);
    assert_eq!(events[5], "[DONE]");
    for e in &events[..4] {
        assert_eq!(chunk(e)["usage"], Value::Null, "{e}");
        assert!(chunk(e).as_object().unwrap().contains_key("usage"));
    }
    assert_eq!(chunk(&events[3])["choices"][0]["finish_reason"], "length");
    let usage_chunk = chunk(&events[4]);
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], 40);
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 3);
    assert_eq!(usage_chunk["usage"]["total_tokens"], 43);
    assert_eq!(usage_chunk["usage"]["prompt_tokens_details"]["cached_tokens"], 8);
    assert_eq!(usage_chunk["usage"]["completion_tokens_details"]["reasoning_tokens"], 1);

    // no_usage wins over include_usage.
    let body = chat_body("MOCK[no_usage,tokens=1]", true, Some(true));
    let r = send(mock.addr(), "POST", "/v1/chat/completions", &body).await;
    assert_eq!(r.events().len(), 4);
    assert!(!String::from_utf8(r.body).unwrap().contains("usage"));
    assert_eq!(mock.answered(), 2);
}

#[tokio::test]
async fn directive_in_content_parts_and_pacing() {
    let mock = MockUpstream::start().await.unwrap();
    let body = json!({
        "model": "m",
        "stream": true,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "MOCK[tokens=9]"},
            {"type": "image_url", "image_url": {"url": "data:,"}},
            {"type": "text", "text": "look MOCK[tokens=2,delay_ms=5,first_delay_ms=5]"},
        ]}],
    })
    .to_string();
    let r = send(mock.addr(), "POST", "/v1/chat/completions", &body).await;
    assert_eq!(r.events().len(), 5);
}

#[tokio::test]
async fn status_directive() {
    let mock = MockUpstream::start().await.unwrap();
    let cases = [
        (429, "rate_limit_error", "rate_limit_exceeded"),
        (503, "server_error", "server_error"),
        (400, "invalid_request_error", "invalid_request"),
        (401, "api_error", "api_error"),
    ];
    for (status, kind, code) in cases {
        let body = chat_body(&format!("MOCK[status={status},retry_after=2]"), true, None);
        let r = send(mock.addr(), "POST", "/v1/chat/completions", &body).await;
        assert_eq!(r.status.as_u16(), status);
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.headers["retry-after"], "2");
        let v = r.json();
        assert_eq!(v["error"]["type"], kind);
        assert_eq!(v["error"]["code"], code);
        assert_eq!(v["error"]["param"], Value::Null);
        assert!(v["error"]["message"].is_string());
    }
    assert_eq!(mock.answered(), 0);
    assert_eq!(mock.received(), 4);
}

#[tokio::test]
async fn cut_ends_body_with_error() {
    let mock = MockUpstream::start().await.unwrap();
    let body = chat_body("MOCK[cut=2]", true, Some(true));
    let r = send(mock.addr(), "POST", "/v1/chat/completions", &body).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body_error, "body must end with an error");
    let events = r.events();
    assert_eq!(events.len(), 3, "role + 2 content chunks: {events:?}");
    assert_eq!(chunk(&events[2])["choices"][0]["delta"]["content"], "tok1 ");
    assert_eq!(mock.answered(), 0);
    assert_eq!(mock.dropped_early(), 1);

    // cut beyond the content still withholds finish, usage and [DONE].
    let body = chat_body("MOCK[cut=99,tokens=1]", true, Some(true));
    let r = send(mock.addr(), "POST", "/v1/chat/completions", &body).await;
    assert!(r.body_error);
    assert_eq!(r.events().len(), 2);
}

#[tokio::test]
async fn hang_until_client_leaves() {
    let mock = MockUpstream::start().await.unwrap();
    let tcp = tokio::net::TcpStream::connect(mock.addr()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::post("/v1/chat/completions")
        .header("host", "mock")
        .body(Full::new(Bytes::from(chat_body("MOCK[hang]", true, None))))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(first.starts_with(b"data: {"));
    let next = tokio::time::timeout(Duration::from_millis(30), body.frame()).await;
    assert!(next.is_err(), "hang must not send more");
    drop(body);
    drop(sender);
    conn.abort();
    for _ in 0..200 {
        if mock.dropped_early() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(mock.dropped_early(), 1);
    assert_eq!(mock.answered(), 0);
}

#[tokio::test]
async fn embeddings() {
    let mock = MockUpstream::start().await.unwrap();
    let body = json!({"model": "text-embedding-3-small", "input": "the quick brown fox"}).to_string();
    let r = send(mock.addr(), "POST", "/v1/embeddings", &body).await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "text-embedding-3-small");
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    assert_eq!(v["data"][0]["object"], "embedding");
    assert_eq!(v["data"][0]["index"], 0);
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(v["usage"], json!({"prompt_tokens": 4, "total_tokens": 4}));

    let body = json!({"model": "e", "input": ["a b", "c MOCK[prompt_tokens=99]", "d"]}).to_string();
    let v = send(mock.addr(), "POST", "/v1/embeddings", &body).await.json();
    assert_eq!(v["data"].as_array().unwrap().len(), 3);
    assert_eq!(v["data"][2]["index"], 2);
    assert_eq!(v["usage"]["prompt_tokens"], 99);

    let body = json!({"model": "e", "input": ["x y"], "encoding_format": "base64"}).to_string();
    let v = send(mock.addr(), "POST", "/v1/embeddings", &body).await.json();
    assert_eq!(v["data"][0]["embedding"].as_str().unwrap().len(), 44);
    assert_eq!(v["usage"]["prompt_tokens"], 2);
    assert_eq!(mock.answered(), 3);
}

#[tokio::test]
async fn models_errors_and_unknown_paths() {
    let mock = MockUpstream::start().await.unwrap();
    let v = send(mock.addr(), "GET", "/v1/models", "").await.json();
    assert_eq!(v["object"], "list");
    assert!(v["data"].as_array().unwrap().len() >= 3);
    assert_eq!(v["data"][0]["object"], "model");

    let r = send(mock.addr(), "GET", "/v1/models/gpt-4o-mini", "").await;
    assert_eq!(r.json()["id"], "gpt-4o-mini");

    let r = send(mock.addr(), "POST", "/v1/nope", "{}").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");

    let r = send(mock.addr(), "POST", "/v1/chat/completions", "{not json").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");

    let r = send(mock.addr(), "POST", "/v1/embeddings", "[").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    let r = send(mock.addr(), "POST", "/v1/chat/completions", &chat_body("MOCK[bogus=1]", false, None)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["code"], "invalid_mock_directive");

    let r = send(mock.addr(), "GET", "/v1/chat/completions", "").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(mock.received(), 7);
    assert_eq!(mock.answered(), 2);
}

#[tokio::test]
async fn fixtures_replay_verbatim() {
    let mock = MockUpstream::start().await.unwrap();
    let dir = default_fixture_dir();
    for name in ["openai_chat_stream_text", "openai_chat_stream_tools"] {
        let expected = std::fs::read_to_string(dir.join(format!("{name}.jsonl"))).unwrap();
        let body = chat_body(&format!("MOCK[fixture={name}]"), true, Some(true));
        let r = send(mock.addr(), "POST", "/v1/chat/completions", &body).await;
        assert_eq!(r.status, StatusCode::OK);
        let events = r.events();
        let lines: Vec<&str> = expected.lines().collect();
        assert_eq!(events.len(), lines.len() + 1);
        assert_eq!(&events[..lines.len()], &lines[..]);
        assert_eq!(events.last().unwrap(), "[DONE]");
        let usage = chunk(&events[lines.len() - 1]);
        assert_eq!(usage["choices"], json!([]));
        assert!(usage["usage"]["total_tokens"].as_u64().unwrap() > 0);
    }

    let expected = std::fs::read(dir.join("openai_chat_nonstream.json")).unwrap();
    let body = chat_body("MOCK[fixture=openai_chat_nonstream]", false, None);
    let r = send(mock.addr(), "POST", "/v1/chat/completions", &body).await;
    assert_eq!(r.body, expected);
    assert_eq!(r.json()["usage"]["prompt_tokens_details"]["cached_tokens"], 1024);

    let body = chat_body("MOCK[fixture=openai_chat_stream_text,cut=3]", true, None);
    let r = send(mock.addr(), "POST", "/v1/chat/completions", &body).await;
    assert!(r.body_error);
    assert_eq!(r.events().len(), 3);

    let body = chat_body("MOCK[fixture=missing]", true, None);
    let r = send(mock.addr(), "POST", "/v1/chat/completions", &body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(mock.answered(), 3);
}

#[tokio::test]
async fn fixture_dir_is_configurable() {
    let dir = std::env::temp_dir().join(format!("tollgate-mock-fixtures-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("one.jsonl"), "{\"a\":1}\n\n{\"b\":2}\n").unwrap();
    let mock = MockUpstream::start_with_fixtures(dir.clone()).await.unwrap();
    let body = chat_body("MOCK[fixture=one]", true, None);
    let r = send(mock.addr(), "POST", "/v1/chat/completions", &body).await;
    assert_eq!(r.events(), vec![r#"{"a":1}"#, r#"{"b":2}"#, "[DONE]"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn recording_is_capped() {
    let shared = Shared {
        requests: Mutex::new(VecDeque::new()),
        received: AtomicU64::new(0),
        answered: AtomicU64::new(0),
        dropped_early: AtomicU64::new(0),
        next_id: AtomicU64::new(1),
        fixture_dir: default_fixture_dir(),
        instance: Mutex::new(None),
        engine: Mutex::new(None),
        metrics_scrapes: AtomicU64::new(0),
        connections: AtomicU64::new(0),
        responses: responses::Store::default(),
    };
    let (parts, ()) = http::Request::post("/v1/x").body(()).unwrap().into_parts();
    for i in 0..MAX_RECORDED + 5 {
        shared.record(&parts, Bytes::from(i.to_string()));
    }
    let requests = shared.lock_requests();
    assert_eq!(requests.len(), MAX_RECORDED);
    assert_eq!(requests.front().unwrap().body, "5");
    assert_eq!(shared.received.load(Ordering::Relaxed), MAX_RECORDED as u64 + 5);
}

const ANTHROPIC: &[(&str, &str)] = &[("anthropic-version", "2023-06-01"), ("x-api-key", "sk-ant-test")];

fn messages_body(content: &str, stream: bool) -> String {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "stream": stream,
        "system": "be brief",
        "messages": [{"role": "user", "content": [{"type": "text", "text": content}]}],
    })
    .to_string()
}

#[tokio::test]
async fn anthropic_messages_whole_and_streamed_with_cache_usage() {
    let mock = MockUpstream::start().await.unwrap();
    let body = messages_body("hello there MOCK[tokens=3,prompt_tokens=100,cached=60,cache_write=30]", false);
    let r = send_with(mock.addr(), "POST", "/v1/messages", &body, ANTHROPIC).await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"], json!([{"type": "text", "text": "tok0 tok1 tok2 "}]));
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(
        (
            &v["usage"]["input_tokens"],
            &v["usage"]["cache_read_input_tokens"],
            &v["usage"]["cache_creation_input_tokens"]
        ),
        (&json!(10), &json!(60), &json!(30))
    );
    assert_eq!(v["usage"]["output_tokens"], 3);

    let body = messages_body("MOCK[tokens=2,prompt_tokens=50,cached=20,reasoning=3]", true);
    let r = send_with(mock.addr(), "POST", "/v1/messages", &body, ANTHROPIC).await;
    assert_eq!(r.headers["content-type"], "text/event-stream");
    let text = String::from_utf8(r.body).unwrap();
    let kinds: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
    assert_eq!(kinds[0], "message_start");
    assert_eq!(&kinds[kinds.len() - 2..], ["message_delta", "message_stop"]);
    assert_eq!(kinds.iter().filter(|k| **k == "content_block_start").count(), 2, "thinking + text");
    assert!(text.contains(r#""output_tokens":5"#), "2 text + 3 thinking: {text}");
    assert!(text.contains(r#""input_tokens":30"#) && text.contains(r#""cache_read_input_tokens":20"#));
}

#[tokio::test]
async fn anthropic_requires_version_and_max_tokens_and_errors_in_its_shape() {
    let mock = MockUpstream::start().await.unwrap();
    let r = send(mock.addr(), "POST", "/v1/messages", &messages_body("hi", false)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    let no_max = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let r = send_with(mock.addr(), "POST", "/v1/messages", &no_max, ANTHROPIC).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = send_with(mock.addr(), "POST", "/v1/messages", &messages_body("MOCK[status=529]", false), ANTHROPIC).await;
    assert_eq!(r.status.as_u16(), 529);
    assert_eq!(
        r.json(),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "MOCK status 529: simulated upstream error"}})
    );
    let r = send_with(
        mock.addr(),
        "POST",
        "/v1/messages/count_tokens",
        &messages_body("MOCK[prompt_tokens=42]", false),
        ANTHROPIC,
    )
    .await;
    assert_eq!(r.json(), json!({"input_tokens": 42}));
}

#[tokio::test]
async fn anthropic_fixture_is_replayed_event_by_event_and_azure_path_is_served() {
    let mock = MockUpstream::start().await.unwrap();
    let body = messages_body("MOCK[fixture=anthropic_messages_stream_tools]", true);
    let r = send_with(mock.addr(), "POST", "/v1/messages", &body, ANTHROPIC).await;
    let text = String::from_utf8(r.body).unwrap();
    let recorded = std::fs::read_to_string(default_fixture_dir().join("anthropic_messages_stream_tools.sse")).unwrap();
    assert_eq!(text.trim_end(), recorded.trim_end());
    let r = send(
        mock.addr(),
        "POST",
        "/openai/deployments/dep1/chat/completions?api-version=2024-10-21",
        &chat_body("hi", false, None),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let last = mock.last_request().unwrap();
    assert_eq!(
        (last.path.as_str(), last.query.as_str()),
        ("/openai/deployments/dep1/chat/completions", "api-version=2024-10-21")
    );
}

#[tokio::test]
async fn engine_metrics_are_settable_and_not_counted_as_calls() {
    let mock = MockUpstream::start().await.unwrap();
    let addr = mock.addr();
    assert_eq!(send(addr, "GET", "/metrics", "").await.status, StatusCode::NOT_FOUND);
    mock.set_engine("engine=vllm,waiting=5,running=2,kv=0.5").unwrap();
    let r = send(addr, "GET", "/metrics", "").await;
    let text = String::from_utf8(r.body).unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert!(text.contains("vllm:num_requests_waiting{model_name=\"mock-model\"} 5.0\n"), "{text}");
    // Changed at run time over HTTP, as the binary's users do.
    let set = send(addr, "POST", "/mock/engine", "engine=sglang,waiting=3,status=503").await;
    assert_eq!(set.status, StatusCode::OK);
    assert_eq!(send(addr, "GET", "/metrics", "").await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(send(addr, "POST", "/mock/engine", "engine=tgi").await.status, StatusCode::BAD_REQUEST);
    assert!(mock.set_engine("waiting=3").is_err());
    assert_eq!((mock.received(), mock.metrics_scrapes()), (0, 3));
}
