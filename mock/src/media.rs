//! OpenAI's media endpoints: `POST /v1/audio/transcriptions` and `/v1/audio/translations` (multipart
//! upload of a WAV file; `whisper-1` reports `usage` in seconds, `*-transcribe` models in tokens by
//! modality; `response_format=text` returns plain text with no usage, as the real API does),
//! `POST /v1/audio/speech` (audio bytes, no usage), `POST /v1/images/generations` (`dall-e-*`: URLs,
//! no usage; `gpt-image-*`: base64 with token usage) and `POST /v1/moderations` (free).
//! `MOCK[...]` directives go in the `prompt` form field (audio), `input` (speech, moderations) or
//! `prompt` (images).

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue};
use serde_json::{json, Value};

use tollgate_events::wav_duration_ms;

use crate::directive::{self, Directives};
use crate::{before_headers, invalid_request, json_ok, unix_now, Shared, DEFAULT_TOKENS};

/// One part of a `multipart/form-data` body.
struct FormField {
    name: String,
    data: Bytes,
}

async fn form_fields(headers: &HeaderMap, body: &Bytes) -> Result<Vec<FormField>, String> {
    let ct = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let boundary = multer::parse_boundary(ct).map_err(|e| format!("expected multipart/form-data: {e}"))?;
    let body = body.clone();
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut out = Vec::new();
    while let Some(field) = form.next_field().await.map_err(|e| format!("bad multipart body: {e}"))? {
        let name = field.name().unwrap_or_default().to_string();
        let data = field.bytes().await.map_err(|e| format!("bad multipart body: {e}"))?;
        out.push(FormField { name, data });
    }
    Ok(out)
}

fn directives(shared: &Shared, texts: &[&str]) -> Result<Directives, Response> {
    directive::from_texts(texts.iter().copied(), shared.instance().as_deref())
        .map_err(|m| invalid_request(&m, "invalid_mock_directive"))
}

fn words(n: u64) -> String {
    (0..n).map(|i| format!("tok{i}")).collect::<Vec<_>>().join(" ")
}

fn with_type(body: impl Into<Body>, content_type: &'static str) -> Response {
    let mut resp = Response::new(body.into());
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

pub(crate) async fn transcription(shared: &Arc<Shared>, headers: &HeaderMap, body: &Bytes) -> Response {
    let fields = match form_fields(headers, body).await {
        Ok(f) => f,
        Err(message) => return invalid_request(&message, "invalid_body"),
    };
    let field = |name: &str| fields.iter().find(|f| f.name == name).map(|f| String::from_utf8_lossy(&f.data));
    let Some(model) = field("model").map(|m| m.into_owned()) else {
        return invalid_request("Missing required parameter: 'model'.", "missing_required_parameter");
    };
    let Some(file) = fields.iter().find(|f| f.name == "file") else {
        return invalid_request("Missing required parameter: 'file'.", "missing_required_parameter");
    };
    let Some(ms) = wav_duration_ms(&file.data) else {
        return invalid_request("MOCK decodes only PCM WAV uploads", "invalid_file_format");
    };
    let prompt = field("prompt").map(|p| p.into_owned()).unwrap_or_default();
    let d = match directives(shared, &[prompt.as_str()]) {
        Ok(d) => d,
        Err(resp) => return resp,
    };
    if let Some(early) = before_headers(&d).await {
        return early;
    }
    let tokens = d.tokens.unwrap_or(DEFAULT_TOKENS);
    let text = words(tokens);
    let format = field("response_format").map(|f| f.into_owned()).unwrap_or_else(|| "json".into());
    if matches!(format.as_str(), "text" | "srt" | "vtt") {
        return with_type(text, "text/plain; charset=utf-8");
    }
    let usage = if d.no_usage {
        Value::Null
    } else if model.contains("transcribe") {
        let text_tokens = prompt.split_whitespace().count() as u64;
        // About ten audio tokens per second, like the real models.
        let audio_tokens = ms / 100;
        json!({"type": "tokens", "input_tokens": text_tokens + audio_tokens,
            "input_token_details": {"text_tokens": text_tokens, "audio_tokens": audio_tokens},
            "output_tokens": tokens, "total_tokens": text_tokens + audio_tokens + tokens})
    } else {
        json!({"type": "duration", "seconds": ms.div_ceil(1000)})
    };
    let mut out = json!({"text": text, "usage": usage});
    if format == "verbose_json" {
        out["task"] = json!("transcribe");
        out["language"] = json!("english");
        out["duration"] = json!(ms as f64 / 1000.0);
        out["segments"] = json!([]);
    }
    json_ok(shared, Bytes::from(out.to_string()))
}

pub(crate) async fn speech(shared: &Arc<Shared>, body: &Bytes) -> Response {
    let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let (Some(_model), Some(input)) =
        (req.get("model").and_then(Value::as_str), req.get("input").and_then(Value::as_str))
    else {
        return invalid_request("'model' and 'input' are required", "missing_required_parameter");
    };
    let d = match directives(shared, &[input]) {
        Ok(d) => d,
        Err(resp) => return resp,
    };
    if let Some(early) = before_headers(&d).await {
        return early;
    }
    // Not real audio: 100 bytes per input character so a client can see the size follow the input.
    let audio = vec![0xffu8; input.chars().count().saturating_mul(100)];
    let mut resp = json_ok(shared, Bytes::from(audio));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("audio/mpeg"));
    resp
}

pub(crate) async fn images(shared: &Arc<Shared>, body: &Bytes) -> Response {
    let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let (Some(model), Some(prompt)) =
        (req.get("model").and_then(Value::as_str), req.get("prompt").and_then(Value::as_str))
    else {
        return invalid_request("'model' and 'prompt' are required", "missing_required_parameter");
    };
    let d = match directives(shared, &[prompt]) {
        Ok(d) => d,
        Err(resp) => return resp,
    };
    if let Some(early) = before_headers(&d).await {
        return early;
    }
    let n = req.get("n").and_then(Value::as_u64).unwrap_or(1);
    let mut out = json!({"created": unix_now()});
    if model.starts_with("gpt-image") {
        out["data"] = (0..n).map(|_| json!({"b64_json": "iVBORw0KGgo="})).collect();
        let text_tokens = prompt.split_whitespace().count() as u64;
        let image_tokens = d.prompt_tokens.unwrap_or(0);
        let output = d.tokens.unwrap_or(272).saturating_mul(n);
        out["usage"] = json!({"input_tokens": text_tokens + image_tokens,
            "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": image_tokens},
            "output_tokens": output, "total_tokens": text_tokens + image_tokens + output});
    } else {
        out["data"] = (0..n).map(|i| json!({"url": format!("https://images.mock.invalid/{i}.png")})).collect();
    }
    json_ok(shared, Bytes::from(out.to_string()))
}

pub(crate) async fn moderations(shared: &Arc<Shared>, body: &Bytes) -> Response {
    let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let inputs: Vec<&str> = match req.get("input") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => return invalid_request("'input' is required", "missing_required_parameter"),
    };
    let d = match directives(shared, &inputs) {
        Ok(d) => d,
        Err(resp) => return resp,
    };
    if let Some(early) = before_headers(&d).await {
        return early;
    }
    let model = req.get("model").and_then(Value::as_str).unwrap_or("omni-moderation-latest");
    let results: Vec<Value> = inputs
        .iter()
        .map(|_| {
            json!({"flagged": false, "categories": {"violence": false}, "category_scores": {"violence": 0.0001},
                "category_applied_input_types": {"violence": ["text"]}})
        })
        .collect();
    let out = json!({"id": format!("modr-mock{}", unix_now()), "model": model, "results": results});
    json_ok(shared, Bytes::from(out.to_string()))
}
