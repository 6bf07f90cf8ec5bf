//! The price table: USD per million tokens of each kind, held as integer nano-USD per million tokens so
//! that fractional prices (e.g. $0.0375/M) price every call exactly. Built-in prices ship with the binary
//! and config entries override or extend them.

use crate::money::{parse_usd_to_nano, MoneyError};
use std::collections::HashMap;

/// When the built-in prices were read from the providers' public price pages. Prices change: override
/// them in config (`[prices."model"]`) when a provider changes theirs.
pub const BUILTIN_PRICES_READ_ON: &str = "2025-11-01";

/// Token counts of one call, normalised: `input` includes `cached_input` and `cache_write`; `output`
/// includes `reasoning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
    pub cache_write: u64,
    pub reasoning: u64,
}

/// One model's rates, nano-USD per million tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPrice {
    /// `model@version`, recorded in each event this price priced.
    pub price_id: String,
    pub input: u64,
    pub cached_input: u64,
    pub cache_write: u64,
    pub output: u64,
    pub reasoning: u64,
}

impl ModelPrice {
    /// Cost of `usage` in nano-USD: exact integer arithmetic, one rounding (half up) at the end.
    pub fn cost_nanousd(&self, u: &Usage) -> u64 {
        let cached = u.cached_input.min(u.input);
        let write = u.cache_write.min(u.input - cached);
        let plain_in = u.input - cached - write;
        let reasoning = u.reasoning.min(u.output);
        let plain_out = u.output - reasoning;
        let micro_sum: u128 = u128::from(plain_in) * u128::from(self.input)
            + u128::from(cached) * u128::from(self.cached_input)
            + u128::from(write) * u128::from(self.cache_write)
            + u128::from(plain_out) * u128::from(self.output)
            + u128::from(reasoning) * u128::from(self.reasoning);
        let nanos = (micro_sum + 500_000) / 1_000_000;
        u64::try_from(nanos).unwrap_or(u64::MAX)
    }
}

/// A price given in config or built in, as decimal USD per million tokens.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PriceSpec {
    pub input: String,
    pub output: String,
    /// Defaults to `input` when absent.
    pub cached_input: Option<String>,
    /// Defaults to `input` when absent.
    pub cache_write: Option<String>,
    /// Defaults to `output` when absent (OpenAI bills reasoning as output).
    pub reasoning: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PriceError {
    #[error("prices.\"{model}\".{field}: {source}")]
    Money { model: String, field: &'static str, source: MoneyError },
}

/// Model name → price, with lookup by exact name, then by the longest known name that the model starts
/// with followed by `-` (so `gpt-4o-mini-2024-07-18` is priced as `gpt-4o-mini`, never as `gpt-4o`).
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    prices: HashMap<String, ModelPrice>,
}

// (model, input, cached input, cache write, output) in USD per million tokens; reasoning = output.
// OpenAI bills cached input at the cached rate and has no separate cache-write charge (write = input).
// Anthropic: cache write (5-minute) = 1.25 x input, cache read = 0.1 x input.
const BUILTIN: &[(&str, &str, &str, &str, &str)] = &[
    // OpenAI chat / reasoning
    ("gpt-5", "1.25", "0.125", "1.25", "10"),
    ("gpt-5-mini", "0.25", "0.025", "0.25", "2"),
    ("gpt-5-nano", "0.05", "0.005", "0.05", "0.4"),
    ("gpt-4.1", "2", "0.5", "2", "8"),
    ("gpt-4.1-mini", "0.4", "0.1", "0.4", "1.6"),
    ("gpt-4.1-nano", "0.1", "0.025", "0.1", "0.4"),
    ("gpt-4o", "2.5", "1.25", "2.5", "10"),
    ("gpt-4o-mini", "0.15", "0.075", "0.15", "0.6"),
    ("gpt-4-turbo", "10", "10", "10", "30"),
    ("gpt-4", "30", "30", "30", "60"),
    ("gpt-3.5-turbo", "0.5", "0.5", "0.5", "1.5"),
    ("o1", "15", "7.5", "15", "60"),
    ("o1-mini", "1.1", "0.55", "1.1", "4.4"),
    ("o3", "2", "0.5", "2", "8"),
    ("o3-mini", "1.1", "0.55", "1.1", "4.4"),
    ("o3-pro", "20", "20", "20", "80"),
    ("o4-mini", "1.1", "0.275", "1.1", "4.4"),
    // OpenAI embeddings
    ("text-embedding-3-small", "0.02", "0.02", "0.02", "0"),
    ("text-embedding-3-large", "0.13", "0.13", "0.13", "0"),
    ("text-embedding-ada-002", "0.1", "0.1", "0.1", "0"),
    // Anthropic
    ("claude-opus-4-5", "5", "0.5", "6.25", "25"),
    ("claude-opus-4-1", "15", "1.5", "18.75", "75"),
    ("claude-opus-4", "15", "1.5", "18.75", "75"),
    ("claude-sonnet-4-5", "3", "0.3", "3.75", "15"),
    ("claude-sonnet-4", "3", "0.3", "3.75", "15"),
    ("claude-3-7-sonnet", "3", "0.3", "3.75", "15"),
    ("claude-3-5-sonnet", "3", "0.3", "3.75", "15"),
    ("claude-haiku-4-5", "1", "0.1", "1.25", "5"),
    ("claude-3-5-haiku", "0.8", "0.08", "1", "4"),
    ("claude-3-haiku", "0.25", "0.03", "0.3", "1.25"),
    ("claude-3-opus", "15", "1.5", "18.75", "75"),
];

impl PriceTable {
    /// The built-in table. Its entries are literals checked by the unit tests below.
    pub fn builtin() -> PriceTable {
        let mut t = PriceTable::default();
        for (model, input, cached, write, output) in BUILTIN {
            let spec = PriceSpec {
                input: (*input).into(),
                output: (*output).into(),
                cached_input: Some((*cached).into()),
                cache_write: Some((*write).into()),
                reasoning: None,
            };
            let version = format!("builtin-{BUILTIN_PRICES_READ_ON}");
            // Literals above are valid decimals; a bad one would fail every test in this module.
            if let Ok(p) = ModelPrice::from_spec(model, &spec, &version) {
                t.prices.insert((*model).to_string(), p);
            }
        }
        t
    }

    /// Adds or replaces a model's price (from config). `version` goes into the price id.
    pub fn set(&mut self, model: &str, spec: &PriceSpec, version: &str) -> Result<(), PriceError> {
        let p = ModelPrice::from_spec(model, spec, version)?;
        self.prices.insert(model.to_string(), p);
        Ok(())
    }

    pub fn get(&self, model: &str) -> Option<&ModelPrice> {
        if let Some(p) = self.prices.get(model) {
            return Some(p);
        }
        // Strip a provider prefix such as `openai/gpt-4o`.
        let model = model.rsplit('/').next().unwrap_or(model);
        if let Some(p) = self.prices.get(model) {
            return Some(p);
        }
        let mut best: Option<(&str, &ModelPrice)> = None;
        for (name, p) in &self.prices {
            let matches =
                model.len() > name.len() && model.starts_with(name.as_str()) && model.as_bytes()[name.len()] == b'-';
            if matches && best.is_none_or(|(b, _)| name.len() > b.len()) {
                best = Some((name, p));
            }
        }
        best.map(|(_, p)| p)
    }

    pub fn len(&self) -> usize {
        self.prices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prices.is_empty()
    }
}

impl ModelPrice {
    fn from_spec(model: &str, s: &PriceSpec, version: &str) -> Result<ModelPrice, PriceError> {
        let parse = |field: &'static str, v: &str| {
            parse_usd_to_nano(v).map_err(|source| PriceError::Money { model: model.to_string(), field, source })
        };
        let input = parse("input", &s.input)?;
        let output = parse("output", &s.output)?;
        Ok(ModelPrice {
            price_id: format!("{model}@{version}"),
            input,
            output,
            cached_input: s.cached_input.as_deref().map(|v| parse("cached_input", v)).transpose()?.unwrap_or(input),
            cache_write: s.cache_write.as_deref().map(|v| parse("cache_write", v)).transpose()?.unwrap_or(input),
            reasoning: s.reasoning.as_deref().map(|v| parse("reasoning", v)).transpose()?.unwrap_or(output),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_table_parses_every_entry() {
        assert_eq!(PriceTable::builtin().len(), BUILTIN.len());
    }

    #[test]
    fn exact_costs_in_nano_usd() {
        let t = PriceTable::builtin();
        let mini = t.get("gpt-4o-mini").unwrap();
        // 1000 in x $0.15/M = $0.00015 = 150_000 nano; 500 out x $0.60/M = 300_000 nano.
        assert_eq!(mini.cost_nanousd(&Usage { input: 1000, output: 500, ..Default::default() }), 450_000);
        // Cached at $0.075/M = 75 nano-USD per token: 1000 cached = 75_000 nano.
        assert_eq!(mini.cost_nanousd(&Usage { input: 1000, cached_input: 1000, ..Default::default() }), 75_000);
        // At $0.0375/M one token costs 37.5 nano: the total rounds half up once, per call.
        let mut t2 = PriceTable::default();
        t2.set("f", &PriceSpec { input: "0.0375".into(), output: "0".into(), ..Default::default() }, "t").unwrap();
        let f = t2.get("f").unwrap();
        assert_eq!(f.cost_nanousd(&Usage { input: 1, ..Default::default() }), 38);
        assert_eq!(f.cost_nanousd(&Usage { input: 2, ..Default::default() }), 75);
        assert_eq!(f.cost_nanousd(&Usage { input: 3, ..Default::default() }), 113);

        let sonnet = t.get("claude-sonnet-4-5").unwrap();
        // 10_000 in, of which 2_000 read from cache ($0.30/M) and 3_000 written ($3.75/M), the other
        // 5_000 at $3/M; 1_000 out at $15/M. $1/M is 1_000 nano-USD per token.
        let u = Usage { input: 10_000, output: 1_000, cached_input: 2_000, cache_write: 3_000, reasoning: 0 };
        assert_eq!(sonnet.cost_nanousd(&u), 15_000_000 + 600_000 + 11_250_000 + 15_000_000);

        let o3 = t.get("o3").unwrap();
        // Reasoning is part of output and priced at the output rate by default: no double counting.
        let u = Usage { input: 100, output: 300, reasoning: 200, ..Default::default() };
        assert_eq!(o3.cost_nanousd(&u), 100 * 2_000 + 300 * 8_000);
    }

    #[test]
    fn lookup_prefers_exact_then_longest_dash_prefix() {
        let t = PriceTable::builtin();
        assert_eq!(
            t.get("gpt-4o-mini-2024-07-18").unwrap().price_id,
            format!("gpt-4o-mini@builtin-{BUILTIN_PRICES_READ_ON}")
        );
        assert_eq!(t.get("gpt-4o-2024-08-06").unwrap().price_id, format!("gpt-4o@builtin-{BUILTIN_PRICES_READ_ON}"));
        assert_eq!(t.get("openai/gpt-4o").unwrap().price_id, format!("gpt-4o@builtin-{BUILTIN_PRICES_READ_ON}"));
        assert_eq!(t.get("claude-3-5-haiku-20241022").unwrap().input, 800_000_000);
        assert!(t.get("gpt-4ox").is_none());
        assert!(t.get("llama-3").is_none());
    }

    #[test]
    fn config_override_with_fractional_prices() {
        let mut t = PriceTable::builtin();
        let spec = PriceSpec { input: "0.0375".into(), output: "0.000001".into(), ..Default::default() };
        t.set("my-llama", &spec, "config").unwrap();
        let p = t.get("my-llama").unwrap();
        assert_eq!(p.input, 37_500_000);
        assert_eq!(p.cached_input, 37_500_000);
        assert_eq!(p.cost_nanousd(&Usage { input: 1_000_000, output: 1_000_000, ..Default::default() }), 37_501_000);
        // ($0.000001/M is 1_000 nano-USD per million tokens.)
        let bad = PriceSpec { input: "abc".into(), output: "1".into(), ..Default::default() };
        let err = t.set("x", &bad, "config").unwrap_err().to_string();
        assert_eq!(err, "prices.\"x\".input: `abc` is not a decimal USD amount");
    }
}
