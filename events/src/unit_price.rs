//! Prices of what is not billed per token of text: audio by the minute, speech by the character, images
//! by size and quality, audio and image models whose tokens cost differently by modality, and the
//! Responses API's built-in tools by the call. Like the token table, every rate is integer nano-USD and
//! a call's cost is summed exactly with one rounding (half up) at the end.

use crate::money::{parse_usd_to_nano, MoneyError};
use std::collections::{BTreeMap, HashMap};

/// When the built-in unit prices were read from OpenAI's public price page.
pub const BUILTIN_UNIT_PRICES_READ_ON: &str = "2025-11-01";

/// What one call of a non-text endpoint used, in the units its price is quoted in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitUsage {
    /// Audio duration in milliseconds (transcriptions, translations).
    pub audio_ms: u64,
    /// Characters of input text (speech).
    pub characters: u64,
    /// Images generated, by `(size, quality)` as the request asked for them.
    pub images: BTreeMap<(String, String), u64>,
    /// Token counts of models priced by modality (`gpt-4o-transcribe`, `gpt-image-1`): the text part of
    /// the input, the audio or image part of the input, and the output.
    pub text_input_tokens: u64,
    pub media_input_tokens: u64,
    pub output_tokens: u64,
    /// Built-in tool calls of a Responses call by output item type (`web_search_call`, …).
    pub tool_calls: BTreeMap<String, u64>,
}

impl UnitUsage {
    pub fn is_empty(&self) -> bool {
        *self == UnitUsage::default()
    }
}

/// One model's non-token rates, each in nano-USD.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitPrice {
    /// `model@version`, recorded in the events it priced.
    pub price_id: String,
    /// Per minute of audio.
    pub per_audio_minute: Option<u64>,
    /// Per million characters.
    pub per_million_characters: Option<u64>,
    /// Per image, by `(size, quality)`.
    pub per_image: BTreeMap<(String, String), u64>,
    /// Per million tokens, by modality.
    pub text_input: Option<u64>,
    pub media_input: Option<u64>,
    pub output: Option<u64>,
}

/// A unit price as written in config or built in: decimal USD.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UnitPriceSpec {
    pub per_audio_minute: Option<String>,
    pub per_million_characters: Option<String>,
    /// `"SIZE/QUALITY"` (e.g. `"1024x1024/hd"`) → USD per image.
    pub per_image: BTreeMap<String, String>,
    pub text_input: Option<String>,
    pub media_input: Option<String>,
    pub output: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum UnitPriceError {
    #[error("unit_prices.\"{model}\".{field}: {source}")]
    Money { model: String, field: String, source: MoneyError },
    #[error("unit_prices.\"{model}\".per_image: key `{key}` must be SIZE/QUALITY, e.g. 1024x1024/standard")]
    ImageKey { model: String, key: String },
}

/// What a call cost, and which catalog entries priced it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitCost {
    pub nanousd: u64,
    /// The model's `price_id` when one of its rates applied.
    pub price_id: Option<String>,
    /// Usage the catalog has no price for, e.g. `image:512x512/hd` or `tool:mcp_call` (reported so that
    /// the event can say what went unpriced instead of pretending it was free).
    pub unpriced: Vec<String>,
}

// Common denominator of every rate's unit: a minute in milliseconds × a million.
const DENOM: u128 = 60_000 * 1_000_000;

// model, per audio minute, per million characters.
const BUILTIN_DURATION_AND_CHARS: &[(&str, Option<&str>, Option<&str>)] =
    &[("whisper-1", Some("0.006"), None), ("tts-1", None, Some("15")), ("tts-1-hd", None, Some("30"))];

// model, size, quality, USD per image.
const BUILTIN_IMAGES: &[(&str, &str, &str, &str)] = &[
    ("dall-e-3", "1024x1024", "standard", "0.04"),
    ("dall-e-3", "1024x1792", "standard", "0.08"),
    ("dall-e-3", "1792x1024", "standard", "0.08"),
    ("dall-e-3", "1024x1024", "hd", "0.08"),
    ("dall-e-3", "1024x1792", "hd", "0.12"),
    ("dall-e-3", "1792x1024", "hd", "0.12"),
    ("dall-e-2", "256x256", "standard", "0.016"),
    ("dall-e-2", "512x512", "standard", "0.018"),
    ("dall-e-2", "1024x1024", "standard", "0.02"),
];

// model, text input, audio/image input, output: USD per million tokens.
const BUILTIN_MODALITY_TOKENS: &[(&str, &str, &str, &str)] = &[
    ("gpt-4o-transcribe", "2.5", "6", "10"),
    ("gpt-4o-mini-transcribe", "1.25", "3", "5"),
    ("gpt-image-1", "5", "10", "40"),
    ("gpt-image-1-mini", "2", "2.5", "8"),
];

// Free models: known to the catalog (so config accepts them) with no rate at all.
const BUILTIN_FREE: &[&str] =
    &["omni-moderation-latest", "omni-moderation-2024-09-26", "text-moderation-latest", "text-moderation-stable"];

// Responses API built-in tools: output item type, USD per call. Code interpreter is billed per container
// session; one call is counted as one session (an upper bound when a session serves several calls).
const BUILTIN_TOOL_CALLS: &[(&str, &str)] =
    &[("web_search_call", "0.01"), ("file_search_call", "0.0025"), ("code_interpreter_call", "0.03")];

/// Model → unit price, and built-in tool → price per call.
#[derive(Debug, Clone, Default)]
pub struct UnitPriceTable {
    models: HashMap<String, UnitPrice>,
    /// Tool output item type → nano-USD per call.
    tool_calls: HashMap<String, u64>,
}

fn usd(model: &str, field: &str, text: &str) -> Result<u64, UnitPriceError> {
    parse_usd_to_nano(text).map_err(|source| UnitPriceError::Money {
        model: model.to_string(),
        field: field.to_string(),
        source,
    })
}

fn usd_opt(model: &str, field: &str, text: Option<&String>) -> Result<Option<u64>, UnitPriceError> {
    text.map(|t| usd(model, field, t)).transpose()
}

impl UnitPrice {
    fn from_spec(model: &str, s: &UnitPriceSpec, version: &str) -> Result<UnitPrice, UnitPriceError> {
        let mut per_image = BTreeMap::new();
        for (key, price) in &s.per_image {
            let (size, quality) = key
                .split_once('/')
                .filter(|(a, b)| !a.is_empty() && !b.is_empty())
                .ok_or_else(|| UnitPriceError::ImageKey { model: model.to_string(), key: key.clone() })?;
            per_image
                .insert((size.to_string(), quality.to_string()), usd(model, &format!("per_image.\"{key}\""), price)?);
        }
        Ok(UnitPrice {
            price_id: format!("{model}@{version}"),
            per_audio_minute: usd_opt(model, "per_audio_minute", s.per_audio_minute.as_ref())?,
            per_million_characters: usd_opt(model, "per_million_characters", s.per_million_characters.as_ref())?,
            per_image,
            text_input: usd_opt(model, "text_input", s.text_input.as_ref())?,
            media_input: usd_opt(model, "media_input", s.media_input.as_ref())?,
            output: usd_opt(model, "output", s.output.as_ref())?,
        })
    }

    /// Cost of `u` in nano-USD with the usage no rate covered; built-in tools are priced by the table.
    fn cost_parts(&self, u: &UnitUsage, unpriced: &mut Vec<String>) -> (u128, bool) {
        let mut sum: u128 = 0;
        let mut used = false;
        let mut term = |units: u64, rate: Option<u64>, per: u128, what: &str, unpriced: &mut Vec<String>| {
            if units == 0 {
                return;
            }
            match rate {
                Some(r) => {
                    sum += u128::from(units) * u128::from(r) * (DENOM / per);
                    used = true;
                }
                None => unpriced.push(what.to_string()),
            }
        };
        term(u.audio_ms, self.per_audio_minute, 60_000, "audio_minutes", unpriced);
        term(u.characters, self.per_million_characters, 1_000_000, "characters", unpriced);
        term(u.text_input_tokens, self.text_input, 1_000_000, "text_input_tokens", unpriced);
        term(u.media_input_tokens, self.media_input, 1_000_000, "media_input_tokens", unpriced);
        term(u.output_tokens, self.output, 1_000_000, "output_tokens", unpriced);
        for ((size, quality), n) in &u.images {
            let rate = self.per_image.get(&(size.clone(), quality.clone())).copied();
            term(*n, rate, 1, &format!("image:{size}/{quality}"), unpriced);
        }
        (sum, used)
    }
}

impl UnitPriceTable {
    /// The built-in catalog (OpenAI's published prices; see [`BUILTIN_UNIT_PRICES_READ_ON`]).
    pub fn builtin() -> UnitPriceTable {
        let version = format!("builtin-{BUILTIN_UNIT_PRICES_READ_ON}");
        let mut specs: BTreeMap<&str, UnitPriceSpec> = BTreeMap::new();
        for (model, minute, chars) in BUILTIN_DURATION_AND_CHARS {
            let s = specs.entry(model).or_default();
            s.per_audio_minute = minute.map(str::to_string);
            s.per_million_characters = chars.map(str::to_string);
        }
        for (model, size, quality, price) in BUILTIN_IMAGES {
            specs.entry(model).or_default().per_image.insert(format!("{size}/{quality}"), (*price).to_string());
        }
        for (model, text, media, out) in BUILTIN_MODALITY_TOKENS {
            let s = specs.entry(model).or_default();
            s.text_input = Some((*text).to_string());
            s.media_input = Some((*media).to_string());
            s.output = Some((*out).to_string());
        }
        for model in BUILTIN_FREE {
            specs.entry(model).or_default();
        }
        let mut t = UnitPriceTable::default();
        for (model, spec) in specs {
            // The literals above are valid; the unit tests price each kind, so a bad one fails them.
            if let Ok(p) = UnitPrice::from_spec(model, &spec, &version) {
                t.models.insert(model.to_string(), p);
            }
        }
        for (tool, price) in BUILTIN_TOOL_CALLS {
            if let Ok(n) = parse_usd_to_nano(price) {
                t.tool_calls.insert((*tool).to_string(), n);
            }
        }
        t
    }

    /// Adds or replaces a model's unit prices (from config).
    pub fn set(&mut self, model: &str, spec: &UnitPriceSpec, version: &str) -> Result<(), UnitPriceError> {
        let p = UnitPrice::from_spec(model, spec, version)?;
        self.models.insert(model.to_string(), p);
        Ok(())
    }

    /// Sets the price of one call of a built-in tool (its output item type, e.g. `web_search_call`).
    pub fn set_tool_call(&mut self, tool: &str, usd_per_call: &str) -> Result<(), UnitPriceError> {
        let n = usd(tool, "per_call", usd_per_call)?;
        self.tool_calls.insert(tool.to_string(), n);
        Ok(())
    }

    /// Exact name, then without a provider prefix (`openai/whisper-1`), then the longest known name the
    /// model starts with followed by `-` (a dated snapshot such as `gpt-4o-transcribe-2025-03-20`).
    pub fn get(&self, model: &str) -> Option<&UnitPrice> {
        let bare = model.rsplit('/').next().unwrap_or(model);
        if let Some(p) = self.models.get(model).or_else(|| self.models.get(bare)) {
            return Some(p);
        }
        self.models
            .iter()
            .filter(|(name, _)| bare.strip_prefix(name.as_str()).is_some_and(|rest| rest.starts_with('-')))
            .max_by_key(|(name, _)| name.len())
            .map(|(_, p)| p)
    }

    /// Whether the catalog prices this model in any unit.
    pub fn has_model(&self, model: &str) -> bool {
        self.get(model).is_some()
    }

    /// Price of one built-in tool call, nano-USD.
    pub fn tool_call(&self, tool: &str) -> Option<u64> {
        self.tool_calls.get(tool).copied()
    }

    /// What `usage` of `model` costs: the model's unit rates plus the built-in tool calls.
    pub fn cost(&self, model: &str, usage: &UnitUsage) -> UnitCost {
        let mut unpriced = Vec::new();
        let (mut sum, price_id) = match self.get(model) {
            Some(p) => {
                let (sum, used) = p.cost_parts(usage, &mut unpriced);
                (sum, used.then(|| p.price_id.clone()))
            }
            None => {
                // Everything but tool calls needs the model's entry.
                let (sum, _) = UnitPrice::default().cost_parts(usage, &mut unpriced);
                (sum, None)
            }
        };
        for (tool, n) in &usage.tool_calls {
            match self.tool_call(tool) {
                Some(rate) => sum += u128::from(*n) * u128::from(rate) * DENOM,
                None => unpriced.push(format!("tool:{tool}")),
            }
        }
        let nanos = (sum + DENOM / 2) / DENOM;
        UnitCost { nanousd: u64::try_from(nanos).unwrap_or(u64::MAX), price_id, unpriced }
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }
}

/// Duration of a WAV file in milliseconds: the `data` chunk's size over the `fmt ` chunk's byte rate; `None`
/// when the bytes are not a WAV file (the gateway then has no duration of its own to meter).
pub fn wav_duration_ms(b: &[u8]) -> Option<u64> {
    if b.len() < 12 || &b[0..4] != b"RIFF" || &b[8..12] != b"WAVE" {
        return None;
    }
    let mut at = 12;
    let mut byte_rate: Option<u64> = None;
    while at + 8 <= b.len() {
        let id = &b[at..at + 4];
        let size = u32::from_le_bytes(b[at + 4..at + 8].try_into().ok()?) as usize;
        let data = at + 8;
        if id == b"fmt " && data + 12 <= b.len() {
            byte_rate = Some(u64::from(u32::from_le_bytes(b[data + 8..data + 12].try_into().ok()?)));
        }
        if id == b"data" {
            let rate = byte_rate.filter(|r| *r > 0)?;
            return Some((size as u64).saturating_mul(1000) / rate);
        }
        at = data.checked_add(size)?.checked_add(size % 2)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage() -> UnitUsage {
        UnitUsage::default()
    }

    #[test]
    fn audio_is_priced_by_the_millisecond_exactly() {
        let t = UnitPriceTable::builtin();
        // whisper-1: $0.006 per minute = 6,000,000 nano-USD per 60,000 ms = 100 nano-USD per ms.
        let c = t.cost("whisper-1", &UnitUsage { audio_ms: 12_345, ..usage() });
        assert_eq!(c.nanousd, 1_234_500);
        assert_eq!(c.price_id.as_deref(), Some("whisper-1@builtin-2025-11-01"));
        assert!(c.unpriced.is_empty());
        // A dated or prefixed name finds the same entry.
        assert_eq!(t.cost("openai/whisper-1", &UnitUsage { audio_ms: 60_000, ..usage() }).nanousd, 6_000_000);
    }

    #[test]
    fn characters_images_and_modality_tokens() {
        let t = UnitPriceTable::builtin();
        // tts-1: $15 per million characters = 15,000 nano-USD per character.
        assert_eq!(t.cost("tts-1", &UnitUsage { characters: 7, ..usage() }).nanousd, 105_000);
        let mut u = usage();
        u.images.insert(("1024x1024".into(), "hd".into()), 2);
        u.images.insert(("1792x1024".into(), "standard".into()), 1);
        assert_eq!(t.cost("dall-e-3", &u).nanousd, 2 * 80_000_000 + 80_000_000);
        u.images.insert(("64x64".into(), "standard".into()), 1);
        assert_eq!(t.cost("dall-e-3", &u).unpriced, vec!["image:64x64/standard".to_string()]);
        // gpt-4o-transcribe: 10 text tokens at $2.5/M, 1000 audio tokens at $6/M, 50 output at $10/M.
        let u = UnitUsage { text_input_tokens: 10, media_input_tokens: 1000, output_tokens: 50, ..usage() };
        assert_eq!(t.cost("gpt-4o-transcribe-2025-03-20", &u).nanousd, 25_000 + 6_000_000 + 500_000);
    }

    #[test]
    fn tool_calls_are_priced_per_call_or_reported_unpriced() {
        let mut t = UnitPriceTable::builtin();
        let mut u = usage();
        u.tool_calls.insert("web_search_call".into(), 3);
        u.tool_calls.insert("mcp_call".into(), 1);
        let c = t.cost("gpt-4.1", &u);
        assert_eq!(c.nanousd, 30_000_000);
        assert_eq!(c.unpriced, vec!["tool:mcp_call".to_string()]);
        assert_eq!(c.price_id, None, "gpt-4.1 has no unit entry; its tokens are priced elsewhere");
        t.set_tool_call("mcp_call", "0.000000001").unwrap();
        assert_eq!(t.cost("gpt-4.1", &u).nanousd, 30_000_001);
    }

    #[test]
    fn rounding_happens_once_half_up() {
        let mut t = UnitPriceTable::default();
        let spec = UnitPriceSpec { per_million_characters: Some("0.0005".into()), ..Default::default() };
        t.set("m", &spec, "v").unwrap();
        // 1 character = 0.5 nano-USD → rounds to 1; 3 characters = 1.5 → 2 (not 1 + 1 + 1 = 3).
        assert_eq!(t.cost("m", &UnitUsage { characters: 1, ..usage() }).nanousd, 1);
        assert_eq!(t.cost("m", &UnitUsage { characters: 3, ..usage() }).nanousd, 2);
    }

    #[test]
    fn bad_specs_name_the_field() {
        let mut t = UnitPriceTable::default();
        let bad = UnitPriceSpec { per_audio_minute: Some("cheap".into()), ..Default::default() };
        let e = t.set("x", &bad, "v").unwrap_err().to_string();
        assert!(e.starts_with("unit_prices.\"x\".per_audio_minute:"), "{e}");
        let mut bad = UnitPriceSpec::default();
        bad.per_image.insert("1024x1024".into(), "0.1".into());
        assert!(matches!(t.set("x", &bad, "v"), Err(UnitPriceError::ImageKey { .. })));
        assert!(!t.has_model("whisper-1"));
        assert!(UnitPriceTable::builtin().has_model("whisper-1"));
        let free = UnitPriceTable::builtin().cost("omni-moderation-latest", &UnitUsage::default());
        assert_eq!((free.nanousd, free.unpriced.len()), (0, 0));
    }

    #[test]
    fn wav_headers_give_the_duration() {
        // RIFF/WAVE, fmt chunk (PCM, mono, 8 kHz, 16000 bytes/s), data chunk of 4000 bytes = 250 ms.
        let mut b = b"RIFF\0\0\0\0WAVEfmt ".to_vec();
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&[1, 0, 1, 0]);
        b.extend_from_slice(&8000u32.to_le_bytes());
        b.extend_from_slice(&16000u32.to_le_bytes());
        b.extend_from_slice(&[2, 0, 16, 0]);
        b.extend_from_slice(b"data");
        b.extend_from_slice(&4000u32.to_le_bytes());
        assert_eq!(wav_duration_ms(&b), Some(250));
        assert_eq!(wav_duration_ms(b"ID3\x04 an mp3"), None);
        assert_eq!(wav_duration_ms(&b[..30]), None, "no data chunk");
    }
}
