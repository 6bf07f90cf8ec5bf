//! Mock upstream LLM server speaking OpenAI's and Anthropic's wire formats, steered by `MOCK[...]`
//! directives in prompts.
//!
//! Used in-process by the gateway's end-to-end tests and as the `tollgate-mock` binary by benchmarks.
//! Endpoints: `POST /v1/chat/completions` (whole or SSE; also at Azure's
//! `/openai/deployments/{name}/chat/completions`), `POST /v1/embeddings`, `GET /v1/models[/{id}]`,
//! `POST /v1/messages` (Anthropic, whole or SSE), `POST /v1/messages/count_tokens`, OpenAI's Responses API
//! (`POST /v1/responses`, whole or SSE; `GET`/`DELETE /v1/responses/{id}`), and the media endpoints
//! (`/v1/audio/transcriptions`, `/v1/audio/translations`, `/v1/audio/speech`, `/v1/images/generations`,
//! `/v1/moderations`).
//! Put `MOCK[k=v,flag]` anywhere in a message's text (the last one wins) to pick the behaviour:
//! `tokens`, `prompt_tokens`, `cached`, `cache_write` (Anthropic), `reasoning`, `delay_ms`,
//! `first_delay_ms`, `status`, `retry_after`, `cut`, `no_usage`, `finish`, `fixture`, `hang`, `call`
//! (Responses, Anthropic: call the first function tool), `web_search` (Responses).
//! Several instances can play different upstreams: [`MockUpstream::set_directives`] gives one instance
//! directives of its own (same syntax), applied on top of every prompt's, e.g. `status=500` or
//! `first_delay_ms=3000`; change them at any time, e.g. to heal a failing upstream.
//! An instance can also play a vLLM or SGLang server: [`MockUpstream::set_engine`] (or `POST /mock/engine`
//! with the same text, or the binary's `--engine`) gives it a `GET /metrics` page with the queue depth,
//! running requests and KV-cache use it is told, e.g. `engine=vllm,waiting=5,kv=0.3`; `status=500` or
//! `hang` make the page fail. Neither endpoint counts as a received request.

mod anthropic;
mod body;
mod directive;
mod engine;
mod media;
mod responses;
mod wire;

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::serve::ListenerExt;
use axum::Router;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::body::{FramesBody, Stop};
use crate::directive::Directives;
use crate::wire::{Completion, Usage};

/// How many requests are kept for [`MockUpstream::requests`]; older ones are dropped first.
pub const MAX_RECORDED: usize = 10_000;

/// Largest request body the mock reads.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// Content tokens generated when no `tokens=N` directive is given.
const DEFAULT_TOKENS: u64 = 5;

/// One request as the mock received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Path without the query string, e.g. `/v1/chat/completions`.
    pub path: String,
    /// The query string (without `?`), empty when there was none.
    pub query: String,
    /// Header names are lowercase, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl RecordedRequest {
    /// First value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON, or `Value::Null` when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// State shared by the handler, the response bodies and the [`MockUpstream`] handle.
pub(crate) struct Shared {
    requests: Mutex<VecDeque<RecordedRequest>>,
    received: AtomicU64,
    pub(crate) answered: AtomicU64,
    pub(crate) dropped_early: AtomicU64,
    next_id: AtomicU64,
    fixture_dir: PathBuf,
    responses: responses::Store,
    /// This instance's own directives (the inside of a `MOCK[...]`) and for how many more requests
    /// they apply (`None`: until changed).
    instance: Mutex<Option<(String, Option<u64>)>>,
    /// The inference engine this instance plays, for `GET /metrics`.
    engine: Mutex<Option<engine::EngineMetrics>>,
    metrics_scrapes: AtomicU64,
    /// TCP connections accepted.
    connections: AtomicU64,
}

/// A running mock server; dropping it stops accepting connections.
pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

/// `tests/fixtures` of this workspace.
pub fn default_fixture_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures"))
}

impl MockUpstream {
    /// Starts on `127.0.0.1:0` with the default fixture directory.
    pub async fn start() -> std::io::Result<MockUpstream> {
        Self::start_on_with_fixtures(local_any_port(), default_fixture_dir()).await
    }

    /// Starts on `addr` with the default fixture directory.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<MockUpstream> {
        Self::start_on_with_fixtures(addr, default_fixture_dir()).await
    }

    /// Starts on `127.0.0.1:0`, serving `fixture=NAME` from `dir`.
    pub async fn start_with_fixtures(dir: PathBuf) -> std::io::Result<MockUpstream> {
        Self::start_on_with_fixtures(local_any_port(), dir).await
    }

    /// Starts on `addr`, serving `fixture=NAME` from `dir`.
    pub async fn start_on_with_fixtures(addr: SocketAddr, dir: PathBuf) -> std::io::Result<MockUpstream> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            requests: Mutex::new(VecDeque::new()),
            received: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            dropped_early: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            fixture_dir: dir,
            responses: responses::Store::default(),
            instance: Mutex::new(None),
            engine: Mutex::new(None),
            metrics_scrapes: AtomicU64::new(0),
            connections: AtomicU64::new(0),
        });
        let app = Router::new().fallback(handle).with_state(Arc::clone(&shared));
        // Small SSE frames must not wait on Nagle + delayed ACK.
        let counted = Arc::clone(&shared);
        let listener = listener.tap_io(move |tcp| {
            let _ = tcp.set_nodelay(true);
            counted.connections.fetch_add(1, Ordering::Relaxed);
        });
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                eprintln!("tollgate-mock: server stopped: {error}");
            }
        });
        Ok(MockUpstream { addr, shared, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/v1`, what an OpenAI client takes as its base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The last [`MAX_RECORDED`] requests received, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock_requests().iter().cloned().collect()
    }

    /// The most recent request, if any.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.shared.lock_requests().back().cloned()
    }

    /// Every request received, including those no longer kept by [`requests`](Self::requests).
    pub fn received(&self) -> u64 {
        self.shared.received.load(Ordering::Relaxed)
    }

    /// TCP connections accepted so far (a client that keeps its connections alive opens few).
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Requests answered with 2xx whose body was handed out in full (streams: `[DONE]` included).
    pub fn answered(&self) -> u64 {
        self.shared.answered.load(Ordering::Relaxed)
    }

    /// Gives this instance directives of its own (e.g. `status=500` or `first_delay_ms=2000`), applied
    /// on top of each request's; an empty string clears them. Refused if they do not parse.
    pub fn set_directives(&self, directives: &str) -> Result<(), String> {
        self.set_instance(directives, None)
    }

    /// As [`set_directives`](Self::set_directives), for the next `n` requests only.
    pub fn set_directives_for(&self, directives: &str, n: u64) -> Result<(), String> {
        self.set_instance(directives, Some(n))
    }

    fn set_instance(&self, directives: &str, n: Option<u64>) -> Result<(), String> {
        directive::parse(directives)?;
        let v = if directives.trim().is_empty() { None } else { Some((directives.to_owned(), n)) };
        *self.shared.instance.lock().unwrap_or_else(PoisonError::into_inner) = v;
        Ok(())
    }

    /// Makes this instance play a vLLM or SGLang server whose `GET /metrics` says what `spec` says, e.g.
    /// `engine=vllm,waiting=5,running=2,kv=0.3` (also `engine=sglang`, `legacy_kv`, `status=500`,
    /// `hang`); an empty string takes `/metrics` away (404). Change it at any time. Refused if it does
    /// not parse.
    pub fn set_engine(&self, spec: &str) -> Result<(), String> {
        self.shared.set_engine(spec)
    }

    /// `GET /metrics` requests received.
    pub fn metrics_scrapes(&self) -> u64 {
        self.shared.metrics_scrapes.load(Ordering::Relaxed)
    }

    /// 2xx bodies that went away before their last frame: client hang-ups, `cut`, `hang`.
    pub fn dropped_early(&self) -> u64 {
        self.shared.dropped_early.load(Ordering::Relaxed)
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn local_any_port() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

impl Shared {
    /// This instance's directives for the request being handled (counting it, when they are limited).
    pub(crate) fn instance(&self) -> Option<String> {
        let mut g = self.instance.lock().unwrap_or_else(PoisonError::into_inner);
        let (d, left) = g.as_mut()?;
        match left {
            Some(0) => None,
            Some(n) => {
                *n -= 1;
                Some(d.clone())
            }
            None => Some(d.clone()),
        }
    }

    fn set_engine(&self, spec: &str) -> Result<(), String> {
        let m = engine::parse(spec)?;
        *self.engine.lock().unwrap_or_else(PoisonError::into_inner) = m;
        Ok(())
    }

    fn lock_requests(&self) -> std::sync::MutexGuard<'_, VecDeque<RecordedRequest>> {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, parts: &http::request::Parts, body: Bytes) {
        self.received.fetch_add(1, Ordering::Relaxed);
        let headers = parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let rec = RecordedRequest {
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or_default().to_owned(),
            headers,
            body,
        };
        let mut requests = self.lock_requests();
        if requests.len() >= MAX_RECORDED {
            requests.pop_front();
        }
        requests.push_back(rec);
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(error) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("could not read request body: {error}"),
                "invalid_request_error",
                "invalid_body",
            )
        }
    };
    // The engine's metrics page and its control are not model calls: not recorded, not counted.
    match (&parts.method, parts.uri.path()) {
        (&Method::GET, "/metrics") => {
            shared.metrics_scrapes.fetch_add(1, Ordering::Relaxed);
            let m = shared.engine.lock().unwrap_or_else(PoisonError::into_inner).clone();
            return engine::metrics(m).await;
        }
        (&Method::POST, "/mock/engine") => {
            return match std::str::from_utf8(&body).map_err(|e| e.to_string()).and_then(|s| shared.set_engine(s)) {
                Ok(()) => Response::new(Body::from("{\"ok\":true}")),
                Err(message) => invalid_request(&message, "invalid_engine_settings"),
            };
        }
        _ => {}
    }
    shared.record(&parts, body.clone());
    let path = parts.uri.path();
    match (&parts.method, path) {
        (&Method::POST, "/v1/chat/completions") => chat(&shared, &body).await,
        (&Method::POST, "/v1/messages") => anthropic::messages(&shared, &parts.headers, &body).await,
        (&Method::POST, "/v1/messages/count_tokens") => anthropic::count_tokens(&shared, &parts.headers, &body).await,
        // Azure OpenAI: /openai/deployments/{deployment}/chat/completions?api-version=…
        (&Method::POST, p) if p.starts_with("/openai/deployments/") && p.ends_with("/chat/completions") => {
            chat(&shared, &body).await
        }
        (&Method::POST, "/v1/embeddings") => embeddings(&shared, &body).await,
        (&Method::POST, "/v1/responses") => responses::create(&shared, &body).await,
        (&Method::GET, p) if p.starts_with("/v1/responses/") => responses::get(&shared, &p["/v1/responses/".len()..]),
        (&Method::DELETE, p) if p.starts_with("/v1/responses/") => {
            responses::delete(&shared, &p["/v1/responses/".len()..])
        }
        (&Method::POST, "/v1/audio/transcriptions" | "/v1/audio/translations") => {
            media::transcription(&shared, &parts.headers, &body).await
        }
        (&Method::POST, "/v1/audio/speech") => media::speech(&shared, &body).await,
        (&Method::POST, "/v1/images/generations") => media::images(&shared, &body).await,
        (&Method::POST, "/v1/moderations") => media::moderations(&shared, &body).await,
        (&Method::GET, "/v1/models") => json_ok(&shared, wire::models_body()),
        (&Method::GET, p) if p.starts_with("/v1/models/") => {
            let id = p.trim_start_matches("/v1/models/");
            if wire::MODELS.contains(&id) {
                json_ok(&shared, Bytes::from(wire::model_object(id).to_string()))
            } else {
                error_response(
                    StatusCode::NOT_FOUND,
                    &format!("The model '{id}' does not exist"),
                    "invalid_request_error",
                    "model_not_found",
                )
            }
        }
        (method, p @ ("/v1/chat/completions" | "/v1/embeddings" | "/v1/models")) => error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("Invalid method for URL ({method} {p})"),
            "invalid_request_error",
            "method_not_allowed",
        ),
        (method, p) => error_response(
            StatusCode::NOT_FOUND,
            &format!("Invalid URL ({method} {p})"),
            "invalid_request_error",
            "unknown_url",
        ),
    }
}

#[derive(Deserialize)]
struct ChatRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    messages: Vec<ChatMessage>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct ChatMessage {
    #[serde(default)]
    content: Option<MessageContent>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Deserialize)]
struct ContentPart {
    #[serde(default)]
    text: Option<String>,
}

async fn chat(shared: &Arc<Shared>, body: &Bytes) -> Response {
    let req: ChatRequest = match serde_json::from_slice(body) {
        Ok(req) => req,
        Err(error) => return invalid_request(&format!("invalid JSON body: {error}"), "invalid_json"),
    };
    let mut texts: Vec<&str> = Vec::with_capacity(req.messages.len());
    for message in &req.messages {
        match &message.content {
            Some(MessageContent::Text(s)) => texts.push(s),
            Some(MessageContent::Parts(parts)) => {
                texts.extend(parts.iter().filter_map(|p| p.text.as_deref()));
            }
            None => {}
        }
    }
    let d = match directive::from_texts(texts.iter().copied(), shared.instance().as_deref()) {
        Ok(d) => d,
        Err(message) => return invalid_request(&message, "invalid_mock_directive"),
    };
    if let Some(early) = before_headers(&d).await {
        return early;
    }
    let stream = req.stream.unwrap_or(false);
    if let Some(name) = &d.fixture {
        return fixture(shared, name, stream, &d).await;
    }

    let words: usize = texts.iter().map(|t| t.split_whitespace().count()).sum();
    let default_prompt = words as u64 + 3 * req.messages.len() as u64;
    let tokens = d.tokens.unwrap_or(DEFAULT_TOKENS);
    let usage = Usage {
        prompt: d.prompt_tokens.unwrap_or(default_prompt),
        completion: tokens.saturating_add(d.reasoning),
        cached: d.cached,
        reasoning: d.reasoning,
    };
    let model_json = match serde_json::to_string(req.model.as_deref().unwrap_or("mock-model")) {
        Ok(s) => s,
        Err(error) => return internal(&error.to_string()),
    };
    let finish_json = match serde_json::to_string(d.finish.as_deref().unwrap_or("stop")) {
        Ok(s) => s,
        Err(error) => return internal(&error.to_string()),
    };
    let completion = Completion {
        id: shared.next_id.fetch_add(1, Ordering::Relaxed),
        created: unix_now(),
        model_json: &model_json,
        tokens,
        finish_json: &finish_json,
        usage,
    };

    if !stream {
        if d.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(d.delay_ms.saturating_mul(tokens))).await;
        }
        return match wire::chat_body(&completion) {
            Ok(bytes) => json_ok(shared, bytes),
            Err(_) => internal("could not format completion"),
        };
    }

    let include_usage = !d.no_usage && req.stream_options.and_then(|o| o.include_usage).unwrap_or(false);
    let frames = match wire::chat_stream(&completion, include_usage) {
        Ok(frames) => frames,
        Err(_) => return internal("could not format completion stream"),
    };
    // Frame 0 is the role chunk; the finish chunk sits right after the content chunks.
    let finish_at = frames.content.end;
    let stop = if d.silent {
        Stop::Hang(0)
    } else if d.hang {
        Stop::Hang(1)
    } else if let Some(n) = d.cut {
        Stop::Cut(usize::try_from(n).map_or(finish_at, |n| n.saturating_add(1).min(finish_at)))
    } else {
        Stop::Never
    };
    sse_ok(FramesBody::stream(
        frames.frames,
        frames.content,
        Duration::from_millis(d.delay_ms),
        stop,
        Arc::clone(shared),
    ))
}

/// Applies `first_delay_ms`, then answers early when `status` asks for an error.
async fn before_headers(d: &Directives) -> Option<Response> {
    if d.first_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(d.first_delay_ms)).await;
    }
    let status = d.status?;
    let Ok(code) = StatusCode::from_u16(status) else {
        return Some(invalid_request(&format!("MOCK status {status} is not an HTTP status"), "invalid_mock_directive"));
    };
    if code.is_success() {
        return None;
    }
    let (kind, err_code) = wire::error_kind(status);
    let mut resp = error_response(code, &format!("MOCK status {status}: simulated upstream error"), kind, err_code);
    if let Some(secs) = d.retry_after {
        resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    Some(resp)
}

/// Replays `NAME` (or `NAME.jsonl` / `NAME.json` when it has no extension) verbatim.
async fn fixture(shared: &Arc<Shared>, name: &str, stream: bool, d: &Directives) -> Response {
    let file = if Path::new(name).extension().is_some() {
        name.to_owned()
    } else if stream {
        format!("{name}.jsonl")
    } else {
        format!("{name}.json")
    };
    let path = shared.fixture_dir.join(&file);
    let text = match tokio::fs::read_to_string(&path).await {
        Ok(text) => text,
        Err(error) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("MOCK fixture {} unreadable: {error}", path.display()),
                "invalid_request_error",
                "fixture_not_found",
            )
        }
    };
    if !stream {
        return json_ok(shared, Bytes::from(text));
    }
    let frames = wire::fixture_stream(&text);
    let done_at = frames.len().saturating_sub(1);
    let stop = if d.hang {
        Stop::Hang(1.min(done_at))
    } else if let Some(n) = d.cut {
        Stop::Cut(usize::try_from(n).map_or(done_at, |n| n.min(done_at)))
    } else {
        Stop::Never
    };
    sse_ok(FramesBody::stream(frames, 0..done_at, Duration::from_millis(d.delay_ms), stop, Arc::clone(shared)))
}

#[derive(Deserialize)]
struct EmbeddingsRequest {
    #[serde(default)]
    model: Option<String>,
    input: Value,
    #[serde(default)]
    encoding_format: Option<String>,
}

async fn embeddings(shared: &Arc<Shared>, body: &Bytes) -> Response {
    let req: EmbeddingsRequest = match serde_json::from_slice(body) {
        Ok(req) => req,
        Err(error) => return invalid_request(&format!("invalid JSON body: {error}"), "invalid_json"),
    };
    // Each input is text, or a token array whose length is its token count.
    let mut texts: Vec<&str> = Vec::new();
    let mut token_counts: u64 = 0;
    let count = match &req.input {
        Value::String(s) => {
            texts.push(s);
            1
        }
        Value::Array(items) if items.iter().all(Value::is_number) && !items.is_empty() => {
            token_counts += items.len() as u64;
            1
        }
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::String(s) => texts.push(s),
                    Value::Array(tokens) => token_counts += tokens.len() as u64,
                    _ => return invalid_request("'input' items must be strings or token arrays", "invalid_input"),
                }
            }
            items.len()
        }
        _ => return invalid_request("'input' must be a string or an array", "invalid_input"),
    };
    let d = match directive::from_texts(texts.iter().copied(), shared.instance().as_deref()) {
        Ok(d) => d,
        Err(message) => return invalid_request(&message, "invalid_mock_directive"),
    };
    if let Some(early) = before_headers(&d).await {
        return early;
    }
    let words: usize = texts.iter().map(|t| t.split_whitespace().count()).sum();
    let prompt = d.prompt_tokens.unwrap_or(words as u64 + token_counts);
    let base64 = req.encoding_format.as_deref() == Some("base64");
    let data: Vec<Value> = (0..count)
        .map(|index| {
            let v = wire::embedding(index);
            let embedding = if base64 { json!(wire::base64_f32(&v)) } else { json!(v) };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let out = json!({
        "object": "list",
        "data": data,
        "model": req.model.as_deref().unwrap_or("mock-model"),
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    });
    json_ok(shared, Bytes::from(out.to_string()))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn json_ok(shared: &Arc<Shared>, bytes: Bytes) -> Response {
    let mut resp = Response::new(Body::new(FramesBody::whole(bytes, Arc::clone(shared))));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn sse_ok(body: FramesBody) -> Response {
    let mut resp = Response::new(Body::new(body));
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn error_response(status: StatusCode, message: &str, kind: &str, code: &str) -> Response {
    let mut resp = Response::new(Body::from(wire::error_body(message, kind, code)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn invalid_request(message: &str, code: &str) -> Response {
    error_response(StatusCode::BAD_REQUEST, message, "invalid_request_error", code)
}

fn internal(message: &str) -> Response {
    error_response(StatusCode::INTERNAL_SERVER_ERROR, message, "server_error", "server_error")
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_billable;
