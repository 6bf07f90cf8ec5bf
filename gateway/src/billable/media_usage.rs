//! What metering reads from OpenAI's media endpoints, in the units their prices are quoted in:
//! transcriptions and translations by audio duration (the `usage` the API reports in seconds, or in
//! tokens by modality for the `*-transcribe` models; the upload's own WAV header when the chosen
//! `response_format` carries no usage), speech by the characters of its input, images by count, size
//! and quality (or by tokens for `gpt-image-*`). Moderations are free and need nothing.

use bytes::Bytes;
use http::HeaderMap;
use serde_json::Value;
use tollgate_events::{wav_duration_ms, UnitUsage, UsageSource};

/// The fields of a transcription upload that routing and metering need.
#[derive(Debug, Default)]
pub struct AudioForm {
    pub model: Option<String>,
    pub response_format: Option<String>,
    pub stream: bool,
    /// The uploaded file's bytes (kept only to read a duration from, when the answer has none).
    pub file: Option<Bytes>,
}

/// Reads a `multipart/form-data` upload; an error message names what is wrong with it.
pub async fn read_audio_form(headers: &HeaderMap, body: Bytes) -> Result<AudioForm, String> {
    let ct = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let boundary = multer::parse_boundary(ct).map_err(|e| format!("expected a multipart/form-data upload: {e}"))?;
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut out = AudioForm::default();
    while let Some(field) = form.next_field().await.map_err(|e| format!("malformed multipart body: {e}"))? {
        let name = field.name().unwrap_or_default().to_string();
        let data = field.bytes().await.map_err(|e| format!("malformed multipart body: {e}"))?;
        let text = || String::from_utf8_lossy(&data).trim().to_string();
        match name.as_str() {
            "model" => out.model = Some(text()),
            "response_format" => out.response_format = Some(text()),
            "stream" => out.stream = text() == "true",
            "file" => out.file = Some(data.clone()),
            _ => {}
        }
    }
    Ok(out)
}

/// Usage of a transcription or translation from the API's answer, else from the upload (the file, or
/// the whole multipart body that carries it).
pub fn transcription_usage(answer: &[u8], upload: Option<&[u8]>) -> (UnitUsage, UsageSource) {
    let v: Value = serde_json::from_slice(answer).unwrap_or(Value::Null);
    let u = v.get("usage").unwrap_or(&Value::Null);
    let n = |p: &str| u.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    match u.get("type").and_then(Value::as_str) {
        Some("tokens") => {
            let usage = UnitUsage {
                text_input_tokens: n("/input_token_details/text_tokens"),
                media_input_tokens: n("/input_token_details/audio_tokens"),
                output_tokens: n("/output_tokens"),
                ..Default::default()
            };
            return (usage, UsageSource::Provider);
        }
        Some("duration") => {
            if let Some(ms) = u.get("seconds").and_then(seconds_to_ms) {
                return (UnitUsage { audio_ms: ms, ..Default::default() }, UsageSource::Provider);
            }
        }
        _ => {}
    }
    // verbose_json carries the duration even without `usage`.
    if let Some(ms) = v.get("duration").and_then(seconds_to_ms) {
        return (UnitUsage { audio_ms: ms, ..Default::default() }, UsageSource::Provider);
    }
    // The upload may be the whole multipart body: the WAV starts at its RIFF header.
    let wav = |b: &[u8]| memchr::memmem::find(b, b"RIFF").and_then(|i| wav_duration_ms(&b[i..]));
    match upload.and_then(wav) {
        Some(ms) => (UnitUsage { audio_ms: ms, ..Default::default() }, UsageSource::Estimated),
        None => (UnitUsage::default(), UsageSource::None),
    }
}

/// A JSON number of seconds as whole milliseconds (rounded to the nearest).
fn seconds_to_ms(v: &Value) -> Option<u64> {
    if let Some(s) = v.as_u64() {
        return s.checked_mul(1000);
    }
    let s = v.as_f64().filter(|s| s.is_finite() && *s >= 0.0)?;
    // Durations are far below 2^53 ms; the cast cannot lose whole milliseconds.
    Some((s * 1000.0).round() as u64)
}

/// Usage of a speech request: the characters of its `input`.
pub fn speech_usage(request: &Value) -> UnitUsage {
    let characters = request.get("input").and_then(Value::as_str).map_or(0, |s| s.chars().count() as u64);
    UnitUsage { characters, ..Default::default() }
}

/// Usage of an image generation: token counts when the answer reports them (`gpt-image-*`), else the
/// images returned, at the size and quality the request asked for (the API's defaults when it did not).
pub fn image_usage(request: &Value, answer: &[u8]) -> UnitUsage {
    let v: Value = serde_json::from_slice(answer).unwrap_or(Value::Null);
    if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
        let n = |p: &str| u.pointer(p).and_then(Value::as_u64).unwrap_or(0);
        return UnitUsage {
            text_input_tokens: n("/input_tokens_details/text_tokens"),
            media_input_tokens: n("/input_tokens_details/image_tokens"),
            output_tokens: n("/output_tokens"),
            ..Default::default()
        };
    }
    let count = match v.get("data").and_then(Value::as_array) {
        Some(d) => d.len() as u64,
        None => return UnitUsage::default(),
    };
    let size = request.get("size").and_then(Value::as_str).filter(|s| *s != "auto").unwrap_or("1024x1024");
    let quality = match request.get("quality").and_then(Value::as_str) {
        None | Some("auto" | "standard" | "medium") => "standard",
        Some(q) => q,
    };
    let mut usage = UnitUsage::default();
    if count > 0 {
        usage.images.insert((size.to_string(), quality.to_string()), count);
    }
    usage
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn transcription_usage_prefers_what_the_api_reported() {
        let (u, src) = transcription_usage(br#"{"text":"x","usage":{"type":"duration","seconds":3}}"#, None);
        assert_eq!((u.audio_ms, src), (3000, UsageSource::Provider));
        let (u, _) = transcription_usage(br#"{"text":"x","duration":2.3456}"#, None);
        assert_eq!(u.audio_ms, 2346);
        let tokens = br#"{"text":"x","usage":{"type":"tokens","input_tokens":30,"input_token_details":{"text_tokens":5,"audio_tokens":25},"output_tokens":4}}"#;
        let (u, _) = transcription_usage(tokens, None);
        assert_eq!((u.text_input_tokens, u.media_input_tokens, u.output_tokens), (5, 25, 4));
        // Plain text answers carry nothing: the upload's header gives the duration.
        let mut wav = b"RIFF\0\0\0\0WAVEfmt \x10\0\0\0\x01\0\x01\0\x40\x1f\0\0\x80\x3e\0\0\x02\0\x10\0data".to_vec();
        wav.extend_from_slice(&8000u32.to_le_bytes());
        let (u, src) = transcription_usage(b"tok0 tok1", Some(&wav));
        assert_eq!((u.audio_ms, src), (500, UsageSource::Estimated));
        assert_eq!(transcription_usage(b"x", Some(b"mp3")).1, UsageSource::None);
    }

    #[test]
    fn speech_counts_characters_and_images_count_by_size_and_quality() {
        assert_eq!(speech_usage(&json!({"input": "héllo"})).characters, 5);
        let u = image_usage(&json!({"size": "1792x1024", "quality": "hd"}), br#"{"data":[{"url":"a"},{"url":"b"}]}"#);
        assert_eq!(u.images.get(&("1792x1024".into(), "hd".into())), Some(&2));
        let u = image_usage(&json!({}), br#"{"data":[{"url":"a"}]}"#);
        assert_eq!(u.images.get(&("1024x1024".into(), "standard".into())), Some(&1));
        let u = image_usage(
            &json!({}),
            br#"{"data":[{"b64_json":"x"}],"usage":{"input_tokens":9,"input_tokens_details":{"text_tokens":9,"image_tokens":0},"output_tokens":272}}"#,
        );
        assert_eq!((u.text_input_tokens, u.output_tokens, u.images.len()), (9, 272, 0));
    }
}

/// The parse phase's view of an upload: its `model`, and a refusal of `stream` (streamed
/// transcriptions are not metered yet, and nothing passes unmetered).
pub async fn upload_meta(
    headers: &HeaderMap,
    body: Bytes,
) -> Result<crate::call::RequestMeta, crate::error::GatewayError> {
    let form = read_audio_form(headers, body).await.map_err(crate::error::GatewayError::InvalidBody)?;
    if form.stream {
        return Err(crate::error::GatewayError::Untranslatable {
            param: "stream".into(),
            message: "streamed transcriptions are not supported by this gateway; send stream=false".into(),
        });
    }
    Ok(crate::call::RequestMeta { model: form.model, stream: Some(false), ..Default::default() })
}
