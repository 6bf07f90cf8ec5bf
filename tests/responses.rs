//! OpenAI's Responses API and the other billable endpoints through the real binary: the official
//! `openai` Python SDK (`client.responses.create` whole, streamed, with a function tool) to an upstream
//! that speaks the Responses API and, translated, to an Anthropic upstream, with exact nano-USD per
//! event; a cancelled Responses stream; `previous_response_id` pinned to the upstream that holds it;
//! budgets on Responses and audio calls; audio, speech, images and moderations metered in their units;
//! an unknown endpoint answered 404 with one event.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{s, u, Gateway, Opts, ENG_KEY};
use serde_json::{json, Value};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tollgate_mock::MockUpstream;

/// nano-USD of `tokens` at `usd_per_million` (a decimal string), exact: the test's own arithmetic.
fn nano(tokens: u64, usd_per_million: &str) -> u128 {
    let (int, frac) = usd_per_million.split_once('.').unwrap_or((usd_per_million, ""));
    let frac = format!("{frac:0<9}");
    let per_million_nano: u128 = int.parse::<u128>().unwrap() * 1_000_000_000 + frac.parse::<u128>().unwrap();
    u128::from(tokens) * per_million_nano
}

/// Rounds a sum of `nano()` terms (nano-USD × 10⁶) half up, once.
fn round(micro_sum: u128) -> u64 {
    ((micro_sum + 500_000) / 1_000_000) as u64
}

// Prices the config gives the test models (USD per million tokens).
const NATIVE_IN: &str = "2";
const NATIVE_CACHED: &str = "0.5";
const NATIVE_OUT: &str = "8";
const CLAUDE_IN: &str = "3";
const CLAUDE_CACHED: &str = "0.3";
const CLAUDE_OUT: &str = "15";

fn config_extra() -> String {
    format!(
        r#"
[[upstreams]]
name = "oai"
kind = "openai"
base_url = "{{mock_base}}"
models = ["resp-native", "whisper-1", "tts-1", "dall-e-3", "omni-moderation-latest"]
[[upstreams]]
name = "claude"
kind = "anthropic"
base_url = "{{mock_base}}"
models = ["claude-house"]
[prices."resp-native"]
input = "{NATIVE_IN}"
cached_input = "{NATIVE_CACHED}"
output = "{NATIVE_OUT}"
[prices."claude-house"]
input = "{CLAUDE_IN}"
cached_input = "{CLAUDE_CACHED}"
output = "{CLAUDE_OUT}"
"#
    )
}

/// A Python with the `openai` SDK: `TOLLGATE_OPENAI_PYTHON` (set by scripts/test.sh), else a venv made
/// once in the user's cache directory.
fn openai_python() -> PathBuf {
    if let Ok(p) = std::env::var("TOLLGATE_OPENAI_PYTHON") {
        return PathBuf::from(p);
    }
    let cache = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache"));
    let venv = cache.join("tollgate-test/openai-3.57.0");
    let python = venv.join("bin/python");
    let ok = |p: &PathBuf| Command::new(p).args(["-c", "import openai"]).status().is_ok_and(|s| s.success());
    if !ok(&python) {
        let st = Command::new("python3").arg("-m").arg("venv").arg(&venv).status().expect("python3 -m venv");
        assert!(st.success(), "could not create a venv at {}; install python3-venv", venv.display());
        let st = Command::new(&python).args(["-m", "pip", "install", "-q", "openai==3.57.0"]).status().unwrap();
        assert!(st.success(), "pip install openai==3.57.0 failed");
    }
    python
}

/// Runs tests/responses_sdk.py against the gateway and returns what it printed. The mock upstream lives
/// in this test's runtime, so the script runs (and is waited for) on a blocking thread; a run longer
/// than 90 s is killed and fails the test with its output so far.
async fn run_sdk(gw: &Gateway) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/responses_sdk.py");
    let mut cmd = Command::new(openai_python());
    cmd.arg(script)
        .env("OPENAI_BASE_URL", gw.base())
        .env("OPENAI_API_KEY", ENG_KEY)
        .env("TG_NATIVE_MODEL", "resp-native")
        .env("TG_TRANSLATED_MODEL", "claude-house")
        .env("PYTHONUNBUFFERED", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (status, stdout, stderr) = tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().expect("run the SDK script");
        let drain = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = r.read_to_end(&mut buf);
                buf
            })
        };
        let stdout = drain(Box::new(child.stdout.take().unwrap()));
        let stderr = drain(Box::new(child.stderr.take().unwrap()));
        let deadline = Instant::now() + Duration::from_secs(90);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break Some(st);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        (status, stdout.join().unwrap(), stderr.join().unwrap())
    })
    .await
    .unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "SDK script {}:\n{}\n{}\ngateway log:\n{}",
        status.map_or("timed out after 90 s".to_string(), |s| format!("failed ({s})")),
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr),
        gw.log()
    );
    serde_json::from_slice(&stdout).unwrap()
}

#[tokio::test]
async fn the_openai_sdk_reaches_native_and_translated_upstreams_metered_exactly() {
    let gw = Gateway::start_with(Opts { extra: config_extra(), ..Opts::default() }).await;
    let r = run_sdk(&gw).await;

    // Native upstream: bytes forwarded, usage of every kind, two built-in web searches.
    let w = &r["native_whole"];
    assert_eq!((w["status"].as_str(), w["text"].as_str()), (Some("completed"), Some("tok0 tok1 tok2 tok3 ")), "{w}");
    assert_eq!(w["types"], json!(["reasoning", "web_search_call", "web_search_call", "message"]));
    assert_eq!(w["usage"], json!({"input": 100, "cached": 40, "output": 7, "reasoning": 3}));
    let st = &r["native_stream"];
    assert_eq!(st["text"], "tok0 tok1 tok2 ");
    assert_eq!(st["types"][0], "response.created");
    assert_eq!(st["types"].as_array().unwrap().last().unwrap(), "response.completed");
    let t = &r["native_tool"];
    assert_eq!(t["call"]["name"], "lookup");
    assert_eq!(t["call"]["arguments"], json!({"q": "tok0 tok1 "}));
    assert_eq!(r["native_tool_stream"]["args"], r#"{"q":"tok0 tok1 "}"#);
    assert_eq!(r["native_follow"]["status"], "completed", "the follow-up reached the upstream holding the response");

    // Translated to Anthropic: the same shapes come back.
    let a = &r["translated_whole"];
    assert_eq!(
        (a["status"].as_str(), a["text"].as_str()),
        (Some("completed"), Some("tok0 tok1 tok2 tok3 tok4 ")),
        "{a}"
    );
    assert_eq!(a["usage"], json!({"input": 50, "cached": 10, "output": 5, "reasoning": 0}));
    let ast = &r["translated_stream"];
    assert_eq!(ast["text"], "tok0 tok1 tok2 ");
    assert_eq!(ast["final_text"], "tok0 tok1 tok2 ");
    assert_eq!(ast["status"], "completed");
    assert!(ast["types"].as_array().unwrap().contains(&json!("response.output_item.added")));
    assert_eq!(r["translated_tool"]["call"]["name"], "lookup");
    assert_eq!(r["translated_tool"]["call"]["arguments"], json!({"q": "tok0 tok1 "}));
    assert_eq!(r["translated_tool_stream"]["args"], r#"{"q":"tok0 tok1 "}"#);
    assert_eq!(r["refused"]["status"], 400);
    assert_eq!(r["refused"]["body"]["param"], "tools[0].type", "{}", r["refused"]);

    // What the upstreams were sent.
    let reqs = gw.mock.requests();
    let sent = |rid: &str| {
        reqs.iter().find(|q| q.header("x-request-id") == Some(rid)).unwrap_or_else(|| panic!("{rid}")).clone()
    };
    assert_eq!(sent("py-native-whole").path, "/v1/responses");
    let claude = sent("py-anthropic-whole");
    assert_eq!(claude.path, "/v1/messages");
    assert_eq!(claude.json()["system"], "be brief");
    assert_eq!(claude.json()["max_tokens"], 64);

    gw.wait_events(10).await;
    // Native whole: tokens at their rates plus two web searches at $0.01.
    let e = gw.event("py-native-whole").await;
    assert_eq!((s(&e, "endpoint"), s(&e, "outcome"), s(&e, "provider")), ("responses", "ok", "openai"));
    assert_eq!(
        (u(&e, "input_tokens"), u(&e, "cached_input_tokens"), u(&e, "output_tokens"), u(&e, "reasoning_tokens")),
        (100, 40, 7, 3)
    );
    let tokens = round(nano(60, NATIVE_IN) + nano(40, NATIVE_CACHED) + nano(7, NATIVE_OUT));
    assert_eq!(u(&e, "cost_nanousd"), tokens + 2 * 10_000_000, "{e}");
    assert!(e.to_string().contains("builtin_tool.web_search_call"), "{e}");
    let e = gw.event("py-native-stream").await;
    assert_eq!(
        (u(&e, "input_tokens"), u(&e, "output_tokens"), e["stream"].as_bool().or(e["stream"].as_u64().map(|v| v == 1))),
        (20, 3, Some(true))
    );
    assert_eq!(u(&e, "cost_nanousd"), round(nano(20, NATIVE_IN) + nano(3, NATIVE_OUT)));
    // Translated: Anthropic's split usage, priced at the Claude rates.
    let e = gw.event("py-anthropic-whole").await;
    assert_eq!((s(&e, "endpoint"), s(&e, "provider"), s(&e, "upstream")), ("responses", "anthropic", "claude"));
    assert_eq!((u(&e, "input_tokens"), u(&e, "cached_input_tokens"), u(&e, "output_tokens")), (50, 10, 5));
    assert_eq!(u(&e, "cost_nanousd"), round(nano(40, CLAUDE_IN) + nano(10, CLAUDE_CACHED) + nano(5, CLAUDE_OUT)));
    let e = gw.event("py-anthropic-stream").await;
    assert_eq!(u(&e, "cost_nanousd"), round(nano(20, CLAUDE_IN) + nano(3, CLAUDE_OUT)));
    let e = gw.event("py-anthropic-refused").await;
    assert_eq!((s(&e, "outcome"), u(&e, "status_code"), u(&e, "cost_nanousd")), ("invalid_request", 400, 0));
}

#[tokio::test]
async fn a_cancelled_responses_stream_is_one_client_disconnect_event() {
    let gw = Gateway::start_with(Opts { extra: config_extra(), ..Opts::default() }).await;
    let body = json!({"model": "resp-native", "stream": true, "input": "MOCK[tokens=200,delay_ms=20]"}).to_string();
    let mut resp = gw
        .http
        .post(format!("{}/v1/responses", gw.url))
        .bearer_auth(ENG_KEY)
        .header("content-type", "application/json")
        .header("x-request-id", "resp-cancel")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("response.created"));
    drop(resp);
    gw.wait_events(1).await;
    let e = gw.event("resp-cancel").await;
    assert_eq!((s(&e, "endpoint"), s(&e, "outcome")), ("responses", "client_disconnect"));
    assert!(u(&e, "input_tokens") > 0, "the prompt is estimated: {e}");
}

#[tokio::test]
async fn previous_response_id_goes_to_the_upstream_that_holds_it() {
    let second = MockUpstream::start().await.unwrap();
    let extra = format!(
        r#"
[[upstreams]]
name = "a"
kind = "openai"
base_url = "{{mock_base}}"
models = ["resp-a"]
[[upstreams]]
name = "b"
kind = "openai"
base_url = "{b}"
models = ["resp-b"]
[prices."resp-a"]
input = "1"
output = "1"
[prices."resp-b"]
input = "1"
output = "1"
[[routes]]
model = "resp-split"
strategy = "weighted"
targets = [{{ upstream = "a", model = "resp-a", weight = 50 }}, {{ upstream = "b", model = "resp-b", weight = 50 }}]
"#,
        b = second.base_url()
    );
    let gw = Gateway::start_with(Opts { extra, ..Opts::default() }).await;
    let post = |body: Value| {
        let gw = &gw;
        async move {
            let r = gw.post("/v1/responses", Some(ENG_KEY), &body.to_string()).await;
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let mut firsts = Vec::new();
    for _ in 0..6 {
        let (status, v) = post(json!({"model": "resp-split", "input": "hi"})).await;
        assert_eq!(status, 200, "{v}");
        firsts.push(v["id"].as_str().unwrap().to_string());
    }
    // Each mock refuses an id it did not create (400), so every 200 below is a follow-up that reached
    // the upstream holding its conversation, whichever target the weighted split gave the first turn.
    for id in &firsts {
        for _ in 0..3 {
            let (status, v) = post(json!({"model": "resp-split", "input": "more", "previous_response_id": id})).await;
            assert_eq!(status, 200, "follow-up of {id} went to the wrong upstream: {v}");
            assert_eq!(v["previous_response_id"], id.as_str());
        }
        // The stored response is fetched from, and deleted at, the upstream that holds it.
        let r = gw.http.get(format!("{}/v1/responses/{id}", gw.url)).bearer_auth(ENG_KEY).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().await.unwrap()["id"], id.as_str());
    }
    let r = gw.http.delete(format!("{}/v1/responses/{}", gw.url, firsts[0])).bearer_auth(ENG_KEY).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["deleted"], true);
    let r = gw.http.get(format!("{}/v1/responses/{}", gw.url, firsts[0])).bearer_auth(ENG_KEY).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "response_not_found");
    // One event per request: 6 first turns, 18 follow-ups, 6 fetches, the delete and the fetch after it.
    let n = 6 + 18 + 6 + 1 + 1;
    gw.wait_events(n).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let rows = gw.sql("SELECT count(*) AS n FROM calls WHERE endpoint = 'responses'").await;
    assert_eq!(rows[0]["n"].as_u64(), Some(n), "exactly one event each");
}

/// A multipart upload of a 2.5 s WAV for `model`, with extra form fields.
fn upload(model: &str, fields: &[(&str, &str)]) -> (String, Vec<u8>) {
    let ms = 2_500u32;
    let data_len = 16 * ms;
    let mut wav = Vec::new();
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&[1, 0, 1, 0]);
    wav.extend_from_slice(&8000u32.to_le_bytes());
    wav.extend_from_slice(&16000u32.to_le_bytes());
    wav.extend_from_slice(&[2, 0, 16, 0]);
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    wav.resize(wav.len() + data_len as usize, 0);
    let boundary = "tgboundary7";
    let mut body = Vec::new();
    let mut field = |name: &str, file: bool, data: &[u8]| {
        let f = if file { "; filename=\"a.wav\"\r\nContent-Type: audio/wav" } else { "" };
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"{f}\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    };
    field("file", true, &wav);
    field("model", false, model.as_bytes());
    for (k, v) in fields {
        field(k, false, v.as_bytes());
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn send_upload(gw: &Gateway, path: &str, rid: &str, (ct, body): (String, Vec<u8>)) -> reqwest::Response {
    gw.http
        .post(format!("{}{path}", gw.url))
        .bearer_auth(ENG_KEY)
        .header("content-type", ct)
        .header("x-request-id", rid)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn post_rid(gw: &Gateway, path: &str, rid: &str, body: Value) -> reqwest::Response {
    gw.http
        .post(format!("{}{path}", gw.url))
        .bearer_auth(ENG_KEY)
        .header("content-type", "application/json")
        .header("x-request-id", rid)
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn media_endpoints_are_metered_in_their_units_and_unknown_paths_are_404() {
    // A route that serves whisper-1 under another name: the upload is forwarded with the target's model.
    let alias = "[[routes]]\nmodel = \"whisper-house\"\nstrategy = \"weighted\"\ntargets = [{ upstream = \"oai\", model = \"whisper-1\", weight = 1 }]\n";
    let gw = Gateway::start_with(Opts { extra: format!("{}{alias}", config_extra()), ..Opts::default() }).await;
    let r = send_upload(&gw, "/v1/audio/transcriptions", "audio-json", upload("whisper-1", &[])).await;
    let (status, v) = (r.status(), r.text().await.unwrap());
    assert_eq!(status, 200, "{v}");
    assert_eq!(serde_json::from_str::<Value>(&v).unwrap()["usage"]["seconds"], 3, "{v}");
    let r =
        send_upload(&gw, "/v1/audio/translations", "audio-text", upload("whisper-1", &[("response_format", "text")]))
            .await;
    assert_eq!(r.text().await.unwrap(), "tok0 tok1 tok2 tok3 tok4");
    let r = send_upload(&gw, "/v1/audio/transcriptions", "audio-alias", upload("whisper-house", &[])).await;
    let (status, v) = (r.status(), r.text().await.unwrap());
    assert_eq!(status, 200, "{v}");
    let sent = gw.mock.requests().into_iter().find(|q| q.header("x-request-id") == Some("audio-alias")).unwrap();
    let form = String::from_utf8_lossy(&sent.body).to_string();
    assert!(form.contains("name=\"model\"\r\n\r\nwhisper-1\r\n") && !form.contains("whisper-house"), "{form:.300}");
    assert!(sent.body.len() > 40_000, "the file went along");
    let r = post_rid(&gw, "/v1/audio/speech", "speech", json!({"model": "tts-1", "input": "héllo", "voice": "alloy"}))
        .await;
    assert_eq!((r.status().as_u16(), r.bytes().await.unwrap().len()), (200, 500));
    let r = post_rid(
        &gw,
        "/v1/images/generations",
        "images",
        json!({"model": "dall-e-3", "prompt": "a cat", "n": 2, "quality": "hd"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let r =
        post_rid(&gw, "/v1/moderations", "moderation", json!({"model": "omni-moderation-latest", "input": "hi"})).await;
    assert_eq!(r.status(), 200);
    let r = post_rid(&gw, "/v1/fine_tuning/jobs", "unknown", json!({"model": "resp-native"})).await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["error"]["type"].as_str(), v["error"]["code"].as_str()),
        (Some("invalid_request_error"), Some("unknown_url")),
        "{v}"
    );
    assert_eq!(gw.mock.requests().iter().filter(|q| q.path.contains("fine_tuning")).count(), 0, "never passed through");

    gw.wait_events(7).await;
    // whisper-1 at $0.006 per minute: 3 reported seconds = 300,000 nano-USD.
    let e = gw.event("audio-json").await;
    assert_eq!(
        (s(&e, "endpoint"), u(&e, "cost_nanousd"), s(&e, "usage_source")),
        ("audio_transcriptions", 3 * 6_000_000 / 60, "provider")
    );
    let e = gw.event("audio-alias").await;
    assert_eq!((s(&e, "served_model"), u(&e, "cost_nanousd")), ("whisper-1", 3 * 6_000_000 / 60));
    // No usage in a text answer: the upload's 2.5 s are metered, marked estimated.
    let e = gw.event("audio-text").await;
    assert_eq!(
        (s(&e, "endpoint"), u(&e, "cost_nanousd"), s(&e, "usage_source")),
        ("audio_translations", 2_500 * 6_000_000 / 60_000, "estimated")
    );
    // tts-1 at $15 per million characters: 5 characters.
    let e = gw.event("speech").await;
    assert_eq!((s(&e, "endpoint"), u(&e, "cost_nanousd")), ("audio_speech", 5 * 15_000));
    // dall-e-3 hd 1024x1024 at $0.08 each.
    let e = gw.event("images").await;
    assert_eq!((s(&e, "endpoint"), u(&e, "cost_nanousd")), ("images", 2 * 80_000_000));
    let e = gw.event("moderation").await;
    assert_eq!((s(&e, "endpoint"), s(&e, "outcome"), u(&e, "cost_nanousd")), ("moderations", "ok", 0));
    let e = gw.event("unknown").await;
    assert_eq!((s(&e, "endpoint"), s(&e, "outcome"), u(&e, "status_code")), ("other", "invalid_request", 404));
}

#[tokio::test]
async fn budgets_reject_responses_and_audio_calls_like_chat() {
    let extra = format!(
        "{}[[budgets]]\nid = \"tiny\"\nscope = \"key\"\nmatch = \"eng-key\"\nperiod = \"month\"\ntime_zone = \"UTC\"\ncap_usd = \"0.0001\"\n",
        config_extra()
    );
    let gw = Gateway::start_with(Opts { extra, ..Opts::default() }).await;
    // The first call fits ($0.0001 cap; its estimate is ~25 prompt tokens and 1 output token at $2 and
    // $8 per million) and spends more than the cap (1,000 prompt tokens reported).
    let first = json!({"model": "resp-native", "max_output_tokens": 1, "input": "MOCK[tokens=50,prompt_tokens=1000]"});
    let r = post_rid(&gw, "/v1/responses", "b-1", first).await;
    assert_eq!(r.status(), 200);
    gw.wait_events(1).await;
    let mut rejected = Vec::new();
    for attempt in 0..50 {
        let r =
            post_rid(&gw, "/v1/responses", &format!("b-r{attempt}"), json!({"model": "resp-native", "input": "hi"}))
                .await;
        if r.status() == 429 {
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["error"]["code"], "budget_exceeded", "{v}");
            rejected.push(format!("b-r{attempt}"));
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(rejected.len(), 1, "the spent budget rejects the next Responses call");
    let r = send_upload(&gw, "/v1/audio/transcriptions", "b-audio", upload("whisper-1", &[])).await;
    assert_eq!(r.status(), 429);
    let r =
        post_rid(&gw, "/v1/audio/speech", "b-speech", json!({"model": "tts-1", "input": "hi", "voice": "alloy"})).await;
    assert_eq!(r.status(), 429);
    for rid in [rejected[0].as_str(), "b-audio", "b-speech"] {
        let e = loop {
            let rows = gw.sql(&format!("SELECT outcome, cost_nanousd FROM calls WHERE request_id = '{rid}'")).await;
            if let Some(r) = rows.first() {
                break r.clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        assert_eq!((s(&e, "outcome"), u(&e, "cost_nanousd")), ("rejected_budget", 0), "{rid}");
    }
}
