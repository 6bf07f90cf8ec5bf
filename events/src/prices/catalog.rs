//! Price catalog files: tollgate's own format (JSON or TOML, USD per million tokens as exact decimals)
//! and LiteLLM's `model_prices_and_context_window.json` (USD per token as JSON numbers), converted into
//! tollgate's without floats reaching money.

use super::{parse_effective_from, ModelPrice, PriceError, PriceSource, RateCard, Rates, ServiceTier};
use crate::money::{parse_usd_to_nano, MoneyError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The `format` value of a tollgate catalog file.
pub const CATALOG_FORMAT: &str = "tollgate-prices/1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogFormat {
    /// tollgate's own, JSON.
    Tollgate,
    /// tollgate's own, TOML.
    TollgateToml,
    /// LiteLLM's `model_prices_and_context_window.json`.
    LiteLlm,
}

impl CatalogFormat {
    /// Guesses the format of a file from its name and first bytes.
    pub fn detect(path: &str, text: &str) -> CatalogFormat {
        if path.ends_with(".toml") {
            return CatalogFormat::TollgateToml;
        }
        let head: String = text.chars().take(400).filter(|c| !c.is_whitespace()).collect();
        if head.contains(&format!("\"format\":\"{CATALOG_FORMAT}\"")) {
            CatalogFormat::Tollgate
        } else {
            CatalogFormat::LiteLlm
        }
    }
}

/// A decimal USD amount per million tokens, read from a string or a number and kept as text.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(transparent)]
pub struct Dec(pub String);

impl<'de> Deserialize<'de> for Dec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Dec, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(u64),
            // `Display` for f64 prints the shortest text that reads back to the same float, never in
            // exponent form: 0.0375 -> "0.0375".
            Float(f64),
        }
        Ok(Dec(match Raw::deserialize(d)? {
            Raw::Text(s) => s,
            Raw::Int(i) => i.to_string(),
            Raw::Float(f) => f.to_string(),
        }))
    }
}

/// A whole catalog file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// Always `tollgate-prices/1`.
    pub format: String,
    /// Short name used in versions (`builtin`, `litellm`, `acme`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The day these prices were read from their sources, `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_on: Option<String>,
    /// Explicit aliases: name → the model whose price it uses.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aliases: BTreeMap<String, String>,
    /// Model → versions of its price.
    #[serde(default)]
    pub models: BTreeMap<String, Vec<CatalogEntry>>,
}

/// One version of a model's price. Rates are USD per million tokens.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    /// Goes into `price_id` (`model@version`); default `<catalog name>-<effective_from or read_on>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// RFC 3339 or `YYYY-MM-DD` (UTC); absent: applies to every call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub input: Dec,
    /// Default 0 (embeddings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Dec>,
    /// Cache reads; default `input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<Dec>,
    /// Cache writes with the default 5-minute lifetime; default `input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<Dec>,
    /// Cache writes with a 1-hour lifetime; default `cache_write`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_1h: Option<Dec>,
    /// Default `output`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<Dec>,
    /// Long-context rates: the whole call is priced at a tier's rates when its input exceeds the tier's
    /// `input_tokens`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub above: Vec<TierEntry>,
    /// `batch`, `flex`, `priority`: rates for calls on that service tier (fields default to the standard
    /// ones).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub service_tiers: BTreeMap<String, TierEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
}

/// Rates of a long-context tier (`input_tokens` set: applies above that many input tokens) or of a
/// service tier (its own `above` tiers allowed). Fields left out default to the rates beneath.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Dec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Dec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<Dec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<Dec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_1h: Option<Dec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<Dec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub above: Vec<TierEntry>,
}

/// Parses a catalog file in the given format.
pub fn parse_catalog(text: &str, format: CatalogFormat) -> Result<Catalog, PriceError> {
    let c: Catalog = match format {
        CatalogFormat::Tollgate => serde_json::from_str(text).map_err(|e| PriceError::Catalog(e.to_string()))?,
        CatalogFormat::TollgateToml => toml_catalog(text)?,
        CatalogFormat::LiteLlm => return litellm_to_catalog(text).map(|(c, _)| c),
    };
    if c.format != CATALOG_FORMAT {
        return Err(PriceError::Catalog(format!("format: `{}` is not `{CATALOG_FORMAT}`", c.format)));
    }
    // Every entry must resolve to a price: a bad decimal fails the whole file, naming the model.
    for (model, entries) in &c.models {
        for e in entries {
            e.to_price(model, PriceSource::Catalog, c.read_on.as_deref())?;
        }
    }
    Ok(c)
}

fn toml_catalog(text: &str) -> Result<Catalog, PriceError> {
    toml::from_str(text).map_err(|e| PriceError::Catalog(e.message().replace('\n', " ")))
}

impl CatalogEntry {
    /// The resolved price of this entry (defaults applied, decimals checked).
    pub fn to_price(&self, model: &str, source: PriceSource, read_on: Option<&str>) -> Result<ModelPrice, PriceError> {
        let money = |field: &'static str, d: &Dec| {
            parse_usd_to_nano(&d.0).map_err(|source| PriceError::Money { model: model.to_string(), field, source })
        };
        let opt = |field: &'static str, d: &Option<Dec>| d.as_ref().map(|d| money(field, d)).transpose();
        let input = money("input", &self.input)?;
        let output = opt("output", &self.output)?.unwrap_or(0);
        let cache_write = opt("cache_write", &self.cache_write)?.unwrap_or(input);
        let base = Rates {
            input,
            output,
            cached_input: opt("cached_input", &self.cached_input)?.unwrap_or(input),
            cache_write,
            cache_write_1h: opt("cache_write_1h", &self.cache_write_1h)?.unwrap_or(cache_write),
            reasoning: opt("reasoning", &self.reasoning)?.unwrap_or(output),
        };
        let overlay = |over: &TierEntry, under: &Rates| -> Result<Rates, PriceError> {
            Ok(Rates {
                input: opt("input", &over.input)?.unwrap_or(under.input),
                output: opt("output", &over.output)?.unwrap_or(under.output),
                cached_input: opt("cached_input", &over.cached_input)?.unwrap_or(under.cached_input),
                cache_write: opt("cache_write", &over.cache_write)?.unwrap_or(under.cache_write),
                cache_write_1h: opt("cache_write_1h", &over.cache_write_1h)?.unwrap_or(under.cache_write_1h),
                reasoning: opt("reasoning", &over.reasoning)?.unwrap_or(under.reasoning),
            })
        };
        let card = |base: Rates, above: &[TierEntry]| -> Result<RateCard, PriceError> {
            let mut tiers = Vec::new();
            for t in above {
                let threshold = t.input_tokens.ok_or_else(|| {
                    PriceError::Catalog(format!("models.\"{model}\".above: each tier needs `input_tokens`"))
                })?;
                tiers.push((threshold, overlay(t, &base)?));
            }
            tiers.sort_by_key(|(t, _)| *t);
            Ok(RateCard { base, above: tiers })
        };
        let standard = card(base, &self.above)?;
        let mut service_tiers = BTreeMap::new();
        for (name, t) in &self.service_tiers {
            let tier = ServiceTier::from_catalog_key(name).ok_or_else(|| {
                PriceError::Catalog(format!(
                    "models.\"{model}\".service_tiers: `{name}` is not one of batch, flex, priority"
                ))
            })?;
            service_tiers.insert(tier, card(overlay(t, &base)?, &t.above)?);
        }
        let effective_from_us = match &self.effective_from {
            Some(v) => parse_effective_from(v)
                .ok_or_else(|| PriceError::Time { model: model.to_string(), value: v.clone() })?,
            None => 0,
        };
        let version = match (&self.version, &self.effective_from, read_on) {
            (Some(v), _, _) => v.clone(),
            (None, Some(from), _) => format!("{}-{from}", source.as_str()),
            (None, None, Some(r)) => format!("{}-{r}", source.as_str()),
            (None, None, None) => source.as_str().to_string(),
        };
        Ok(ModelPrice {
            model: model.to_string(),
            price_id: format!("{model}@{version}"),
            source,
            effective_from_us,
            standard,
            service_tiers,
            max_input_tokens: self.max_input_tokens,
            max_output_tokens: self.max_output_tokens,
        })
    }

    /// Whether two entries bill alike (ignoring version, start time and note).
    pub fn same_rates(&self, other: &CatalogEntry, model: &str) -> bool {
        let a = self.to_price(model, PriceSource::Catalog, None);
        let b = other.to_price(model, PriceSource::Catalog, None);
        match (a, b) {
            (Ok(a), Ok(b)) => {
                (a.standard, a.service_tiers, a.max_input_tokens, a.max_output_tokens)
                    == (b.standard, b.service_tiers, b.max_input_tokens, b.max_output_tokens)
            }
            _ => false,
        }
    }
}

/// What a LiteLLM conversion left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiteLlmReport {
    /// Entries without a per-token input price (images, audio by the second, rerankers…).
    pub not_token_priced: usize,
    /// Rates finer than a nano-USD per million tokens, rounded half up.
    pub rounded: usize,
    /// Price keys tollgate does not bill (audio/image tokens, 12-hour cache…), by key.
    pub ignored_keys: BTreeMap<String, usize>,
}

/// The field a LiteLLM per-token key sets, and its long-context threshold and service tier.
fn litellm_key(key: &str) -> Option<(&'static str, Option<u64>, Option<&'static str>)> {
    let (rest, tier) = [("_batches", "batch"), ("_flex", "flex"), ("_priority", "priority")]
        .iter()
        .find_map(|(suffix, tier)| key.strip_suffix(suffix).map(|r| (r, Some(*tier))))
        .unwrap_or((key, None));
    let (rest, threshold) = match rest.strip_suffix("k_tokens").and_then(|r| r.rsplit_once("_above_")) {
        Some((head, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            (head, Some(n.parse::<u64>().ok()?.checked_mul(1000)?))
        }
        _ => (rest, None),
    };
    let field = match rest {
        "input_cost_per_token" => "input",
        "output_cost_per_token" => "output",
        "cache_read_input_token_cost" => "cached_input",
        "cache_creation_input_token_cost" => "cache_write",
        "cache_creation_input_token_cost_above_1hr" => "cache_write_1h",
        "output_cost_per_reasoning_token" => "reasoning",
        _ => return None,
    };
    Some((field, threshold, tier))
}

/// USD per token as a JSON number → exact decimal USD per million tokens. The float's shortest
/// round-trip text is the decimal the file's author wrote; the point moves six places, no float maths.
/// Returns the text and whether it had to be rounded to nano-USD per million.
pub fn per_token_to_per_million(x: f64) -> Option<(String, bool)> {
    if !x.is_finite() || x < 0.0 {
        return None;
    }
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e')?;
    let exp: i64 = exp.parse().ok()?;
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int}{frac}");
    let point = int.len() as i64 + exp + 6;
    let text = if point <= 0 {
        format!("0.{}{digits}", "0".repeat((-point) as usize))
    } else if point as usize >= digits.len() {
        format!("{digits}{}", "0".repeat(point as usize - digits.len()))
    } else {
        format!("{}.{}", &digits[..point as usize], &digits[point as usize..])
    };
    match parse_usd_to_nano(&text) {
        Ok(n) => Some((super::usd_per_m(n), false)),
        Err(MoneyError::TooPrecise(_)) => {
            let (i, f) = text.split_once('.')?;
            let keep = &f[..9];
            let round_up = f.as_bytes()[9] >= b'5';
            let n = parse_usd_to_nano(&format!("{i}.{keep}")).ok()? + u64::from(round_up);
            Some((super::usd_per_m(n), true))
        }
        Err(_) => None,
    }
}

/// Converts LiteLLM's `model_prices_and_context_window.json` into a tollgate catalog named `litellm`.
pub fn litellm_to_catalog(text: &str) -> Result<(Catalog, LiteLlmReport), PriceError> {
    let all: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| PriceError::Catalog(format!("not a LiteLLM price file: {e}")))?;
    let mut report = LiteLlmReport::default();
    let mut cat = Catalog { format: CATALOG_FORMAT.into(), name: "litellm".into(), ..Default::default() };
    for (model, v) in &all {
        let Some(obj) = v.as_object() else { continue };
        if model == "sample_spec" {
            continue;
        }
        if let Some(target) = obj.get("alias_of").and_then(|t| t.as_str()) {
            cat.aliases.insert(model.clone(), target.to_string());
            continue;
        }
        if !obj.get("input_cost_per_token").is_some_and(|x| x.is_number()) {
            report.not_token_priced += 1;
            continue;
        }
        let mut base = TierEntry::default();
        let mut above: BTreeMap<u64, TierEntry> = BTreeMap::new();
        let mut tiers: BTreeMap<&str, (TierEntry, BTreeMap<u64, TierEntry>)> = BTreeMap::new();
        for (key, val) in obj {
            let Some(x) = val.as_f64() else { continue };
            let Some((field, threshold, tier)) = litellm_key(key) else {
                if key.contains("cost") && val.is_number() && x != 0.0 {
                    *report.ignored_keys.entry(key.clone()).or_default() += 1;
                }
                continue;
            };
            let Some((dec, rounded)) = per_token_to_per_million(x) else {
                return Err(PriceError::Catalog(format!("\"{model}\".{key}: `{val}` is not a price")));
            };
            report.rounded += usize::from(rounded);
            let target = match (tier, threshold) {
                (None, None) => &mut base,
                (None, Some(t)) => above.entry(t).or_default(),
                (Some(tier), None) => &mut tiers.entry(tier).or_default().0,
                (Some(tier), Some(t)) => tiers.entry(tier).or_default().1.entry(t).or_default(),
            };
            let slot = match field {
                "input" => &mut target.input,
                "output" => &mut target.output,
                "cached_input" => &mut target.cached_input,
                "cache_write" => &mut target.cache_write,
                "cache_write_1h" => &mut target.cache_write_1h,
                _ => &mut target.reasoning,
            };
            *slot = Some(Dec(dec));
        }
        let tiers_of = |m: BTreeMap<u64, TierEntry>| -> Vec<TierEntry> {
            m.into_iter().map(|(t, rates)| TierEntry { input_tokens: Some(t), ..rates }).collect()
        };
        let limit = |k: &str| obj.get(k).and_then(|x| x.as_u64());
        let entry = CatalogEntry {
            input: base.input.clone().unwrap_or(Dec("0".into())),
            output: base.output.clone(),
            cached_input: base.cached_input.clone(),
            cache_write: base.cache_write.clone(),
            cache_write_1h: base.cache_write_1h.clone(),
            reasoning: base.reasoning.clone(),
            above: tiers_of(above),
            service_tiers: tiers
                .into_iter()
                .map(|(name, (rates, above))| (name.to_string(), TierEntry { above: tiers_of(above), ..rates }))
                .collect(),
            max_input_tokens: limit("max_input_tokens"),
            max_output_tokens: limit("max_output_tokens"),
            ..Default::default()
        };
        cat.models.insert(model.clone(), vec![entry]);
    }
    Ok((cat, report))
}
