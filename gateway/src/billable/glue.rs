//! Where the billable endpoints meet the pipeline: the upstream request of a Responses call (its bytes
//! toward an upstream that speaks the Responses API, a translation otherwise), the reader that meters
//! each endpoint's answer, the target that holds a conversation a request continues, and the pricing of
//! non-token usage in the metering task.

use super::reader::{BodyReader, Units};
use super::response_ids;
use crate::config::Wire;
use crate::error::GatewayError;
use crate::providers::{PrepareInput, Prepared, Upstream};
use crate::respond::body::BodyKind;
use crate::routing::{Route, Target};
use crate::translate::request::ToAnthropic;
use crate::translate::responses_request::{responses_to_anthropic, responses_to_chat, ResponsesToChat};
use crate::translate::responses_stream::{AnthropicToResponses, ChatToResponses};
use crate::translate::{StreamTranslator, Translation};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use std::sync::{Arc, LazyLock};
use tollgate_events::{CallEvent, Endpoint, UnitPriceTable, UsageSource};

/// The unit price catalog (built in; see `events/src/unit_price.rs`).
pub fn unit_prices() -> &'static UnitPriceTable {
    static TABLE: LazyLock<UnitPriceTable> = LazyLock::new(UnitPriceTable::builtin);
    &TABLE
}

/// Whether the endpoint's request is a `multipart/form-data` upload rather than JSON.
pub fn is_upload(endpoint: Endpoint) -> bool {
    matches!(endpoint, Endpoint::AudioTranscriptions | Endpoint::AudioTranslations)
}

/// `body` with `model` in place of the client's: a JSON body through [`crate::providers::with_model`],
/// an upload by replacing the value of its `model` form field (the file and the other fields stay as
/// they were sent).
pub fn with_model_for(
    endpoint: Endpoint,
    headers: &http::HeaderMap,
    body: &Bytes,
    model: &str,
) -> Result<Bytes, GatewayError> {
    if !is_upload(endpoint) {
        return crate::providers::with_model(body, model);
    }
    let ct = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let boundary = multer::parse_boundary(ct)
        .map_err(|e| GatewayError::InvalidBody(format!("expected a multipart/form-data upload: {e}")))?;
    multipart_with_field(body, &boundary, "model", model.as_bytes())
        .ok_or_else(|| GatewayError::InvalidBody("the upload has no `model` field".into()))
}

/// A multipart body with the value of the field `name` replaced by `value`; `None` when it has none.
fn multipart_with_field(body: &[u8], boundary: &str, name: &str, value: &[u8]) -> Option<Bytes> {
    let delim = format!("--{boundary}");
    let closing = format!("\r\n{delim}");
    let wanted = format!("name=\"{name}\"");
    let find = |hay: &[u8], needle: &[u8], from: usize| {
        hay.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|i| i + from)
    };
    let mut at = find(body, delim.as_bytes(), 0)?;
    loop {
        let head_start = at + delim.len();
        let head_end = find(body, b"\r\n\r\n", head_start)?;
        let value_start = head_end + 4;
        let value_end = find(body, closing.as_bytes(), value_start)?;
        let head = String::from_utf8_lossy(&body[head_start..head_end]);
        let is_field = head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("content-disposition:") && l.split(';').any(|p| p.trim() == wanted)
        });
        if is_field {
            let mut out = Vec::with_capacity(body.len() + value.len());
            out.extend_from_slice(&body[..value_start]);
            out.extend_from_slice(value);
            out.extend_from_slice(&body[value_end..]);
            return Some(Bytes::from(out));
        }
        at = value_end + 2;
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn to_json(v: Value) -> Result<Bytes, GatewayError> {
    serde_json::to_vec(&v).map(Bytes::from).map_err(|e| GatewayError::InvalidBody(e.to_string()))
}

/// The upstream request of a Responses call.
pub fn prepare_responses(up: &Upstream, input: &PrepareInput<'_>) -> Result<Prepared, GatewayError> {
    let kind = if input.stream { BodyKind::Sse { hide_usage: false } } else { BodyKind::Json };
    if up.serves_responses() {
        let reader = Some(Box::new(BodyReader::responses()));
        return Ok(Prepared { body: input.bytes.clone(), kind, translation: Translation::None, reader });
    }
    let req: Value = serde_json::from_slice(input.bytes).map_err(|e| GatewayError::InvalidBody(e.to_string()))?;
    let created = unix_now();
    let (body, translation) = match up.wire() {
        Wire::OpenAi => {
            let opts = ResponsesToChat {
                max_tokens_field: up.provider.max_tokens_field(),
                include_usage: up.cfg.stream_include_usage,
            };
            let body = to_json(responses_to_chat(&req, &opts)?)?;
            let t = if input.stream {
                Translation::Stream(Box::new(StreamTranslator::ChatToResponses(ChatToResponses::new(&req, created))))
            } else {
                Translation::JsonToResponses { from: Wire::OpenAi, request: Box::new(req), created }
            };
            (body, t)
        }
        Wire::Anthropic => {
            let opts = ToAnthropic { default_max_tokens: up.cfg.default_max_tokens };
            let body = to_json(responses_to_anthropic(&req, &opts)?)?;
            let t = if input.stream {
                Translation::Stream(Box::new(StreamTranslator::AnthropicToResponses(AnthropicToResponses::new(
                    &req, created,
                ))))
            } else {
                Translation::JsonToResponses { from: Wire::Anthropic, request: Box::new(req), created }
            };
            (body, t)
        }
    };
    Ok(Prepared { body, kind, translation, reader: None })
}

/// The reader that meters a media endpoint's answer, if `endpoint` is one.
pub fn media_reader(endpoint: Endpoint, body: &Bytes) -> Option<Box<BodyReader>> {
    let json = || serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
    let r = match endpoint {
        Endpoint::AudioTranscriptions | Endpoint::AudioTranslations => {
            BodyReader::Transcription { upload: Some(body.clone()) }
        }
        Endpoint::AudioSpeech => BodyReader::Speech(super::media_usage::speech_usage(&json())),
        Endpoint::Images => BodyReader::Images { request: json() },
        Endpoint::Moderations => BodyReader::Free,
        _ => return None,
    };
    Some(Box::new(r))
}

#[derive(Deserialize)]
struct Continues {
    #[serde(default)]
    previous_response_id: Option<String>,
}

/// For a Responses request that continues a stored response: the route's target on the upstream that
/// holds it (no other upstream has that conversation).
pub fn pinned_target(endpoint: Endpoint, body: &Bytes, route: &Route) -> Option<Arc<Target>> {
    if endpoint != Endpoint::Responses {
        return None;
    }
    let prev = serde_json::from_slice::<Continues>(body).ok()?.previous_response_id?;
    let holder = response_ids::global().upstream_of(&prev)?;
    route.targets.iter().find(|t| *t.upstream.cfg.name == *holder).cloned()
}

/// Adds the price of a call's non-token usage (media units, built-in tool calls) to its event, and
/// records the tool calls, and whatever had no price, as tags.
pub fn price_units(ev: &mut CallEvent, u: &Units) {
    let table = unit_prices();
    let model = if table.has_model(&ev.served_model) { ev.served_model.clone() } else { ev.requested_model.clone() };
    let c = table.cost(&model, &u.usage);
    ev.cost_nanousd = ev.cost_nanousd.saturating_add(c.nanousd);
    if let Some(id) = c.price_id.filter(|_| ev.price_id.is_empty()) {
        ev.price_id = id.into();
    }
    for (tool, n) in &u.usage.tool_calls {
        ev.tags.insert(format!("builtin_tool.{tool}"), n.to_string());
    }
    if !c.unpriced.is_empty() {
        ev.tags.insert("unpriced".into(), c.unpriced.join(","));
    }
    if u.source != UsageSource::Provider {
        ev.usage_source = u.source;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_events::UnitUsage;

    #[test]
    fn unit_usage_adds_to_the_token_cost_and_names_what_had_no_price() {
        let mut ev = CallEvent {
            served_model: "gpt-4.1".into(),
            cost_nanousd: 1_000,
            price_id: "gpt-4.1@x".into(),
            ..Default::default()
        };
        let mut usage = UnitUsage::default();
        usage.tool_calls.insert("web_search_call".into(), 2);
        usage.tool_calls.insert("mcp_call".into(), 1);
        price_units(&mut ev, &Units { usage, source: UsageSource::Provider });
        assert_eq!(ev.cost_nanousd, 1_000 + 2 * 10_000_000);
        assert_eq!(ev.price_id, "gpt-4.1@x", "the token price stays the event's price id");
        assert_eq!(ev.tags.get("builtin_tool.web_search_call").map(String::as_str), Some("2"));
        assert_eq!(ev.tags.get("unpriced").map(String::as_str), Some("tool:mcp_call"));

        let mut ev = CallEvent { served_model: "whisper-1".into(), ..Default::default() };
        let usage = UnitUsage { audio_ms: 1_500, ..Default::default() };
        price_units(&mut ev, &Units { usage, source: UsageSource::Estimated });
        assert_eq!((ev.cost_nanousd, ev.usage_source), (150_000, UsageSource::Estimated));
        assert!(ev.price_id.starts_with("whisper-1@"));
    }

    #[test]
    fn an_upload_gets_the_target_model_in_its_model_field_and_keeps_the_rest() {
        let body = "--b1\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF\r\nname=\"model\"\r\n--b1\r\nContent-Disposition: form-data; name=\"model_hint\"\r\n\r\nx\r\n--b1\r\ncontent-disposition: form-data; name=\"model\"\r\n\r\nwhisper-public\r\n--b1--\r\n";
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, "multipart/form-data; boundary=b1".parse().unwrap());
        let out = with_model_for(Endpoint::AudioTranscriptions, &headers, &Bytes::from(body), "whisper-1").unwrap();
        assert_eq!(String::from_utf8(out.to_vec()).unwrap(), body.replace("whisper-public", "whisper-1"));
        let none = "--b1\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nx\r\n--b1--\r\n";
        assert!(with_model_for(Endpoint::AudioTranscriptions, &headers, &Bytes::from(none), "m").is_err());
        let json = Bytes::from_static(br#"{"model":"a","input":"x"}"#);
        let out = with_model_for(Endpoint::AudioSpeech, &headers, &json, "tts-1").unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&out).unwrap()["model"], "tts-1");
    }

    #[test]
    fn media_endpoints_get_a_reader_and_chat_does_not() {
        let body = Bytes::from_static(br#"{"model":"tts-1","input":"abc"}"#);
        assert!(
            matches!(media_reader(Endpoint::AudioSpeech, &body).as_deref(), Some(BodyReader::Speech(u)) if u.characters == 3)
        );
        assert!(media_reader(Endpoint::Chat, &body).is_none());
        assert!(is_upload(Endpoint::AudioTranscriptions) && !is_upload(Endpoint::AudioSpeech));
    }
}
