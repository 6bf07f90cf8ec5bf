//! Collector settings as written in `[collector]`.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    /// Capacity, in events (rounded up to whole batches of 1024), of the queue from the gateway's metering
    /// task. When full, the metering task waits (and the gateway's own queue spills to disk); clients are
    /// never blocked.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// A batch is written when it holds this many events…
    #[serde(default = "default_batch_max_rows")]
    pub batch_max_rows: usize,
    /// …or when this much time has passed since the last write, whichever comes first.
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// Where events go: `parquet` (files under the data dir), `clickhouse` (the `[clickhouse]` server), or
    /// both; each sink batches, retries and acknowledges on its own.
    #[serde(default = "default_sinks")]
    pub sinks: Vec<SinkKind>,
    /// The write-ahead log rolls to a new segment file at this size.
    #[serde(default = "default_wal_segment_bytes")]
    pub wal_segment_bytes: u64,
    /// Most bytes the write-ahead log may hold (0 = no cap). At the cap, new batches are refused: an
    /// in-process gateway waits (its own queue spills to disk), remote gateways get 503 and spool locally.
    #[serde(default = "default_wal_max_bytes")]
    pub wal_max_bytes: u64,
    /// How many of the most recent events the write-ahead log remembers by `event_id`: an event sent
    /// again (a gateway replaying its spill file after a crash) is left out instead of stored twice.
    /// About 40 bytes of memory per event; 0 turns it off. The live events of an in-process gateway (`serve`)
    /// are new by construction and not remembered; its replayed spill file is.
    #[serde(default = "default_dedup_window_events")]
    pub dedup_window_events: usize,
    /// `tollgate collector`: address of the ingest endpoint.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// `tollgate collector`: environment variable holding the token gateways must present.
    #[serde(default)]
    pub ingest_token_env: Option<String>,
}

fn default_wal_segment_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_wal_max_bytes() -> u64 {
    8 * 1024 * 1024 * 1024
}
fn default_dedup_window_events() -> usize {
    crate::wal::DEFAULT_DEDUP_WINDOW
}
fn default_listen() -> String {
    "127.0.0.1:8090".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    Parquet,
    Clickhouse,
}

fn default_sinks() -> Vec<SinkKind> {
    vec![SinkKind::Parquet]
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            queue_capacity: default_queue_capacity(),
            batch_max_rows: default_batch_max_rows(),
            flush_interval_ms: default_flush_interval_ms(),
            sinks: default_sinks(),
            wal_segment_bytes: default_wal_segment_bytes(),
            wal_max_bytes: default_wal_max_bytes(),
            dedup_window_events: default_dedup_window_events(),
            listen: default_listen(),
            ingest_token_env: None,
        }
    }
}

impl CollectorConfig {
    /// Pure checks; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.queue_capacity == 0 {
            return Err("collector.queue_capacity: must be greater than 0".into());
        }
        if self.batch_max_rows == 0 {
            return Err("collector.batch_max_rows: must be greater than 0".into());
        }
        if self.sinks.is_empty() {
            return Err("collector.sinks: name at least one of parquet, clickhouse".into());
        }
        if self.flush_interval_ms == 0 {
            return Err("collector.flush_interval_ms: must be greater than 0".into());
        }
        Ok(())
    }
}

fn default_queue_capacity() -> usize {
    16_384
}
/// Rows held in the Parquet writer's builders before a file is written. The builders and the file's encoding
/// take memory in proportion to it: at 100,000 a busy `serve` (18k calls/s) held a whole second of calls,
/// and its resident memory jumped by 30-55 MiB at flushes; at 4,096 it stayed under 53 MiB at the same CPU
/// per call (bench/RESULTS.md, tenth round). Quiet gateways still write once per `flush_interval_ms`.
fn default_batch_max_rows() -> usize {
    DEFAULT_BATCH_MAX_ROWS
}

/// The default of `collector.batch_max_rows` (see `default_batch_max_rows`): also what an open day's merge
/// copies without decoding, by default (`parquet::CompactionConfig::copy_row_group_rows`).
pub const DEFAULT_BATCH_MAX_ROWS: usize = 4_096;
fn default_flush_interval_ms() -> u64 {
    1_000
}
