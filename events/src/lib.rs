//! The call event: the single source of truth for what one request through tollgate was, what it used
//! and what it cost. Every other crate reads and writes this schema; none keeps a private copy of it.

mod arrow_schema;
mod event;
mod money;
mod price;
pub mod prom;
mod tokens;
mod unit_price;

pub use arrow_schema::{call_event_schema, to_record_batch, CallEventBatchBuilder};
pub use event::{date_of_day, CallEvent, ClientApi, Endpoint, Outcome, UsageSource, SCHEMA_VERSION};
pub use money::{format_usd, parse_usd_to_nano, MoneyError};
pub use price::{ModelPrice, PriceError, PriceSpec, PriceTable, Usage, BUILTIN_PRICES_READ_ON};
pub use tokens::TokenEstimator;
pub use unit_price::{
    wav_duration_ms, UnitCost, UnitPrice, UnitPriceError, UnitPriceSpec, UnitPriceTable, UnitUsage,
    BUILTIN_UNIT_PRICES_READ_ON,
};
