//! Bounds on provider-reported usage: token counts that are negative, fractional, not numbers, beyond
//! the model's window by a wide margin, or so large that their cost overflows are capped and reported,
//! never silently saturated or dropped.

use super::ModelLimits;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};
use std::fmt;

/// Largest token count believed for one call when the model's window is unknown (ten times the
/// largest context window offered today).
pub const ABSOLUTE_TOKEN_BOUND: u64 = 100_000_000;
/// A count above `WINDOW_MARGIN` times the model's window is not believed.
const WINDOW_MARGIN: u64 = 4;

/// A token count as a provider reported it: any JSON number is accepted; one that is not a
/// non-negative integer is taken as its nearest sane value and flagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportedTokens {
    pub value: u64,
    /// The provider sent a negative, fractional, non-numeric or out-of-range count.
    pub anomalous: bool,
}

impl<'de> Deserialize<'de> for ReportedTokens {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ReportedTokens, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ReportedTokens;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a token count")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ReportedTokens, E> {
                Ok(ReportedTokens { value: v, anomalous: false })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ReportedTokens, E> {
                Ok(ReportedTokens { value: u64::try_from(v).unwrap_or(0), anomalous: v < 0 })
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ReportedTokens, E> {
                let value = if v.is_finite() && v > 0.0 {
                    // `as` saturates at u64::MAX for huge values; the bound below caps it further.
                    v.floor() as u64
                } else {
                    0
                };
                Ok(ReportedTokens { value, anomalous: true })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ReportedTokens, E> {
                Ok(ReportedTokens { value: v.trim().parse().unwrap_or(0), anomalous: true })
            }
            fn visit_unit<E: de::Error>(self) -> Result<ReportedTokens, E> {
                Ok(ReportedTokens { value: 0, anomalous: false })
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<ReportedTokens, E> {
                Ok(ReportedTokens { value: 0, anomalous: true })
            }
        }
        d.deserialize_any(V)
    }
}

/// Token counts of an event after bounding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BoundedUsage {
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
    pub cache_write: u64,
    pub reasoning: u64,
    /// Some count was changed.
    pub capped: bool,
}

/// Caps counts beyond what the model can take: each of input and output at
/// `WINDOW_MARGIN` x the model's window (or [`ABSOLUTE_TOKEN_BOUND`] when unknown), and the parts
/// (cached, cache write, reasoning) at their whole.
pub fn bound_usage(
    input: u64,
    output: u64,
    cached_input: u64,
    cache_write: u64,
    reasoning: u64,
    limits: Option<ModelLimits>,
) -> BoundedUsage {
    let bound = |window: Option<u64>| {
        window.and_then(|w| w.checked_mul(WINDOW_MARGIN)).unwrap_or(ABSOLUTE_TOKEN_BOUND).min(ABSOLUTE_TOKEN_BOUND)
    };
    let limits = limits.unwrap_or_default();
    let in_max = bound(limits.max_input_tokens);
    let out_max = bound(limits.max_output_tokens.or(limits.max_input_tokens));
    let b_input = input.min(in_max);
    let b_output = output.min(out_max);
    let b_cached = cached_input.min(b_input);
    let b_write = cache_write.min(b_input - b_cached);
    let b_reasoning = reasoning.min(b_output);
    let capped =
        (b_input, b_output, b_cached, b_write, b_reasoning) != (input, output, cached_input, cache_write, reasoning);
    BoundedUsage {
        input: b_input,
        output: b_output,
        cached_input: b_cached,
        cache_write: b_write,
        reasoning: b_reasoning,
        capped,
    }
}
