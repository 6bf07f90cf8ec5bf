//! OpenAI wire format: chat completions (whole and SSE chunks), embeddings, models and errors.

use std::fmt::{self, Write as _};
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use serde_json::json;

/// Token counts reported in `usage`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Usage {
    pub prompt: u64,
    /// Includes `reasoning`, as OpenAI does.
    pub completion: u64,
    pub cached: u64,
    pub reasoning: u64,
}

/// One generated completion: `tokens` content tokens `"tok{i} "`.
pub(crate) struct Completion<'a> {
    pub id: u64,
    pub created: u64,
    /// The request's model, already JSON-encoded (quoted and escaped).
    pub model_json: &'a str,
    pub tokens: u64,
    /// finish_reason, already JSON-encoded.
    pub finish_json: &'a str,
    pub usage: Usage,
}

fn write_usage(buf: &mut BytesMut, u: &Usage) -> fmt::Result {
    write!(
        buf,
        concat!(
            r#"{{"prompt_tokens":{},"completion_tokens":{},"total_tokens":{},"#,
            r#""prompt_tokens_details":{{"cached_tokens":{},"audio_tokens":0}},"#,
            r#""completion_tokens_details":{{"reasoning_tokens":{},"audio_tokens":0,"#,
            r#""accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}}"#
        ),
        u.prompt,
        u.completion,
        u.prompt + u.completion,
        u.cached,
        u.reasoning
    )
}

/// A whole `chat.completion` object.
pub(crate) fn chat_body(c: &Completion<'_>) -> Result<Bytes, fmt::Error> {
    let mut buf = BytesMut::with_capacity(640 + 8 * c.tokens as usize);
    write!(
        buf,
        concat!(
            r#"{{"id":"chatcmpl-mock{}","object":"chat.completion","created":{},"model":{},"#,
            r#""choices":[{{"index":0,"message":{{"role":"assistant","content":""#
        ),
        c.id, c.created, c.model_json
    )?;
    for i in 0..c.tokens {
        write!(buf, "tok{i} ")?;
    }
    write!(
        buf,
        r#"","refusal":null,"annotations":[]}},"logprobs":null,"finish_reason":{}}}],"usage":"#,
        c.finish_json
    )?;
    write_usage(&mut buf, &c.usage)?;
    buf.extend_from_slice(br#","service_tier":"default","system_fingerprint":"fp_mock"}"#);
    Ok(buf.freeze())
}

/// SSE frames of a streamed completion, one body frame per event.
pub(crate) struct StreamFrames {
    pub frames: Vec<Bytes>,
    /// Indices of the content-token frames (the ones `delay_ms` paces).
    pub content: Range<usize>,
}

/// Builds every event into one buffer and slices it, so a stream costs two allocations.
pub(crate) fn chat_stream(c: &Completion<'_>, include_usage: bool) -> Result<StreamFrames, fmt::Error> {
    let mut prefix = BytesMut::with_capacity(256);
    write!(
        prefix,
        concat!(
            r#"data: {{"id":"chatcmpl-mock{}","object":"chat.completion.chunk","created":{},"#,
            r#""model":{},"service_tier":"default","system_fingerprint":"fp_mock","choices":["#
        ),
        c.id, c.created, c.model_json
    )?;
    let suffix: &[u8] = if include_usage { b"],\"usage\":null}\n\n" } else { b"]}\n\n" };
    let tokens = usize::try_from(c.tokens).map_err(|_| fmt::Error)?;
    let count = tokens + 3 + usize::from(include_usage);
    let mut buf = BytesMut::with_capacity(count * (prefix.len() + 96) + 512);
    let mut ends = Vec::with_capacity(count);

    buf.extend_from_slice(&prefix);
    buf.extend_from_slice(
        br#"{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}"#,
    );
    buf.extend_from_slice(suffix);
    ends.push(buf.len());

    for i in 0..tokens {
        buf.extend_from_slice(&prefix);
        write!(buf, r#"{{"index":0,"delta":{{"content":"tok{i} "}},"logprobs":null,"finish_reason":null}}"#)?;
        buf.extend_from_slice(suffix);
        ends.push(buf.len());
    }

    buf.extend_from_slice(&prefix);
    write!(buf, r#"{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":{}}}"#, c.finish_json)?;
    buf.extend_from_slice(suffix);
    ends.push(buf.len());

    if include_usage {
        buf.extend_from_slice(&prefix);
        buf.extend_from_slice(b"],\"usage\":");
        write_usage(&mut buf, &c.usage)?;
        buf.extend_from_slice(b"}\n\n");
        ends.push(buf.len());
    }

    buf.extend_from_slice(b"data: [DONE]\n\n");
    ends.push(buf.len());

    let all = buf.freeze();
    let mut start = 0;
    let frames = ends
        .into_iter()
        .map(|end| {
            let frame = all.slice(start..end);
            start = end;
            frame
        })
        .collect();
    Ok(StreamFrames { frames, content: 1..1 + tokens })
}

/// SSE frames replaying a recorded `.jsonl` fixture verbatim, then `[DONE]`.
pub(crate) fn fixture_stream(text: &str) -> Vec<Bytes> {
    let mut frames: Vec<Bytes> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut b = BytesMut::with_capacity(l.len() + 8);
            b.extend_from_slice(b"data: ");
            b.extend_from_slice(l.as_bytes());
            b.extend_from_slice(b"\n\n");
            b.freeze()
        })
        .collect();
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    frames
}

/// OpenAI's error object.
pub(crate) fn error_body(message: &str, kind: &str, code: &str) -> Bytes {
    let v = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    Bytes::from(v.to_string())
}

/// `type` and `code` OpenAI uses for an HTTP error status.
pub(crate) fn error_kind(status: u16) -> (&'static str, &'static str) {
    match status {
        400 => ("invalid_request_error", "invalid_request"),
        429 => ("rate_limit_error", "rate_limit_exceeded"),
        500..=599 => ("server_error", "server_error"),
        _ => ("api_error", "api_error"),
    }
}

/// Model ids listed by `GET /v1/models`.
pub(crate) const MODELS: &[&str] = &["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "text-embedding-3-small", "mock-model"];

pub(crate) fn model_object(id: &str) -> serde_json::Value {
    json!({"id": id, "object": "model", "created": 1_700_000_000u64, "owned_by": "tollgate-mock"})
}

pub(crate) fn models_body() -> Bytes {
    let data: Vec<_> = MODELS.iter().map(|id| model_object(id)).collect();
    Bytes::from(json!({"object": "list", "data": data}).to_string())
}

/// Deterministic 8-float vector for input `index`; values are exact in f32.
pub(crate) fn embedding(index: usize) -> [f32; 8] {
    let mut v = [0.0f32; 8];
    for (j, x) in v.iter_mut().enumerate() {
        *x = ((index + j) % 8) as f32 * 0.125 - 0.4375;
    }
    v
}

/// Standard base64 of the little-endian f32s, as OpenAI's `encoding_format: "base64"` returns.
pub(crate) fn base64_f32(v: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (k, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if k <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_value() {
        // 1.0f32 = 00 00 80 3f
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, 1.0, 1.0]), "AACAPwAAgD8AAIA/");
    }
}
