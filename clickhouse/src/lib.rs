//! ClickHouse as the fleet store: the schema migrations, the collector's sink (RowBinary inserts that
//! land once even when sent twice), and the client settings the query service shares.
//!
//! Everything here runs on ClickHouse 18.16 (the Debian package) and on current releases; see
//! `migrations/0001_calls.sql` for what that rules out.

pub mod config;
pub mod error;
pub mod migrate;
pub mod reprice;
pub mod rowbinary;
pub mod sink;

pub use config::ClickHouseConfig;
pub use error::ChError;
pub use migrate::{migrate, MigrateError, MIGRATIONS};
pub use sink::{ClickHouseSink, ClickHouseSinkMetrics};

use std::time::Duration;

/// Runs a statement that returns nothing, within `timeout`.
pub async fn run(q: clickhouse::query::Query, timeout: Duration) -> Result<(), ChError> {
    match tokio::time::timeout(timeout, q.execute()).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(ChError::Unavailable(format!("no answer within {} ms", timeout.as_millis()))),
    }
}

/// Runs a query and returns its rows as JSON arrays (`JSONCompact`, 64-bit integers as numbers, so
/// sums stay exact: serde_json keeps integers as u64).
pub async fn fetch_json(
    q: clickhouse::query::Query,
    timeout: Duration,
) -> Result<Vec<Vec<serde_json::Value>>, ChError> {
    let doc = fetch_doc(q, timeout).await?;
    let rows = doc.get("data").and_then(|d| d.as_array()).cloned().unwrap_or_default();
    Ok(rows.into_iter().map(|r| r.as_array().cloned().unwrap_or_default()).collect())
}

/// Runs a query and returns the whole `JSONCompact` document (`meta`, `data`, `rows`, …).
pub async fn fetch_doc(q: clickhouse::query::Query, timeout: Duration) -> Result<serde_json::Value, ChError> {
    let q = q.with_setting("output_format_json_quote_64bit_integers", "0");
    let work = async move {
        let mut cursor = q.fetch_bytes("JSONCompact")?;
        cursor.collect().await
    };
    let bytes = match tokio::time::timeout(timeout, work).await {
        Ok(r) => r?,
        Err(_) => return Err(ChError::Unavailable(format!("no answer within {} ms", timeout.as_millis()))),
    };
    serde_json::from_slice(&bytes).map_err(|e| ChError::Unavailable(format!("unreadable answer: {e}")))
}
