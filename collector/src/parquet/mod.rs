//! The Parquet sink: hive-partitioned files under `<dir>/calls/date=YYYY-MM-DD/`.

pub mod compact;
mod config;
mod sink;

pub use compact::{
    committed_offset, compact_day, compact_days, cutoff_date, merge_open_days, run_compaction, CallsLock,
    CompactionConfig, DayCompacted, SUMMARY_FILE,
};
pub use config::ParquetSinkConfig;
pub use sink::{ParquetSink, PendingBatch, SealedBatch, SinkError};
