//! The collector: takes finished call events from a bounded queue, batches them by rows and time, and
//! writes each batch to its sinks: Parquet (the embedded default) and/or ClickHouse. The queue's sender
//! blocks when full, which pushes back on the gateway's metering task and never on a client.

pub mod config;
pub mod parquet;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tollgate_clickhouse::sink::PendingRows;
pub use tollgate_clickhouse::ClickHouseSink;
use tollgate_events::CallEvent;
use tracing::{error, info, warn};

pub use config::{CollectorConfig, SinkKind};
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

/// The sinks a collector writes to; each runs in its own task with its own queue and acknowledges on its
/// own, so a batch is retried only against the sink that failed it.
#[derive(Default)]
pub struct Sinks {
    pub parquet: Option<ParquetSink>,
    pub clickhouse: Option<ClickHouseSink>,
}

/// Runs until the sender side closes, then lets every sink flush what it holds and returns.
pub async fn run_collector(
    mut rx: mpsc::Receiver<Vec<CallEvent>>,
    sinks: Sinks,
    cfg: CollectorConfig,
    metrics: Arc<CollectorMetrics>,
) {
    let mut outs = Vec::new();
    let mut tasks = Vec::new();
    let capacity = queue_batches(cfg.queue_capacity);
    if let Some(sink) = sinks.parquet {
        let (tx, rx) = mpsc::channel(capacity);
        outs.push(tx);
        tasks.push(tokio::spawn(run_parquet(rx, sink, cfg.clone(), metrics.clone())));
    }
    if let Some(sink) = sinks.clickhouse {
        let (tx, rx) = mpsc::channel(capacity);
        outs.push(tx);
        tasks.push(tokio::spawn(run_clickhouse(rx, sink)));
    }
    while let Some(events) = rx.recv().await {
        let chunk = Arc::new(events);
        for tx in &outs {
            // A sink task only ends when its channel closes, so a send cannot fail here.
            let _ = tx.send(chunk.clone()).await;
        }
    }
    drop(outs);
    for t in tasks {
        let _ = t.await;
    }
}

/// Each event is appended to column builders as it arrives, so a pending batch holds compact columns,
/// not event structs.
async fn run_parquet(
    mut rx: mpsc::Receiver<Arc<Vec<CallEvent>>>,
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
                    for ev in events.iter() {
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

/// Batches by rows, bytes and time; lands each batch before taking the next (retrying transient
/// failures with backoff). At shutdown, a batch that cannot land within the retry window goes to the
/// dead-letter directory rather than being dropped.
async fn run_clickhouse(mut rx: mpsc::Receiver<Arc<Vec<CallEvent>>>, mut sink: ClickHouseSink) {
    let (max_rows, max_bytes, interval) = {
        let c = sink.config();
        (c.batch_max_rows as u64, c.batch_max_bytes, c.flush_interval_ms)
    };
    // Migrations first (the table must exist before the first insert). A server that is down or refuses
    // is retried with backoff while events wait in the queue; the error is logged with the server's words.
    let mut backoff = Duration::from_millis(200);
    while let Err(error) = tollgate_clickhouse::sink::migrate_on_start(sink.config()).await {
        error!(sink = "clickhouse", %error, retry_in_ms = backoff.as_millis() as u64, "clickhouse migrations failed");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
    let mut pending = PendingRows::default();
    let mut tick = tokio::time::interval(Duration::from_millis(interval));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            chunk = rx.recv() => match chunk {
                Some(chunk) => {
                    sink.append(&mut pending, &chunk);
                    if pending.len() >= max_rows || pending.bytes() >= max_bytes {
                        flush_clickhouse(&mut sink, &mut pending, false).await;
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                if !pending.is_empty() {
                    flush_clickhouse(&mut sink, &mut pending, false).await;
                }
            }
        }
    }
    if !pending.is_empty() {
        flush_clickhouse(&mut sink, &mut pending, true).await;
    }
    info!(sink = "clickhouse", "collector drained and stopped");
}

async fn flush_clickhouse(sink: &mut ClickHouseSink, pending: &mut PendingRows, shutting_down: bool) {
    let mut backoff = Duration::from_millis(100);
    let batches = loop {
        match sink.seal(pending) {
            Ok(b) => break b,
            Err(error) => {
                error!(sink = "clickhouse", %error, "cannot reserve batch ids on disk; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    };
    // At shutdown, give a down server this long before the batch goes to the dead-letter directory.
    let give_up = tokio::time::Instant::now() + Duration::from_millis(sink.config().insert_timeout_ms);
    for mut b in batches {
        let mut backoff = Duration::from_millis(100);
        loop {
            match sink.write(&mut b).await {
                Ok(_) => break,
                Err(error) => {
                    if shutting_down && tokio::time::Instant::now() >= give_up {
                        sink.dead_letter(&b, &format!("not delivered before shutdown: {error}"));
                        break;
                    }
                    warn!(sink = "clickhouse", batch_id = %b.batch_id, rows = b.rows, %error,
                        retry_in_ms = backoff.as_millis() as u64, "insert failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
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
