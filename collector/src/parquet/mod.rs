//! The Parquet sink: hive-partitioned files under `<dir>/calls/date=YYYY-MM-DD/`.

mod config;
mod sink;

pub use config::ParquetSinkConfig;
pub use sink::{ParquetSink, PendingBatch, SealedBatch};
