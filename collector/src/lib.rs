//! The collector: takes finished call events from a bounded queue, batches them by rows and time, and
//! writes each batch to its sinks. Today the sink is Parquet (the embedded default); the queue's sender
//! blocks when full, which pushes back on the gateway's metering task and never on a client.

pub mod config;
pub mod parquet;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tollgate_events::CallEvent;
use tracing::{error, info};

pub use config::CollectorConfig;
pub use parquet::{ParquetSink, ParquetSinkConfig, PendingBatch, SealedBatch};

#[derive(Default)]
pub struct CollectorMetrics {
    pub events_written: AtomicU64,
    pub batches_written: AtomicU64,
    pub write_errors: AtomicU64,
    pub last_flush_unix_ms: AtomicU64,
}

impl CollectorMetrics {
    pub fn render(&self, out: &mut String, queue_depth: usize) {
        use std::fmt::Write;
        let rows: [(&str, &str, &str, u64); 5] = [
            (
                "tollgate_collector_events_written_total",
                "counter",
                "Call events written to the Parquet sink.",
                self.events_written.load(Ordering::Relaxed),
            ),
            (
                "tollgate_collector_batches_written_total",
                "counter",
                "Batches written to the Parquet sink.",
                self.batches_written.load(Ordering::Relaxed),
            ),
            (
                "tollgate_collector_write_errors_total",
                "counter",
                "Failed batch writes (retried).",
                self.write_errors.load(Ordering::Relaxed),
            ),
            (
                "tollgate_collector_last_flush_unix_ms",
                "gauge",
                "When the last batch was written.",
                self.last_flush_unix_ms.load(Ordering::Relaxed),
            ),
            (
                "tollgate_collector_queue_batches",
                "gauge",
                "Batches (of up to 1024 events) waiting in the collector's queue.",
                queue_depth as u64,
            ),
        ];
        for (name, kind, help, v) in rows {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        }
    }
}

/// Events travel from metering to the collector in batches of at most this many.
pub const MAX_BATCH: usize = 1024;

/// Channel capacity, in batches, for a queue of `events` events.
pub fn queue_batches(events: usize) -> usize {
    events.div_ceil(MAX_BATCH).max(1)
}

/// Runs until the sender side closes, then flushes what is left and returns. Each event is appended to
/// column builders as it arrives, so a pending batch holds compact columns, not event structs.
pub async fn run_collector(
    mut rx: mpsc::Receiver<Vec<CallEvent>>,
    mut sink: ParquetSink,
    cfg: CollectorConfig,
    metrics: Arc<CollectorMetrics>,
) {
    let mut pending = PendingBatch::default();
    let mut tick = tokio::time::interval(Duration::from_millis(cfg.flush_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            batch = rx.recv() => match batch {
                Some(events) => {
                    for ev in &events {
                        sink.append(&mut pending, ev);
                    }
                    if pending.len() >= cfg.batch_max_rows as u64 {
                        flush(&mut sink, &mut pending, &metrics).await;
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                if !pending.is_empty() {
                    flush(&mut sink, &mut pending, &metrics).await;
                }
            }
        }
    }
    if !pending.is_empty() {
        flush(&mut sink, &mut pending, &metrics).await;
    }
    info!(sink = "parquet", "collector drained and stopped");
}

/// Writes the batch, retrying with backoff until it lands: events are never dropped. While it retries,
/// the queue fills and the metering task waits (its own queue then spills to disk).
async fn flush(sink: &mut ParquetSink, pending: &mut PendingBatch, metrics: &CollectorMetrics) {
    let sealed = match sink.seal(pending) {
        Ok(s) => s,
        Err(error) => {
            // Only a schema bug can get here; nothing to retry.
            metrics.write_errors.fetch_add(1, Ordering::Relaxed);
            error!(sink = "parquet", %error, "could not build the batch; events lost");
            return;
        }
    };
    let rows = sealed.rows();
    let mut backoff = Duration::from_millis(100);
    loop {
        match sink.write(sealed.clone()).await {
            Ok(()) => {
                metrics.events_written.fetch_add(rows, Ordering::Relaxed);
                metrics.batches_written.fetch_add(1, Ordering::Relaxed);
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                metrics.last_flush_unix_ms.store(now, Ordering::Relaxed);
                return;
            }
            Err(error) => {
                metrics.write_errors.fetch_add(1, Ordering::Relaxed);
                error!(sink = "parquet", %error, rows, retry_in_ms = backoff.as_millis() as u64, "batch write failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}
