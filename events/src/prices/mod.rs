//! The price catalog: what each model costs, in integer nano-USD per million tokens, with versions that
//! take effect from a moment, long-context and service tiers, and exact matching of model names.
//!
//! Sources, weakest first: the built-in table (a tollgate catalog compiled into the binary), imported
//! catalog files (`tollgate prices import`), and config entries (`[prices."model"]`). For a call at time
//! `t` the strongest source that has a version of the model effective at `t` prices it, and within a
//! source the latest version effective at `t`. A model name matches only exactly, through an explicit
//! alias, or once a date suffix (`-2024-08-06`, `-20241022`, `@20241022`) is removed: never through a
//! look-alike prefix (`o1-pro` is not `o1`).

mod bounds;
mod catalog;
pub mod manage;
pub mod reprice;
pub mod store;

pub use bounds::{bound_usage, BoundedUsage, ReportedTokens, ABSOLUTE_TOKEN_BOUND};
pub use catalog::{
    litellm_to_catalog, parse_catalog, per_token_to_per_million, Catalog, CatalogEntry, CatalogFormat, Dec,
    LiteLlmReport, TierEntry, CATALOG_FORMAT,
};

use crate::event::{CallEvent, UsageSource};
use crate::money::{format_usd, parse_usd_to_nano, MoneyError};
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// When the built-in prices were read (from the providers' price pages, as collected in LiteLLM's
/// `model_prices_and_context_window.json` of release 1.110.2). `tollgate serve` warns when this is more
/// than [`BUILTIN_MAX_AGE_DAYS`] old and no newer catalog was imported.
pub const BUILTIN_PRICES_READ_ON: &str = "2026-11-30";
/// Age after which the built-in table is called stale at start-up.
pub const BUILTIN_MAX_AGE_DAYS: i64 = 90;
/// `price_id` of an event whose model has no price (and whose route has no fallback price).
pub const UNPRICED: &str = "unpriced";
/// Stored cost of a call whose exact cost does not fit in a u64 (an absurd rate): $1,000,000, so that
/// sums over such events stay representable. The event is marked `capped`.
pub const MAX_CALL_COST_NANOUSD: u64 = 1_000_000_000_000_000;

const BUILTIN_JSON: &str = include_str!("builtin.json");

/// The provider's service tier a call ran on. Each may have its own rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum ServiceTier {
    #[default]
    Standard,
    Batch,
    Flex,
    Priority,
}

impl ServiceTier {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceTier::Standard => "standard",
            ServiceTier::Batch => "batch",
            ServiceTier::Flex => "flex",
            ServiceTier::Priority => "priority",
        }
    }

    /// Reads a tier as providers and clients spell it: OpenAI `default`/`auto`/`flex`/`priority`/`scale`,
    /// Anthropic `standard`/`priority`/`batch`. Unknown names are the standard tier.
    /// Case-insensitive without lowering a copy: streams repeat the tier in every chunk.
    pub fn parse(s: &str) -> ServiceTier {
        let s = s.trim();
        let is = |name: &str| s.eq_ignore_ascii_case(name);
        if is("batch") || is("batches") {
            ServiceTier::Batch
        } else if is("flex") {
            ServiceTier::Flex
        } else if is("priority") || is("scale") {
            ServiceTier::Priority
        } else {
            ServiceTier::Standard
        }
    }

    fn from_catalog_key(s: &str) -> Option<ServiceTier> {
        match s {
            "batch" => Some(ServiceTier::Batch),
            "flex" => Some(ServiceTier::Flex),
            "priority" => Some(ServiceTier::Priority),
            _ => None,
        }
    }
}

/// Token counts of one call, normalised: `input` includes `cached_input` and `cache_write`; `output`
/// includes `reasoning`; `cache_write_1h` is the part of `cache_write` written with a 1-hour lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
    pub cache_write: u64,
    pub cache_write_1h: u64,
    pub reasoning: u64,
    pub service_tier: ServiceTier,
}

impl Usage {
    pub fn is_zero(&self) -> bool {
        self.input == 0 && self.output == 0
    }
}

/// Rates of each token kind, nano-USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rates {
    pub input: u64,
    pub cached_input: u64,
    /// Cache writes with the default (5-minute) lifetime.
    pub cache_write: u64,
    /// Cache writes with a 1-hour lifetime.
    pub cache_write_1h: u64,
    pub output: u64,
    pub reasoning: u64,
}

/// Rates of one service tier: base rates and, above input-token thresholds, long-context rates that
/// apply to the whole call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RateCard {
    pub base: Rates,
    /// `(threshold, rates)`, ascending: a call whose input exceeds `threshold` tokens is priced at `rates`.
    pub above: Vec<(u64, Rates)>,
}

impl RateCard {
    fn rates_for(&self, input_tokens: u64) -> &Rates {
        self.above.iter().rev().find(|(t, _)| input_tokens > *t).map(|(_, r)| r).unwrap_or(&self.base)
    }
}

/// Where a price came from; a stronger source wins over a weaker one for the times it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PriceSource {
    Builtin,
    Catalog,
    Config,
}

impl PriceSource {
    pub fn as_str(self) -> &'static str {
        match self {
            PriceSource::Builtin => "builtin",
            PriceSource::Catalog => "catalog",
            PriceSource::Config => "config",
        }
    }
}

/// One version of one model's price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPrice {
    pub model: String,
    /// `model@version`, recorded in each event this price priced (with `#tier` for a non-standard
    /// service tier).
    pub price_id: String,
    pub source: PriceSource,
    /// Microseconds since the epoch from which this version applies (0: always).
    pub effective_from_us: i64,
    pub standard: RateCard,
    pub service_tiers: BTreeMap<ServiceTier, RateCard>,
    pub max_input_tokens: Option<u64>,
    pub max_output_tokens: Option<u64>,
}

/// A model's context window and largest output, from the catalog (for context-window admission).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ModelLimits {
    pub max_input_tokens: Option<u64>,
    pub max_output_tokens: Option<u64>,
}

/// The cost of one call and what priced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cost {
    pub nanousd: u64,
    /// The entry's id, with `#tier` when a non-standard service tier's rates were used.
    pub price_id: crate::Text,
    /// The exact cost did not fit in a u64 (it is then `u64::MAX`).
    pub overflowed: bool,
}

impl ModelPrice {
    /// The rate card for a service tier (the standard card when the tier has no rates of its own).
    pub fn card(&self, tier: ServiceTier) -> (&RateCard, bool) {
        match self.service_tiers.get(&tier) {
            Some(c) if tier != ServiceTier::Standard => (c, true),
            _ => (&self.standard, false),
        }
    }

    /// Cost of `usage` in nano-USD: exact integer arithmetic, one rounding (half up) at the end. Saturates
    /// at `u64::MAX` (see [`ModelPrice::cost`] to learn that it did).
    pub fn cost_nanousd(&self, u: &Usage) -> u64 {
        self.cost(u).nanousd
    }

    pub fn cost(&self, u: &Usage) -> Cost {
        let (card, tiered) = self.card(u.service_tier);
        let r = card.rates_for(u.input);
        let cached = u.cached_input.min(u.input);
        let write = u.cache_write.min(u.input - cached);
        let write_1h = u.cache_write_1h.min(write);
        let write_5m = write - write_1h;
        let plain_in = u.input - cached - write;
        let reasoning = u.reasoning.min(u.output);
        let plain_out = u.output - reasoning;
        let terms = [
            (plain_in, r.input),
            (cached, r.cached_input),
            (write_5m, r.cache_write),
            (write_1h, r.cache_write_1h),
            (plain_out, r.output),
            (reasoning, r.reasoning),
        ];
        // Each term is below 2^128 (u64 x u64); six of them can still overflow, so add with checks.
        let sum = terms.iter().try_fold(0u128, |acc, (n, rate)| acc.checked_add(u128::from(*n) * u128::from(*rate)));
        let nanos = sum.map(|s| s / 1_000_000 + u128::from(s % 1_000_000 >= 500_000));
        let (nanousd, overflowed) = match nanos.and_then(|n| u64::try_from(n).ok()) {
            Some(n) => (n, false),
            None => (u64::MAX, true),
        };
        let price_id = if tiered {
            format!("{}#{}", self.price_id, u.service_tier.as_str()).into()
        } else {
            self.price_id.as_str().into()
        };
        Cost { nanousd, price_id, overflowed }
    }

    pub fn limits(&self) -> ModelLimits {
        ModelLimits { max_input_tokens: self.max_input_tokens, max_output_tokens: self.max_output_tokens }
    }
}

/// A price written in config, as decimal USD per million tokens.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PriceSpec {
    pub input: String,
    pub output: String,
    /// Defaults to `input` when absent.
    pub cached_input: Option<String>,
    /// Defaults to `input` when absent.
    pub cache_write: Option<String>,
    /// Defaults to `cache_write` when absent.
    pub cache_write_1h: Option<String>,
    /// Defaults to `output` when absent (OpenAI bills reasoning as output).
    pub reasoning: Option<String>,
    /// RFC 3339 time or `YYYY-MM-DD` (UTC midnight) from which this price applies; absent: always.
    pub effective_from: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PriceError {
    #[error("prices.\"{model}\".{field}: {source}")]
    Money { model: String, field: &'static str, source: MoneyError },
    #[error("prices.\"{model}\".effective_from: `{value}` is not an RFC 3339 time or a YYYY-MM-DD date")]
    Time { model: String, value: String },
    #[error("price catalog: {0}")]
    Catalog(String),
}

/// How a model name found its price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    Exact,
    Alias,
    DateSuffix,
    ProviderPrefix,
    /// Not found: priced with the route's configured fallback model.
    RouteFallback,
}

impl MatchKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchKind::Exact => "exact",
            MatchKind::Alias => "alias",
            MatchKind::DateSuffix => "date suffix",
            MatchKind::ProviderPrefix => "provider prefix",
            MatchKind::RouteFallback => "route fallback",
        }
    }
}

/// Model name → versions of its price, plus explicit aliases and per-route fallback prices.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    models: HashMap<String, Vec<ModelPrice>>,
    aliases: HashMap<String, String>,
    /// upstream name → the model whose price covers served models that match nothing.
    route_fallbacks: HashMap<String, String>,
    /// The newest `read_on` date of the imported catalogs, `YYYY-MM-DD`.
    catalog_read_on: Option<String>,
}

/// Provider prefixes that name where a model runs, not a different model (`openai/gpt-4o`).
const PROVIDER_PREFIXES: &[&str] = &["openai/", "anthropic/", "azure/"];

impl PriceTable {
    /// The built-in table, parsed from the catalog compiled into the binary (checked by the unit tests).
    pub fn builtin() -> PriceTable {
        let mut t = PriceTable::default();
        if let Ok(c) = parse_catalog(BUILTIN_JSON, CatalogFormat::Tollgate) {
            // The version of a built-in price is the day the table was read.
            let _ = t.merge_catalog(&c, PriceSource::Builtin);
        }
        t
    }

    /// The built-in catalog as a file (for `tollgate prices show --builtin` and tests).
    pub fn builtin_catalog_text() -> &'static str {
        BUILTIN_JSON
    }

    /// Adds every entry of a catalog as versions from `source`.
    pub fn merge_catalog(&mut self, c: &Catalog, source: PriceSource) -> Result<usize, PriceError> {
        let mut n = 0;
        for (model, entries) in &c.models {
            for e in entries {
                let p = e.to_price(model, source, c.read_on.as_deref())?;
                self.insert(p);
                n += 1;
            }
        }
        for (alias, target) in &c.aliases {
            self.aliases.insert(alias.clone(), target.clone());
        }
        if source == PriceSource::Catalog {
            if let Some(r) = &c.read_on {
                if self.catalog_read_on.as_ref().is_none_or(|old| r > old) {
                    self.catalog_read_on = Some(r.clone());
                }
            }
        }
        Ok(n)
    }

    fn insert(&mut self, p: ModelPrice) {
        let versions = self.models.entry(p.model.clone()).or_default();
        versions.retain(|v| !(v.source == p.source && v.effective_from_us == p.effective_from_us));
        versions.push(p);
        versions.sort_by_key(|v| (v.source, v.effective_from_us));
    }

    /// Adds a config price. Its version is `config-<hash of its rates>` so that a changed price gets a new
    /// `price_id` (`model@config-1a2b3c4d`).
    pub fn set(&mut self, model: &str, spec: &PriceSpec, version: &str) -> Result<(), PriceError> {
        let p = ModelPrice::from_spec(model, spec, version)?;
        self.insert(p);
        Ok(())
    }

    /// Adds an explicit alias: `alias` is priced as `target`.
    pub fn add_alias(&mut self, alias: &str, target: &str) {
        self.aliases.insert(alias.to_string(), target.to_string());
    }

    /// Served models of `upstream` that match no price are priced as `model`.
    pub fn set_route_fallback(&mut self, upstream: &str, model: &str) {
        self.route_fallbacks.insert(upstream.to_string(), model.to_string());
    }

    /// The version of `model` (exact name) that applies at `at_us`.
    fn version_at(&self, model: &str, at_us: i64) -> Option<&ModelPrice> {
        let versions = self.models.get(model)?;
        // Sorted by (source, effective_from): the last effective one is the strongest source's latest.
        versions.iter().rev().find(|v| v.effective_from_us <= at_us)
    }

    /// The price of `model` at `at_us`, matching exactly, through an alias, a provider prefix or a date
    /// suffix; never through a look-alike name.
    pub fn lookup(&self, model: &str, at_us: i64) -> Option<(&ModelPrice, MatchKind)> {
        let direct = |name: &str| -> Option<(&ModelPrice, bool)> {
            if let Some(p) = self.version_at(name, at_us) {
                return Some((p, false));
            }
            let target = self.aliases.get(name)?;
            self.version_at(target, at_us).map(|p| (p, true))
        };
        if let Some((p, alias)) = direct(model) {
            return Some((p, if alias { MatchKind::Alias } else { MatchKind::Exact }));
        }
        let unprefixed = PROVIDER_PREFIXES.iter().find_map(|pre| model.strip_prefix(pre));
        if let Some(rest) = unprefixed {
            if let Some((p, _)) = direct(rest) {
                return Some((p, MatchKind::ProviderPrefix));
            }
        }
        let name = unprefixed.unwrap_or(model);
        let base = strip_date_suffix(name)?;
        direct(base).map(|(p, _)| (p, MatchKind::DateSuffix))
    }

    /// The price that applies now (used to check config and to estimate before a call).
    pub fn get(&self, model: &str) -> Option<&ModelPrice> {
        self.lookup(model, i64::MAX).map(|(p, _)| p)
    }

    /// The price of a call: its served model (or the requested one when the provider named none) at
    /// `at_us`, else the route's fallback price, else none (the caller records it as unpriced).
    pub fn resolve(
        &self,
        served: &str,
        requested: &str,
        upstream: &str,
        at_us: i64,
    ) -> Option<(&ModelPrice, MatchKind)> {
        let model = if served.is_empty() { requested } else { served };
        if let Some(found) = self.lookup(model, at_us) {
            return Some(found);
        }
        let fallback = self.route_fallbacks.get(upstream)?;
        self.lookup(fallback, at_us).map(|(p, _)| (p, MatchKind::RouteFallback))
    }

    /// The version a `price_id` names (without its `#tier` suffix), if the table still holds it.
    pub fn by_price_id(&self, price_id: &str) -> Option<&ModelPrice> {
        let id = price_id.split_once('#').map_or(price_id, |(id, _)| id);
        let (model, _) = id.rsplit_once('@')?;
        self.models.get(model)?.iter().find(|v| v.price_id == id)
    }

    /// The context window and largest output of `model`, as the catalog gives them (issue 12's admission).
    pub fn model_limits(&self, model: &str) -> Option<ModelLimits> {
        self.get(model).map(ModelPrice::limits)
    }

    /// Every model name with its versions, sorted by name (for `tollgate prices show`).
    pub fn models(&self) -> Vec<(&str, &[ModelPrice])> {
        let mut v: Vec<(&str, &[ModelPrice])> = self.models.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v
    }

    pub fn aliases(&self) -> &HashMap<String, String> {
        &self.aliases
    }

    /// Number of priced model names.
    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// [`PriceTable::staleness_warning`] for today (UTC).
    pub fn staleness_warning_today(&self) -> Option<String> {
        self.staleness_warning(chrono::Utc::now().date_naive())
    }

    /// A warning when the built-in table is older than [`BUILTIN_MAX_AGE_DAYS`] on `today` and no
    /// imported catalog is newer than that.
    pub fn staleness_warning(&self, today: chrono::NaiveDate) -> Option<String> {
        let newest = self.catalog_read_on.as_deref().filter(|c| *c > BUILTIN_PRICES_READ_ON);
        let read_on = newest.unwrap_or(BUILTIN_PRICES_READ_ON);
        let date = chrono::NaiveDate::parse_from_str(read_on, "%Y-%m-%d").ok()?;
        let age = (today - date).num_days();
        (age > BUILTIN_MAX_AGE_DAYS).then(|| {
            format!(
                "the newest price table was read on {read_on}, {age} days ago (more than {BUILTIN_MAX_AGE_DAYS}): \
                 import a current catalog with `tollgate prices import FILE`"
            )
        })
    }
}

/// What pricing did to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PricingResult {
    /// Some token count was capped (or the cost overflowed): `usage_source` is now `capped`.
    pub capped: bool,
    /// Tokens were used but no price matched and the route has no fallback: `price_id = "unpriced"`.
    pub unpriced: bool,
    /// How the price was found, when one was.
    pub matched: Option<MatchKind>,
}

impl PriceTable {
    /// Bounds the event's token counts and sets its `cost_nanousd` and `price_id` from the price that
    /// applies at its start time (see [`PriceTable::resolve`]). Used by metering and by re-pricing alike.
    pub fn price_event(&self, ev: &mut CallEvent, tier: ServiceTier, cache_write_1h: u64) -> PricingResult {
        let mut out = PricingResult::default();
        let found = self.resolve(&ev.served_model, &ev.requested_model, &ev.upstream, ev.ts_start_us);
        let b = bound_usage(
            ev.input_tokens,
            ev.output_tokens,
            ev.cached_input_tokens,
            ev.cache_write_tokens,
            ev.reasoning_tokens,
            found.map(|(p, _)| p.limits()),
        );
        if b.capped {
            (ev.input_tokens, ev.output_tokens, ev.cached_input_tokens, ev.cache_write_tokens, ev.reasoning_tokens) =
                (b.input, b.output, b.cached_input, b.cache_write, b.reasoning);
            ev.usage_source = UsageSource::Capped;
            out.capped = true;
        }
        let usage = Usage {
            input: ev.input_tokens,
            output: ev.output_tokens,
            cached_input: ev.cached_input_tokens,
            cache_write: ev.cache_write_tokens,
            cache_write_1h,
            reasoning: ev.reasoning_tokens,
            service_tier: tier,
        };
        if usage.is_zero() {
            ev.cost_nanousd = 0;
            ev.price_id.clear();
            return out;
        }
        match found {
            Some((p, how)) => {
                let c = p.cost(&usage);
                ev.cost_nanousd = c.nanousd;
                ev.price_id = c.price_id;
                out.matched = Some(how);
                if c.overflowed {
                    ev.cost_nanousd = MAX_CALL_COST_NANOUSD;
                    ev.usage_source = UsageSource::Capped;
                    out.capped = true;
                }
            }
            None => {
                ev.cost_nanousd = 0;
                ev.price_id = UNPRICED.into();
                out.unpriced = true;
            }
        }
        out
    }
}

/// The service tier recorded in a `price_id` (`model@version#priority`), for re-pricing.
pub fn tier_of_price_id(price_id: &str) -> ServiceTier {
    price_id.rsplit_once('#').map(|(_, t)| ServiceTier::parse(t)).unwrap_or_default()
}

/// The price table in force, replaceable while running (SIGHUP, `/admin/reload`); readers keep the
/// table they took for as long as they use it, so one call is priced by one table.
#[derive(Debug, Default)]
pub struct PriceBook(std::sync::RwLock<std::sync::Arc<PriceTable>>);

impl PriceBook {
    pub fn new(t: PriceTable) -> PriceBook {
        PriceBook(std::sync::RwLock::new(std::sync::Arc::new(t)))
    }

    pub fn current(&self) -> std::sync::Arc<PriceTable> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn replace(&self, t: PriceTable) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(t);
    }
}

/// `gpt-4o-2024-08-06` → `gpt-4o`, `claude-3-5-haiku-20241022` → `claude-3-5-haiku`,
/// `claude-3-5-sonnet@20240620` → `claude-3-5-sonnet`; `None` when the name ends in no date.
pub fn strip_date_suffix(model: &str) -> Option<&str> {
    let valid = |y: &str, m: &str, d: &str| {
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if !(all_digits(y) && all_digits(m) && all_digits(d) && y.starts_with("20")) {
            return false;
        }
        let (m, d): (u32, u32) = (m.parse().unwrap_or(0), d.parse().unwrap_or(0));
        (1..=12).contains(&m) && (1..=31).contains(&d)
    };
    // -YYYY-MM-DD
    if model.len() > 11 && model.is_char_boundary(model.len() - 11) {
        let (base, tail) = model.split_at(model.len() - 11);
        let b = tail.as_bytes();
        if tail.is_ascii()
            && b[0] == b'-'
            && b[5] == b'-'
            && b[8] == b'-'
            && valid(&tail[1..5], &tail[6..8], &tail[9..11])
        {
            return Some(base);
        }
    }
    // -YYYYMMDD or @YYYYMMDD
    if model.len() > 9 && model.is_char_boundary(model.len() - 9) {
        let (base, tail) = model.split_at(model.len() - 9);
        if tail.is_ascii()
            && (tail.starts_with('-') || tail.starts_with('@'))
            && valid(&tail[1..5], &tail[5..7], &tail[7..9])
        {
            return Some(base);
        }
    }
    None
}

/// `2026-12-01` (UTC midnight) or an RFC 3339 time → microseconds since the epoch.
pub fn parse_effective_from(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_micros());
    }
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros())
}

/// Renders nano-USD per million tokens as decimal USD per million tokens, without trailing zeros.
pub fn usd_per_m(nanos: u64) -> String {
    let s = format_usd(nanos);
    let s = s.trim_end_matches('0');
    s.strip_suffix('.').unwrap_or(s).to_string()
}

impl ModelPrice {
    fn from_spec(model: &str, s: &PriceSpec, version: &str) -> Result<ModelPrice, PriceError> {
        let parse = |field: &'static str, v: &str| {
            parse_usd_to_nano(v).map_err(|source| PriceError::Money { model: model.to_string(), field, source })
        };
        let input = parse("input", &s.input)?;
        let output = parse("output", &s.output)?;
        let opt = |field: &'static str, v: &Option<String>| v.as_deref().map(|v| parse(field, v)).transpose();
        let cache_write = opt("cache_write", &s.cache_write)?.unwrap_or(input);
        let base = Rates {
            input,
            output,
            cached_input: opt("cached_input", &s.cached_input)?.unwrap_or(input),
            cache_write,
            cache_write_1h: opt("cache_write_1h", &s.cache_write_1h)?.unwrap_or(cache_write),
            reasoning: opt("reasoning", &s.reasoning)?.unwrap_or(output),
        };
        let effective_from_us = match &s.effective_from {
            Some(v) => parse_effective_from(v)
                .ok_or_else(|| PriceError::Time { model: model.to_string(), value: v.clone() })?,
            None => 0,
        };
        let version = if version == "config" {
            format!("config-{}", rates_hash(&base, effective_from_us))
        } else {
            version.to_string()
        };
        Ok(ModelPrice {
            model: model.to_string(),
            price_id: format!("{model}@{version}"),
            source: PriceSource::Config,
            effective_from_us,
            standard: RateCard { base, above: Vec::new() },
            service_tiers: BTreeMap::new(),
            max_input_tokens: None,
            max_output_tokens: None,
        })
    }
}

/// FNV-1a over the rates and start time: a short, stable version for config prices.
fn rates_hash(r: &Rates, from_us: i64) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let words = [r.input, r.cached_input, r.cache_write, r.cache_write_1h, r.output, r.reasoning, from_us as u64];
    for w in words {
        for b in w.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{:08x}", h >> 32)
}

impl fmt::Display for Rates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "in {} cached {} write {} write_1h {} out {} reasoning {}",
            usd_per_m(self.input),
            usd_per_m(self.cached_input),
            usd_per_m(self.cache_write),
            usd_per_m(self.cache_write_1h),
            usd_per_m(self.output),
            usd_per_m(self.reasoning)
        )
    }
}

#[cfg(test)]
mod tests;
