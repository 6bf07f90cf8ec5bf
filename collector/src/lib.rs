//! The collector: appends every batch of call events to a write-ahead log (fsynced before it counts as
//! received), and runs one task per sink (Parquet, ClickHouse) that reads the log from its own cursor,
//! batches by rows and time, writes, and then moves its cursor. A segment of the log is deleted once every
//! sink is past it; after a crash each sink replays from its cursor, and the batch that was in flight is
//! rebuilt exactly (same offsets, so the same Parquet file names and ClickHouse batch ids).

pub mod config;
pub mod ingest;
pub mod parquet;
pub mod reprice;
pub mod wal;

use prometheus_client::encoding::DescriptorEncoder;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tollgate_clickhouse::sink::PendingRows;
pub use tollgate_clickhouse::ClickHouseSink;
use tollgate_events::prom::{self, Kind};
use tollgate_events::{CallEvent, EventBatch};
use tracing::{error, info, warn};

pub use config::{CollectorConfig, SinkKind};
pub use parquet::{ParquetSink, ParquetSinkConfig, PendingBatch, SealedBatch};
pub use wal::{Cursor, Ids, Wal, WalError};

#[derive(Debug, Default)]
pub struct CollectorMetrics {
    pub events_written: AtomicU64,
    pub batches_written: AtomicU64,
    pub write_errors: AtomicU64,
    pub last_flush_unix_ms: AtomicU64,
    /// The write-ahead log's end offset and size on disk.
    pub wal_end: AtomicU64,
    pub wal_bytes: AtomicU64,
    /// Appends refused because the log was at its cap.
    pub wal_full: AtomicU64,
    /// Events left out because the log already held their id.
    pub wal_duplicates: AtomicU64,
    /// Per sink: confirmed offset, and when it last had nothing left to write.
    pub parquet_committed: AtomicU64,
    pub parquet_caught_up_ms: AtomicU64,
    pub clickhouse_committed: AtomicU64,
    pub clickhouse_caught_up_ms: AtomicU64,
    pub clickhouse_enabled: std::sync::atomic::AtomicBool,
    pub parquet_enabled: std::sync::atomic::AtomicBool,
}

impl CollectorMetrics {
    /// Scrape-time values for the process's registry; `queue_depth` is the collector queue's length.
    pub fn encode_metrics(&self, e: &mut DescriptorEncoder, queue_depth: usize) -> std::fmt::Result {
        let v = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let rows: [(&str, Kind, &str, f64); 9] = [
            (
                "tollgate_collector_events_written",
                Kind::Counter,
                "Call events written to the Parquet sink.",
                v(&self.events_written),
            ),
            (
                "tollgate_collector_batches_written",
                Kind::Counter,
                "Batches written to the Parquet sink.",
                v(&self.batches_written),
            ),
            ("tollgate_collector_write_errors", Kind::Counter, "Failed batch writes (retried).", v(&self.write_errors)),
            (
                "tollgate_collector_last_flush_timestamp_seconds",
                Kind::Gauge,
                "When the last batch was written (Unix time).",
                v(&self.last_flush_unix_ms) / 1e3,
            ),
            (
                "tollgate_collector_queue_batches",
                Kind::Gauge,
                "Batches (of up to 1024 events) waiting in the collector's queue.",
                queue_depth as f64,
            ),
            ("tollgate_wal_end_offset", Kind::Gauge, "Events ever appended to the write-ahead log.", v(&self.wal_end)),
            ("tollgate_wal_bytes", Kind::Gauge, "Bytes of write-ahead log on disk.", v(&self.wal_bytes)),
            (
                "tollgate_wal_duplicate_events",
                Kind::Counter,
                "Events left out because the log already held their event_id (resent or replayed).",
                v(&self.wal_duplicates),
            ),
            (
                "tollgate_wal_full",
                Kind::Counter,
                "Batches refused because the write-ahead log was at its cap (senders keep them).",
                v(&self.wal_full),
            ),
        ];
        for (name, kind, help, value) in rows {
            prom::encode_scalar(e, name, help, kind, value)?;
        }
        let end = self.wal_end.load(Ordering::Relaxed);
        let now = now_ms();
        let sinks = [
            ("parquet", &self.parquet_enabled, &self.parquet_committed, &self.parquet_caught_up_ms),
            ("clickhouse", &self.clickhouse_enabled, &self.clickhouse_committed, &self.clickhouse_caught_up_ms),
        ];
        let on = || sinks.iter().filter(|s| s.1.load(Ordering::Relaxed));
        let lag = |committed: &AtomicU64| end.saturating_sub(committed.load(Ordering::Relaxed));
        prom::encode_family(
            e,
            "tollgate_sink_lag_events",
            "Events in the log a sink has not confirmed yet.",
            Kind::Gauge,
            on().map(|(name, _, c, _)| (vec![("sink", *name)], lag(c) as f64)),
        )?;
        prom::encode_family(
            e,
            "tollgate_sink_lag_seconds",
            "Seconds since a sink last had nothing left to write (0 when caught up).",
            Kind::Gauge,
            on().map(|(name, _, c, caught_up)| {
                let secs = if lag(c) == 0 {
                    0.0
                } else {
                    now.saturating_sub(caught_up.load(Ordering::Relaxed)) as f64 / 1000.0
                };
                (vec![("sink", *name)], secs)
            }),
        )
    }
}

/// Events travel from metering to the collector in batches of at most this many.
pub const MAX_BATCH: usize = 1024;

/// Channel capacity, in batches, for a queue of `events` events.
pub fn queue_batches(events: usize) -> usize {
    events.div_ceil(MAX_BATCH).max(1)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The sinks a collector writes to; each runs in its own task, reads the log from its own cursor and
/// acknowledges on its own.
#[derive(Default)]
pub struct Sinks {
    pub parquet: Option<ParquetSink>,
    pub clickhouse: Option<ClickHouseSink>,
}

/// The running collector: append to its log with [`Collector::append`]; [`Collector::close`] lets the
/// sinks write everything that is in the log and waits for them.
pub struct Collector {
    pub wal: Arc<Wal>,
    pub metrics: Arc<CollectorMetrics>,
    closing: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Collector {
    /// Opens the log under `<data_dir>/wal` and starts one task per sink.
    pub fn start(
        data_dir: &std::path::Path,
        sinks: Sinks,
        cfg: &CollectorConfig,
        metrics: Arc<CollectorMetrics>,
    ) -> Result<Collector, WalError> {
        let dir = data_dir.join("wal");
        let wal =
            Arc::new(Wal::open_with_dedup(&dir, cfg.wal_segment_bytes, cfg.wal_max_bytes, cfg.dedup_window_events)?);
        metrics.wal_end.store(wal.end(), Ordering::Relaxed);
        metrics.wal_bytes.store(wal.bytes(), Ordering::Relaxed);
        let (closing, _) = watch::channel(false);
        let mut tasks = Vec::new();
        let committed = Arc::new(Mutex::new(Vec::<(&'static str, u64)>::new()));
        let mut starts = Vec::new();
        if let Some(sink) = sinks.parquet {
            let cursor = Cursor::load(&dir, "parquet")?;
            metrics.parquet_enabled.store(true, Ordering::Relaxed);
            metrics.parquet_committed.store(cursor.committed, Ordering::Relaxed);
            starts.push(("parquet", cursor.committed));
            let ctx = SinkCtx::new(
                &wal,
                &metrics,
                &committed,
                &closing,
                "parquet",
                cfg.batch_max_rows,
                cfg.flush_interval_ms,
            );
            tasks.push(tokio::spawn(run_parquet(ctx, cursor, sink)));
        }
        if let Some(sink) = sinks.clickhouse {
            let cursor = Cursor::load(&dir, "clickhouse")?;
            metrics.clickhouse_enabled.store(true, Ordering::Relaxed);
            metrics.clickhouse_committed.store(cursor.committed, Ordering::Relaxed);
            starts.push(("clickhouse", cursor.committed));
            let (rows, interval) = (sink.config().batch_max_rows, sink.config().flush_interval_ms);
            let ctx = SinkCtx::new(&wal, &metrics, &committed, &closing, "clickhouse", rows, interval);
            tasks.push(tokio::spawn(run_clickhouse(ctx, cursor, sink)));
        }
        if let Ok(mut c) = committed.lock() {
            *c = starts;
        }
        Ok(Collector { wal, metrics, closing, tasks })
    }

    /// Appends a batch (fsynced) and returns its offset range, or `None` when the log already holds this
    /// source's batch (a resend after a lost acknowledgement). Fails when the log is at its cap: the caller
    /// keeps the events.
    pub async fn append(
        &self,
        events: Vec<CallEvent>,
        source: Option<(String, u64)>,
    ) -> Result<Option<(u64, u64)>, WalError> {
        self.append_shared(Arc::new(events), source, Ids::Check).await
    }

    /// As [`Collector::append`], for a caller that keeps the batch to try again (no copy of it), saying
    /// whether the events' ids are checked against the ones the log remembers.
    pub async fn append_shared(
        &self,
        events: Arc<Vec<CallEvent>>,
        source: Option<(String, u64)>,
        ids: Ids,
    ) -> Result<Option<(u64, u64)>, WalError> {
        let wal = self.wal.clone();
        let metrics = self.metrics.clone();
        let r = tokio::task::spawn_blocking(move || {
            wal.append_shared(&events, source.as_ref().map(|(g, s)| (g.as_str(), *s)), ids)
        })
        .await
        .map_err(|e| WalError::Corrupt(0, format!("append task: {e}")))?;
        match &r {
            Ok(_) => {
                metrics.wal_duplicates.store(self.wal.duplicates.load(Ordering::Relaxed), Ordering::Relaxed);
                metrics.wal_end.store(self.wal.end(), Ordering::Relaxed);
                metrics.wal_bytes.store(self.wal.bytes(), Ordering::Relaxed);
            }
            Err(WalError::Full { .. }) => {
                metrics.wal_full.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {}
        }
        r
    }

    /// Lets every sink write what is in the log, then waits for them.
    pub async fn close(self) {
        let _ = self.closing.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Feeds an in-process queue (the gateway's metering task in `serve`) into the log. A full log makes it
/// wait (and the metering queue spill to disk); clients are never blocked.
pub async fn run_intake(mut rx: mpsc::Receiver<EventBatch>, collector: Collector) {
    while let Some(batch) = rx.recv().await {
        // Live events are new; a replayed spill file may hold events a crashed replay already sent.
        let ids = if batch.replayed { Ids::Check } else { Ids::New };
        let events = Arc::new(batch.events);
        let mut backoff = Duration::from_millis(50);
        loop {
            match collector.append_shared(events.clone(), None, ids).await {
                Ok(_) => break,
                Err(error) => {
                    warn!(%error, retry_in_ms = backoff.as_millis() as u64, "cannot append to the write-ahead log");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
    collector.close().await;
    info!("collector drained and stopped");
}

/// What a sink task shares with the others.
struct SinkCtx {
    wal: Arc<Wal>,
    metrics: Arc<CollectorMetrics>,
    committed: Arc<Mutex<Vec<(&'static str, u64)>>>,
    closing: watch::Receiver<bool>,
    name: &'static str,
    max_rows: u64,
    interval: Duration,
}

impl SinkCtx {
    fn new(
        wal: &Arc<Wal>,
        metrics: &Arc<CollectorMetrics>,
        committed: &Arc<Mutex<Vec<(&'static str, u64)>>>,
        closing: &watch::Sender<bool>,
        name: &'static str,
        max_rows: usize,
        interval_ms: u64,
    ) -> SinkCtx {
        SinkCtx {
            wal: wal.clone(),
            metrics: metrics.clone(),
            committed: committed.clone(),
            closing: closing.subscribe(),
            name,
            max_rows: max_rows.max(1) as u64,
            interval: Duration::from_millis(interval_ms.max(1)),
        }
    }

    /// Waits for the next batch: `[from, end)` once it holds `max_rows` events, or once the oldest waiting
    /// event has waited `interval`, or at close. `None` when closing and nothing is left.
    async fn next_range(&mut self, from: u64) -> Option<u64> {
        // Nothing is ever "fed" ahead, so only a due range ends the wait.
        self.next_growth(from, u64::MAX, &mut None).await.map(|(end, _)| end)
    }

    /// Waits until `[from, end)` is due (as [`SinkCtx::next_range`] describes), and also returns, not due,
    /// each time the log has grown past `fed`, so the caller can take the new events in while they are
    /// still in memory. `(end, due)`; `None` when closing with nothing left.
    async fn next_growth(
        &mut self,
        from: u64,
        fed: u64,
        waiting_since: &mut Option<tokio::time::Instant>,
    ) -> Option<(u64, bool)> {
        let mut ends = self.wal.subscribe();
        loop {
            let end = *ends.borrow_and_update();
            let closing = *self.closing.borrow();
            if end > from {
                let since = *waiting_since.get_or_insert_with(tokio::time::Instant::now);
                let capped = end.min(from + self.max_rows);
                if end - from >= self.max_rows || closing || since.elapsed() >= self.interval {
                    return Some((capped, true));
                }
                if capped > fed {
                    return Some((capped, false));
                }
            } else {
                self.caught_up(from);
                if closing {
                    return None;
                }
            }
            let deadline = waiting_since.map(|s| s + self.interval);
            tokio::select! {
                _ = ends.changed() => {}
                _ = self.closing.changed() => {}
                _ = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending::<()>().await,
                    }
                } => {}
            }
        }
    }

    /// Appends the events `[at, end)` to the Parquet batch: from the log's in-memory tail where it holds
    /// them, read back from disk otherwise. Returns `end`.
    async fn feed(&self, sink: &mut ParquetSink, pending: &mut PendingBatch, mut at: u64, end: u64) -> u64 {
        while at < end {
            let tail = self.wal.tail_from(at);
            if !tail.is_empty() {
                for (first, events) in &tail {
                    let skip = at.saturating_sub(*first) as usize;
                    let take = (end.saturating_sub(*first) as usize).min(events.len());
                    for ev in events.get(skip..take).unwrap_or_default() {
                        sink.append(pending, ev);
                    }
                    at = at.max(first + take as u64);
                    if at >= end {
                        break;
                    }
                }
                continue;
            }
            let events = self.read(at, end, READ_CHUNK).await;
            let Some(&(last, _)) = events.last() else { break };
            for (_, ev) in &events {
                sink.append(pending, ev);
            }
            at = last + 1;
        }
        at
    }

    fn caught_up(&self, at: u64) {
        let field = if self.name == "parquet" {
            &self.metrics.parquet_caught_up_ms
        } else {
            &self.metrics.clickhouse_caught_up_ms
        };
        if self.wal.end() <= at {
            field.store(now_ms(), Ordering::Relaxed);
        }
    }

    /// Reads `[from, end)` from the log (retrying I/O errors).
    /// The events at offsets `[from, end)` in whole log records, stopping after the record that brings
    /// the count to `max` (so possibly fewer than the range holds).
    async fn read(&self, from: u64, end: u64, max: usize) -> Vec<(u64, CallEvent)> {
        let mut backoff = Duration::from_millis(100);
        loop {
            let wal = self.wal.clone();
            let r = tokio::task::spawn_blocking(move || wal.read_from(from, max)).await;
            match r {
                Ok(Ok(mut v)) => {
                    v.retain(|(o, _)| *o < end);
                    return v;
                }
                Ok(Err(error)) => error!(sink = self.name, %error, "reading the write-ahead log"),
                Err(error) => error!(sink = self.name, %error, "reading the write-ahead log"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// Moves the cursor and deletes log segments every sink is past.
    async fn commit(&self, cursor: &mut Cursor, end: u64) {
        let mut backoff = Duration::from_millis(100);
        while let Err(error) = cursor.commit(end) {
            error!(sink = self.name, %error, "cannot persist the sink cursor; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
        let field =
            if self.name == "parquet" { &self.metrics.parquet_committed } else { &self.metrics.clickhouse_committed };
        field.store(end, Ordering::Relaxed);
        self.caught_up(end);
        let min = match self.committed.lock() {
            Ok(mut c) => {
                for (n, v) in c.iter_mut() {
                    if *n == self.name {
                        *v = end;
                    }
                }
                c.iter().map(|(_, v)| *v).min().unwrap_or(0)
            }
            Err(_) => 0,
        };
        let wal = self.wal.clone();
        if let Ok(Ok(freed)) = tokio::task::spawn_blocking(move || wal.collect_garbage(min)).await {
            if freed > 0 {
                self.metrics.wal_bytes.store(self.wal.bytes(), Ordering::Relaxed);
            }
        }
    }

    async fn begin(&self, cursor: &mut Cursor, end: u64) {
        let mut backoff = Duration::from_millis(100);
        while let Err(error) = cursor.begin(end) {
            error!(sink = self.name, %error, "cannot persist the sink cursor; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }
}

/// Events decoded from the log at once by the Parquet sink.
const READ_CHUNK: usize = 4096;

async fn run_parquet(mut ctx: SinkCtx, mut cursor: Cursor, mut sink: ParquetSink) {
    // A batch that was being written when the process stopped is rebuilt exactly: same offsets, same files.
    let mut replay = cursor.inflight.filter(|e| *e > cursor.committed);
    loop {
        let from = cursor.committed;
        sink.set_next_offset(from);
        // Events go into the column builders as the log grows, taken from its in-memory tail while it still
        // holds them (no read back, no decode); only the columns of a batch are held, never its events.
        let mut pending = PendingBatch::default();
        let mut fed = from;
        let end = match replay.take() {
            Some(e) => e,
            None => {
                let mut waiting_since = None;
                loop {
                    match ctx.next_growth(from, fed, &mut waiting_since).await {
                        Some((end, due)) => {
                            fed = ctx.feed(&mut sink, &mut pending, fed, end).await;
                            if due {
                                break end;
                            }
                        }
                        None => break from,
                    }
                }
            }
        };
        if end == from {
            break;
        }
        fed = ctx.feed(&mut sink, &mut pending, fed, end).await;
        debug_assert_eq!(fed, end);
        ctx.begin(&mut cursor, end).await;
        flush(&mut sink, &mut pending, &ctx.metrics).await;
        ctx.commit(&mut cursor, end).await;
    }
    info!(sink = "parquet", "sink drained and stopped");
}

async fn run_clickhouse(mut ctx: SinkCtx, mut cursor: Cursor, mut sink: ClickHouseSink) {
    // Migrations first (the table must exist before the first insert). A server that is down or refuses
    // is retried with backoff while events wait in the log; the error is logged with the server's words.
    let mut backoff = Duration::from_millis(200);
    while let Err(error) = tollgate_clickhouse::sink::migrate_on_start(sink.config()).await {
        error!(sink = "clickhouse", %error, retry_in_ms = backoff.as_millis() as u64, "clickhouse migrations failed");
        if *ctx.closing.borrow() {
            break;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
    let mut replay = cursor.inflight.filter(|e| *e > cursor.committed);
    loop {
        let from = cursor.committed;
        let (end, replaying) = match replay.take() {
            Some(e) => (e, true),
            None => match ctx.next_range(from).await {
                Some(e) => (e, false),
                None => break,
            },
        };
        ctx.begin(&mut cursor, end).await;
        let events = ctx.read(from, end, (end - from) as usize).await;
        sink.set_next_offset(from);
        let mut pending = PendingRows::default();
        sink.append(&mut pending, &Arc::new(events.into_iter().map(|(_, e)| e).collect()));
        let closing = *ctx.closing.borrow();
        if !flush_clickhouse(&mut sink, &mut pending, replaying, closing).await {
            warn!(
                sink = "clickhouse",
                from, end, "clickhouse unreachable at shutdown: the batch stays in the log for the next start"
            );
            break;
        }
        ctx.commit(&mut cursor, end).await;
    }
    info!(sink = "clickhouse", "sink drained and stopped");
}

/// Lands every batch (retrying transient failures with backoff; rejected batches go to the dead-letter
/// directory). Returns false only when shutting down and the server stayed unreachable for
/// `insert_timeout_ms`: the events then stay in the log.
async fn flush_clickhouse(
    sink: &mut ClickHouseSink,
    pending: &mut PendingRows,
    replaying: bool,
    shutting_down: bool,
) -> bool {
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
    let give_up = tokio::time::Instant::now() + Duration::from_millis(sink.config().insert_timeout_ms);
    for mut b in batches {
        if replaying {
            b.assume_tried();
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            match sink.write(&mut b).await {
                Ok(_) => break,
                Err(error) => {
                    if shutting_down && tokio::time::Instant::now() >= give_up {
                        return false;
                    }
                    warn!(sink = "clickhouse", batch_id = %b.batch_id, rows = b.rows, %error,
                        retry_in_ms = backoff.as_millis() as u64, "insert failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
    true
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
