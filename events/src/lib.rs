//! The call event: the single source of truth for what one request through tollgate was, what it used
//! and what it cost. Every other crate reads and writes this schema; none keeps a private copy of it.

mod arrow_schema;
mod bpe;
mod event;
mod money;
pub mod prices;
pub mod prom;
mod rollup;
mod tokens;
mod unit_price;
mod wire;

pub use arrow_schema::{call_event_schema, to_record_batch, CallEventBatchBuilder};
pub use event::{
    date_of_day, event_from_json, positional_seq, CallEvent, ClientApi, EitherForm, Endpoint, EventBatch, Outcome,
    Positional, Text, UsageSource, CALL_EVENT_FIELDS, SCHEMA_VERSION,
};
pub use money::{format_usd, parse_usd_to_nano, write_usd, MoneyError};
pub use prices::{
    bound_usage, litellm_to_catalog, parse_catalog, parse_effective_from, strip_date_suffix, tier_of_price_id,
    usd_per_m, BoundedUsage, Catalog, CatalogEntry, CatalogFormat, Cost, LiteLlmReport, MatchKind, ModelLimits,
    ModelPrice, PriceBook, PriceError, PriceSource, PriceSpec, PriceTable, PricingResult, RateCard, Rates,
    ReportedTokens, ServiceTier, Usage, ABSOLUTE_TOKEN_BOUND, BUILTIN_MAX_AGE_DAYS, BUILTIN_PRICES_READ_ON,
    CATALOG_FORMAT, UNPRICED,
};
pub use rollup::{latency_bucket, latency_bucket_value, rollup_schema, ROLLUP_DIMENSIONS, ROLLUP_SUMS};
pub use tokens::{Tally, TokenEstimator};
pub use unit_price::{
    wav_duration_ms, UnitCost, UnitPrice, UnitPriceError, UnitPriceSpec, UnitPriceTable, UnitUsage,
    BUILTIN_UNIT_PRICES_READ_ON,
};
pub use wire::{parse_wire_event, WireEventError};
