//! The daily rollup's shape, shared by the Parquet summaries the collector writes and the query service
//! that reads them (ClickHouse's `calls_daily` in `migrations/0161_calls_daily.sql` has the same columns),
//! and the latency bucket both engines compute.

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use std::sync::{Arc, OnceLock};

/// Attribution, model, route and outcome: one rollup row per day and combination of these.
pub const ROLLUP_DIMENSIONS: &[&str] = &[
    "tenant",
    "department",
    "team",
    "project",
    "user",
    "api_key_id",
    "provider",
    "upstream",
    "requested_model",
    "served_model",
    "route",
    "endpoint",
    "outcome",
];

/// Summed per row (all UInt64).
pub const ROLLUP_SUMS: &[&str] = &[
    "attempts",
    "calls",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_nanousd",
    "saved_nanousd",
    "cache_hits",
    "ttft_calls",
];

/// Arrow schema of a Parquet day summary (`calls/date=…/summary.rollup`; the date is the partition).
/// Histograms are parallel lists: bucket (see [`latency_bucket`]) and how many values fell in it.
pub fn rollup_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let list =
                |n: &str, t: DataType| Field::new(n, DataType::List(Arc::new(Field::new("item", t, true))), false);
            let mut fields: Vec<Field> =
                ROLLUP_DIMENSIONS.iter().map(|n| Field::new(*n, DataType::Utf8, false)).collect();
            fields.extend(ROLLUP_SUMS.iter().map(|n| Field::new(*n, DataType::UInt64, false)));
            fields.push(list("latency_b", DataType::UInt16));
            fields.push(list("latency_n", DataType::UInt64));
            fields.push(list("ttft_b", DataType::UInt16));
            fields.push(list("ttft_n", DataType::UInt64));
            Arc::new(Schema::new(fields))
        })
        .clone()
}

/// Latency bucket: values below 256 are their own bucket; larger ones keep their 8 most significant bits
/// (a bucket spans at most 1/128 of its values), so the middle of a bucket is within 0.4% of every value
/// in it. Integer arithmetic only, written identically in ClickHouse and DataFusion SQL.
pub fn latency_bucket(v: u32) -> u16 {
    if v < 256 {
        return v as u16;
    }
    let shift = 31 - v.leading_zeros() - 7;
    (shift * 128 + (v >> shift)) as u16
}

/// The value a bucket stands for: the middle of the values it holds.
pub fn latency_bucket_value(b: u16) -> u32 {
    let b = u32::from(b);
    if b < 256 {
        return b;
    }
    let shift = b / 128 - 1;
    let m = b - shift * 128;
    let low = u64::from(m) << shift;
    let high = ((u64::from(m) + 1) << shift) - 1;
    (low + (high - low) / 2).min(u64::from(u32::MAX)) as u32
}
