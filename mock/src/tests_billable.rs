//! Tests of the Responses API and the media endpoints over real HTTP.

use super::tests::{send, send_with, Reply};
use super::*;

/// A mono 16-bit PCM WAV of `ms` milliseconds at 8 kHz.
pub(crate) fn wav(ms: u32) -> Vec<u8> {
    let data_len = 16 * ms;
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&[1, 0, 1, 0]);
    b.extend_from_slice(&8000u32.to_le_bytes());
    b.extend_from_slice(&16000u32.to_le_bytes());
    b.extend_from_slice(&[2, 0, 16, 0]);
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    b.resize(b.len() + data_len as usize, 0);
    b
}

/// Typed SSE events: each frame's `event:` line must match its data's `type`.
fn typed_events(r: &Reply) -> Vec<Value> {
    let text = std::str::from_utf8(&r.body).unwrap();
    assert!(text.ends_with("\n\n"), "partial event in {text:?}");
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (name, data) = e.split_once('\n').unwrap();
            let v: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(v["type"], name.strip_prefix("event: ").unwrap());
            v
        })
        .collect()
}

fn kinds(ev: &[Value]) -> Vec<&str> {
    ev.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn responses_whole_with_usage_of_every_kind() {
    let mock = MockUpstream::start().await.unwrap();
    let body = json!({"model": "gpt-4.1", "instructions": "be brief",
        "input": "hello there MOCK[tokens=3,cached=2,reasoning=4,web_search=1]"})
    .to_string();
    let r = send(mock.addr(), "POST", "/v1/responses", &body).await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert!(v["id"].as_str().unwrap().starts_with("resp_mock"));
    assert_eq!(
        (v["object"].as_str(), v["status"].as_str(), v["model"].as_str()),
        (Some("response"), Some("completed"), Some("gpt-4.1"))
    );
    assert_eq!(v["instructions"], "be brief");
    assert_eq!(kinds(v["output"].as_array().unwrap().as_slice()), ["reasoning", "web_search_call", "message"]);
    assert_eq!(v["output"][2]["content"][0]["text"], "tok0 tok1 tok2 ");
    // Words: "be brief" (2) + "hello there MOCK[...]" (3), plus 3 per input item (instructions, input).
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 11, "input_tokens_details": {"cached_tokens": 2}, "output_tokens": 7,
            "output_tokens_details": {"reasoning_tokens": 4}, "total_tokens": 18})
    );
}

#[tokio::test]
async fn responses_stream_with_a_function_call_and_a_cut() {
    let mock = MockUpstream::start().await.unwrap();
    let tools = json!([{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]);
    let body = json!({"model": "gpt-4.1", "stream": true, "tools": tools, "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "find it MOCK[call,tokens=2]"}]}]})
    .to_string();
    let r = send(mock.addr(), "POST", "/v1/responses", &body).await;
    assert_eq!(r.headers["content-type"], "text/event-stream");
    let ev = typed_events(&r);
    assert_eq!(
        kinds(&ev),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let args: String = ev[3..7].iter().map(|e| e["delta"].as_str().unwrap()).collect();
    assert_eq!(args, r#"{"q":"tok0 tok1 "}"#);
    assert_eq!(ev[7]["arguments"], args.as_str());
    let done = &ev[9]["response"];
    assert_eq!(done["output"][0]["name"], "lookup");
    assert_eq!(done["output"][0]["call_id"], ev[2]["item"]["call_id"]);
    assert_eq!(done["usage"]["output_tokens"], 2);
    for (i, e) in ev.iter().enumerate() {
        assert_eq!(e["sequence_number"], i);
    }

    // cut=1: one text delta, then the connection breaks, no terminal event.
    let body = json!({"model": "m", "stream": true, "input": "MOCK[cut=1]"}).to_string();
    let r = send(mock.addr(), "POST", "/v1/responses", &body).await;
    assert!(r.body_error);
    let text = String::from_utf8_lossy(&r.body);
    assert_eq!(text.matches("response.output_text.delta\n").count(), 1);
    assert!(!text.contains("response.completed"));

    // finish=incomplete / failed end with their own event.
    let body = json!({"model": "m", "stream": true, "input": "MOCK[finish=incomplete]"}).to_string();
    let ev = typed_events(&send(mock.addr(), "POST", "/v1/responses", &body).await);
    assert_eq!(ev.last().unwrap()["type"], "response.incomplete");
    assert_eq!(ev.last().unwrap()["response"]["incomplete_details"]["reason"], "max_output_tokens");
    let body = json!({"model": "m", "stream": true, "input": "MOCK[finish=failed]"}).to_string();
    let ev = typed_events(&send(mock.addr(), "POST", "/v1/responses", &body).await);
    assert_eq!(ev.last().unwrap()["type"], "response.failed");
}

#[tokio::test]
async fn stored_responses_can_be_fetched_continued_and_deleted_only_where_they_live() {
    let a = MockUpstream::start().await.unwrap();
    let b = MockUpstream::start().await.unwrap();
    let r = send(a.addr(), "POST", "/v1/responses", &json!({"model": "m", "input": "hi"}).to_string()).await;
    let id = r.json()["id"].as_str().unwrap().to_string();
    let follow = json!({"model": "m", "input": "more", "previous_response_id": id}).to_string();
    let r = send(b.addr(), "POST", "/v1/responses", &follow).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "b never saw {id}");
    assert_eq!(r.json()["error"]["param"], "previous_response_id");
    let r = send(a.addr(), "POST", "/v1/responses", &follow).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["previous_response_id"], id.as_str());
    let r = send(a.addr(), "GET", &format!("/v1/responses/{id}"), "").await;
    assert_eq!((r.status, r.json()["id"].as_str()), (StatusCode::OK, Some(id.as_str())));
    assert_eq!(send(b.addr(), "GET", &format!("/v1/responses/{id}"), "").await.status, StatusCode::NOT_FOUND);
    let r = send(a.addr(), "DELETE", &format!("/v1/responses/{id}"), "").await;
    assert_eq!(r.json(), json!({"id": id, "object": "response.deleted", "deleted": true}));
    assert_eq!(send(a.addr(), "GET", &format!("/v1/responses/{id}"), "").await.status, StatusCode::NOT_FOUND);
    // store: false keeps nothing.
    let r =
        send(a.addr(), "POST", "/v1/responses", &json!({"model": "m", "input": "x", "store": false}).to_string()).await;
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(send(a.addr(), "GET", &format!("/v1/responses/{id}"), "").await.status, StatusCode::NOT_FOUND);
}

fn multipart(fields: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "mockboundary42";
    let mut body = Vec::new();
    for (name, data) in fields {
        let file = if *name == "file" { "; filename=\"a.wav\"" } else { "" };
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"{file}\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn send_bytes(addr: SocketAddr, path: &str, content_type: &str, body: Vec<u8>) -> Reply {
    // The shared helper sends text; audio is binary, so send it through a raw connection here.
    use http_body_util::{BodyExt, Full};
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::post(path)
        .header("host", addr.to_string())
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
    Reply { status, headers, body, body_error: false }
}

#[tokio::test]
async fn transcriptions_report_seconds_tokens_or_nothing_by_model_and_format() {
    let mock = MockUpstream::start().await.unwrap();
    let audio = wav(2_500);
    let (ct, body) = multipart(&[("file", &audio), ("model", b"whisper-1")]);
    let r = send_bytes(mock.addr(), "/v1/audio/transcriptions", &ct, body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json(), json!({"text": "tok0 tok1 tok2 tok3 tok4", "usage": {"type": "duration", "seconds": 3}}));
    let (ct, body) = multipart(&[("file", &audio), ("model", b"gpt-4o-transcribe"), ("prompt", b"two words")]);
    let v = send_bytes(mock.addr(), "/v1/audio/transcriptions", &ct, body).await.json();
    assert_eq!(v["usage"]["input_token_details"], json!({"text_tokens": 2, "audio_tokens": 25}));
    let (ct, body) = multipart(&[("file", &audio), ("model", b"whisper-1"), ("response_format", b"text")]);
    let r = send_bytes(mock.addr(), "/v1/audio/translations", &ct, body).await;
    assert_eq!(r.body, b"tok0 tok1 tok2 tok3 tok4");
    let (ct, body) = multipart(&[("file", b"not audio"), ("model", b"whisper-1")]);
    assert_eq!(send_bytes(mock.addr(), "/v1/audio/transcriptions", &ct, body).await.status, StatusCode::BAD_REQUEST);
    let (ct, body) = multipart(&[("file", &audio), ("model", b"whisper-1"), ("prompt", b"MOCK[status=429]")]);
    assert_eq!(
        send_bytes(mock.addr(), "/v1/audio/transcriptions", &ct, body).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn speech_images_and_moderations() {
    let mock = MockUpstream::start().await.unwrap();
    let r = send(
        mock.addr(),
        "POST",
        "/v1/audio/speech",
        &json!({"model": "tts-1", "input": "héllo", "voice": "alloy"}).to_string(),
    )
    .await;
    assert_eq!(
        (r.status, r.headers["content-type"].to_str().unwrap(), r.body.len()),
        (StatusCode::OK, "audio/mpeg", 500)
    );
    let r = send(
        mock.addr(),
        "POST",
        "/v1/images/generations",
        &json!({"model": "dall-e-3", "prompt": "a cat", "n": 2}).to_string(),
    )
    .await;
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 2);
    assert!(r.json().get("usage").is_none());
    let r = send(
        mock.addr(),
        "POST",
        "/v1/images/generations",
        &json!({"model": "gpt-image-1", "prompt": "a cat"}).to_string(),
    )
    .await;
    assert_eq!(r.json()["usage"]["output_tokens"], 272);
    assert_eq!(r.json()["usage"]["input_tokens_details"]["text_tokens"], 2);
    let r = send(mock.addr(), "POST", "/v1/moderations", &json!({"input": ["a", "b"]}).to_string()).await;
    assert_eq!(r.json()["results"].as_array().unwrap().len(), 2);
    assert_eq!(r.json()["model"], "omni-moderation-latest");
}

#[tokio::test]
async fn anthropic_calls_the_first_tool_on_request() {
    let mock = MockUpstream::start().await.unwrap();
    let body = json!({"model": "claude-x", "max_tokens": 100, "tools": [{"name": "lookup", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": "find MOCK[call,tokens=2]"}]});
    let hdr = [("anthropic-version", "2023-06-01")];
    let v = send_with(mock.addr(), "POST", "/v1/messages", &body.to_string(), &hdr).await.json();
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(v["content"][0]["type"], "tool_use");
    assert_eq!(v["content"][0]["input"], json!({"q": "tok0 tok1 "}));
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let r = send_with(mock.addr(), "POST", "/v1/messages", &streamed.to_string(), &hdr).await;
    let text = String::from_utf8(r.body).unwrap();
    let args: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v.pointer("/delta/partial_json").and_then(Value::as_str).map(str::to_string))
        .collect();
    assert_eq!(args, r#"{"q":"tok0 tok1 "}"#);
    assert!(text.contains(r#""stop_reason":"tool_use""#));
}
