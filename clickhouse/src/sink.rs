//! The ClickHouse sink: events are encoded to RowBinary as they arrive, one buffer per calendar month (a
//! batch must stay inside one partition so that it lands as one part, all or nothing), and inserted with
//! LZ4 compression.
//!
//! Landing once: every batch has an id, `<collector id>-<offset of its first event>`, written into each of
//! its rows (`batch_id`) and used as the insert's `query_id`. The offset range is reserved on disk before
//! the first attempt, so ids are never reused. When an attempt's outcome is unknown (timeout, connection
//! cut after the data was sent), the next attempt first makes sure no earlier attempt is still running
//! (same `query_id`) and then counts the batch's rows in its month: if they are there, the batch is done.
//!
//! Rejections (a value the server cannot take, an unknown column) are not retried: the batch goes to a
//! dead-letter file with the server's message, and the sink goes on with the next batch.

use crate::config::ClickHouseConfig;
use crate::error::ChError;
use crate::fetch_json;
use crate::rowbinary;
use bytes::Bytes;
use prometheus_client::encoding::DescriptorEncoder;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tollgate_events::prom::{self, Kind};
use tollgate_events::{date_of_day, CallEvent};
use tracing::{error, info, warn};

#[derive(Debug, Default)]
pub struct ClickHouseSinkMetrics {
    pub events_inserted: AtomicU64,
    pub batches_inserted: AtomicU64,
    /// Batches found already stored when retried (a lost acknowledgement), so not sent again.
    pub batches_already_present: AtomicU64,
    pub insert_errors: AtomicU64,
    pub deadletter_batches: AtomicU64,
    pub deadletter_events: AtomicU64,
    pub last_insert_unix_ms: AtomicU64,
}

impl ClickHouseSinkMetrics {
    /// Scrape-time values for the process's registry.
    pub fn encode_metrics(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let rows: [(&str, Kind, &str, &AtomicU64); 6] = [
            (
                "tollgate_clickhouse_events_inserted",
                Kind::Counter,
                "Call events inserted into ClickHouse.",
                &self.events_inserted,
            ),
            (
                "tollgate_clickhouse_batches_inserted",
                Kind::Counter,
                "Batches inserted into ClickHouse.",
                &self.batches_inserted,
            ),
            (
                "tollgate_clickhouse_batches_already_present",
                Kind::Counter,
                "Retried batches found already stored (lost acknowledgement) and not inserted again.",
                &self.batches_already_present,
            ),
            (
                "tollgate_clickhouse_insert_errors",
                Kind::Counter,
                "Failed insert attempts (retried).",
                &self.insert_errors,
            ),
            (
                "tollgate_clickhouse_deadletter_batches",
                Kind::Counter,
                "Batches the server rejected, written to the dead-letter directory.",
                &self.deadletter_batches,
            ),
            (
                "tollgate_clickhouse_deadletter_events",
                Kind::Counter,
                "Call events in dead-lettered batches.",
                &self.deadletter_events,
            ),
        ];
        for (name, kind, help, v) in rows {
            prom::encode_scalar(e, name, help, kind, v.load(Ordering::Relaxed) as f64)?;
        }
        prom::encode_scalar(
            e,
            "tollgate_clickhouse_last_insert_timestamp_seconds",
            "When the last batch was inserted (Unix time).",
            Kind::Gauge,
            self.last_insert_unix_ms.load(Ordering::Relaxed) as f64 / 1e3,
        )
    }
}

/// Rows waiting for the next insert, already in RowBinary, one buffer per month.
#[derive(Default)]
pub struct PendingRows {
    rows: u64,
    bytes: usize,
    months: BTreeMap<i32, MonthRows>,
}

struct MonthRows {
    batch_id: String,
    rows: u64,
    min_day: i64,
    max_day: i64,
    data: Vec<u8>,
    /// Where the events themselves are (chunk, index), kept only to write a readable dead-letter file.
    events: Vec<(Arc<Vec<CallEvent>>, u32)>,
}

impl PendingRows {
    pub fn len(&self) -> u64 {
        self.rows
    }
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// One insert: the rows of one month, with their batch id.
pub struct Batch {
    pub batch_id: String,
    pub rows: u64,
    from_date: String,
    to_date: String,
    data: Bytes,
    events: Vec<(Arc<Vec<CallEvent>>, u32)>,
    /// An earlier attempt may have landed: look before sending again.
    tried: bool,
}

impl Batch {
    /// A batch of stored events under an id they had before (a dead-letter file being replayed): landing
    /// it twice is recognised by that id.
    pub fn replay(batch_id: String, events: Vec<CallEvent>) -> Batch {
        let mut data = Vec::with_capacity(events.len() * 512);
        let (mut min_day, mut max_day) = (i64::MAX, i64::MIN);
        for e in &events {
            rowbinary::encode(&mut data, e, &batch_id);
            min_day = min_day.min(e.day());
            max_day = max_day.max(e.day());
        }
        let rows = events.len() as u64;
        let chunk = Arc::new(events);
        Batch {
            batch_id,
            rows,
            from_date: date_of_day(min_day.min(max_day)),
            to_date: date_of_day(max_day.max(min_day)),
            data: Bytes::from(data),
            events: (0..rows as u32).map(|i| (chunk.clone(), i)).collect(),
            tried: true,
        }
    }

    /// Treat the batch as possibly stored already (a replay after a crash): look before sending.
    pub fn assume_tried(&mut self) {
        self.tried = true;
    }
}

/// What became of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Landed {
    Inserted,
    AlreadyPresent,
    DeadLettered,
}

pub struct ClickHouseSink {
    cfg: ClickHouseConfig,
    client: clickhouse::Client,
    collector_id: String,
    /// Next event offset; offsets below it are reserved (persisted) or used.
    next_offset: u64,
    offset_path: PathBuf,
    deadletter_dir: PathBuf,
    pub metrics: Arc<ClickHouseSinkMetrics>,
}

fn month_of_day(day: i64) -> i32 {
    use chrono::Datelike;
    chrono::DateTime::from_timestamp(day * 86_400, 0).map(|d| d.year() * 100 + d.month() as i32).unwrap_or(0)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl ClickHouseSink {
    /// Reads (or creates) the collector id and the persisted offset under `data_dir`. Start-up I/O only.
    pub fn open(cfg: ClickHouseConfig, data_dir: &Path) -> std::io::Result<ClickHouseSink> {
        std::fs::create_dir_all(data_dir)?;
        let collector_id = match &cfg.collector_id {
            Some(id) => id.clone(),
            None => {
                let path = data_dir.join("collector.id");
                match std::fs::read_to_string(&path) {
                    Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
                    _ => {
                        let id = uuid::Uuid::now_v7().simple().to_string();
                        write_atomically(&path, id.as_bytes())?;
                        id
                    }
                }
            }
        };
        let offset_path = data_dir.join("clickhouse.offset");
        let next_offset = match std::fs::read_to_string(&offset_path) {
            Ok(s) => s.trim().parse().unwrap_or(0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        let client = cfg.client();
        Ok(ClickHouseSink {
            cfg,
            client,
            collector_id,
            next_offset,
            offset_path,
            deadletter_dir: data_dir.join("deadletter"),
            metrics: Arc::default(),
        })
    }

    pub fn config(&self) -> &ClickHouseConfig {
        &self.cfg
    }

    /// The offset of the next appended event: set by the collector to the write-ahead log offset, so a
    /// batch replayed after a crash gets the same ids.
    pub fn set_next_offset(&mut self, offset: u64) {
        self.next_offset = offset;
    }

    pub fn collector_id(&self) -> &str {
        &self.collector_id
    }

    /// Encodes a chunk of events (shared with the other sinks) into the pending rows.
    pub fn append(&self, p: &mut PendingRows, chunk: &Arc<Vec<CallEvent>>) {
        for (i, ev) in chunk.iter().enumerate() {
            self.append_one(p, ev, (chunk.clone(), i as u32));
        }
    }

    fn append_one(&self, p: &mut PendingRows, ev: &CallEvent, at: (Arc<Vec<CallEvent>>, u32)) {
        let day = ev.day();
        let offset = self.next_offset + p.rows;
        let collector_id = &self.collector_id;
        let m = p.months.entry(month_of_day(day)).or_insert_with(|| MonthRows {
            batch_id: format!("{collector_id}-{offset}"),
            rows: 0,
            min_day: day,
            max_day: day,
            data: Vec::with_capacity(64 * 1024),
            events: Vec::new(),
        });
        p.bytes += rowbinary::encode(&mut m.data, ev, &m.batch_id);
        m.rows += 1;
        m.min_day = m.min_day.min(day);
        m.max_day = m.max_day.max(day);
        m.events.push(at);
        p.rows += 1;
    }

    /// Turns the pending rows into batches (one per month) and reserves their offsets on disk, so that a
    /// restarted collector never gives another batch the same id.
    pub fn seal(&mut self, p: &mut PendingRows) -> std::io::Result<Vec<Batch>> {
        let end = self.next_offset + p.rows;
        write_atomically(&self.offset_path, end.to_string().as_bytes())?;
        self.next_offset = end;
        p.rows = 0;
        p.bytes = 0;
        Ok(std::mem::take(&mut p.months)
            .into_values()
            .map(|m| Batch {
                batch_id: m.batch_id,
                rows: m.rows,
                from_date: date_of_day(m.min_day),
                to_date: date_of_day(m.max_day),
                data: Bytes::from(m.data),
                events: m.events,
                tried: false,
            })
            .collect())
    }

    /// One attempt at landing a batch. `Err` means try again later (the error was transient); a
    /// rejection is not an error here: the batch is dead-lettered.
    pub async fn write(&self, b: &mut Batch) -> Result<Landed, ChError> {
        let timeout = Duration::from_millis(self.cfg.request_timeout_ms);
        if b.tried {
            match self.stored_rows(b, timeout).await {
                Ok(0) => {}
                Ok(n) if n == b.rows => {
                    self.metrics.batches_already_present.fetch_add(1, Ordering::Relaxed);
                    info!(batch_id = %b.batch_id, rows = b.rows, "batch already stored by an earlier attempt");
                    return Ok(Landed::AlreadyPresent);
                }
                // On a cluster a batch is split across shards and may have landed on some of them only; it is
                // sent again whole and each shard's replicated table drops the block it already holds.
                Ok(_) if self.cfg.cluster.is_some() => {}
                Ok(n) => {
                    let msg = format!("{n} of the batch's {} rows are already stored; not sending it again", b.rows);
                    self.dead_letter(b, &msg);
                    return Ok(Landed::DeadLettered);
                }
                Err(e) => {
                    self.metrics.insert_errors.fetch_add(1, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
        b.tried = true;
        match self.insert(b).await {
            Ok(()) => {
                self.metrics.events_inserted.fetch_add(b.rows, Ordering::Relaxed);
                self.metrics.batches_inserted.fetch_add(1, Ordering::Relaxed);
                self.metrics.last_insert_unix_ms.store(now_ms(), Ordering::Relaxed);
                Ok(Landed::Inserted)
            }
            // Only data errors: a missing table or a refused login is retried until someone fixes it.
            Err(ChError::Rejected { code, message }) if crate::retry::is_data_error(code) => {
                // A table that lacks a column because `tollgate migrate` is still running (or was never run
                // to its end) is a set-up error: retried until the migrations are in, not dead-lettered.
                if let Some(pending) = self.pending_migrations(timeout).await {
                    self.metrics.insert_errors.fetch_add(1, Ordering::Relaxed);
                    return Err(ChError::Unavailable(format!(
                        "code {code}: {message} ({pending} schema migrations not applied yet; run `tollgate migrate`)"
                    )));
                }
                self.dead_letter(b, &format!("code {code}: {message}"));
                Ok(Landed::DeadLettered)
            }
            Err(e) => {
                self.metrics.insert_errors.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    async fn insert(&self, b: &Batch) -> Result<(), ChError> {
        let t = Some(Duration::from_millis(self.cfg.insert_timeout_ms));
        let mut insert = self
            .client
            .insert_formatted_with(rowbinary::insert_sql())
            .with_setting("query_id", format!("tollgate-{}", b.batch_id))
            .with_timeouts(t, t);
        if self.cfg.cluster.is_some() {
            // Acknowledged only once every shard has its rows (not when queued on this server's disk).
            insert = insert.with_setting("insert_distributed_sync", "1");
        }
        insert.send(b.data.clone()).await?;
        insert.end().await?;
        Ok(())
    }

    /// How many of the built-in migrations the database has not recorded, when that is more than none. An
    /// unreadable ledger counts as pending: the batch is retried rather than dead-lettered.
    async fn pending_migrations(&self, timeout: Duration) -> Option<usize> {
        let applied = fetch_json(self.client.query("SELECT DISTINCT version FROM schema_migrations"), timeout).await;
        let applied: Vec<u64> = match applied {
            Ok(rows) => rows.iter().filter_map(|r| r.first().and_then(|v| v.as_u64())).collect(),
            Err(_) => return Some(crate::migrate::MIGRATIONS.len()),
        };
        let pending = crate::migrate::MIGRATIONS.iter().filter(|m| !applied.contains(&u64::from(m.version))).count();
        (pending > 0).then_some(pending)
    }

    /// How many rows of the batch are stored, once no earlier attempt of it is still running.
    async fn stored_rows(&self, b: &Batch, timeout: Duration) -> Result<u64, ChError> {
        let running = fetch_json(
            self.client
                .query("SELECT count() FROM system.processes WHERE query_id = ?")
                .bind(format!("tollgate-{}", b.batch_id)),
            timeout,
        )
        .await?;
        if first_u64(&running) > 0 {
            return Err(ChError::Unavailable(format!("an earlier insert of batch {} is still running", b.batch_id)));
        }
        let stored = fetch_json(
            self.client
                .query("SELECT count() FROM calls WHERE date >= ? AND date <= ? AND batch_id = ?")
                .bind(b.from_date.as_str())
                .bind(b.to_date.as_str())
                .bind(b.batch_id.as_str()),
            timeout,
        )
        .await?;
        Ok(first_u64(&stored))
    }

    /// Writes the batch's events as JSON lines after a header line with the server's message. If even
    /// that fails, the events are logged as lost: nothing else can be done with them.
    pub fn dead_letter(&self, b: &Batch, message: &str) {
        self.metrics.deadletter_batches.fetch_add(1, Ordering::Relaxed);
        self.metrics.deadletter_events.fetch_add(b.rows, Ordering::Relaxed);
        let path = self.deadletter_dir.join(format!("clickhouse-{}.jsonl", b.batch_id));
        let result = (|| -> std::io::Result<()> {
            std::fs::create_dir_all(&self.deadletter_dir)?;
            let mut out = Vec::with_capacity(b.events.len() * 512 + 256);
            let header = serde_json::json!({
                "batch_id": b.batch_id, "rows": b.rows, "error": message, "at_unix_ms": now_ms(),
                "sink": "clickhouse", "database": self.cfg.database,
                // An attempt whose outcome is unknown may have landed: check `batch_id` before re-inserting.
                "maybe_stored": b.tried,
            });
            writeln!(out, "{header}")?;
            for (chunk, i) in &b.events {
                let Some(e) = chunk.get(*i as usize) else { continue };
                serde_json::to_writer(&mut out, e)?;
                out.push(b'\n');
            }
            write_atomically(&path, &out)
        })();
        match result {
            Ok(()) => error!(batch_id = %b.batch_id, rows = b.rows, error = message, path = %path.display(),
                "clickhouse rejected a batch; written to the dead-letter file"),
            Err(io) => error!(batch_id = %b.batch_id, rows = b.rows, error = message, %io,
                "clickhouse rejected a batch and the dead-letter file could not be written; events lost"),
        }
    }
}

fn first_u64(rows: &[Vec<serde_json::Value>]) -> u64 {
    rows.first().and_then(|r| r.first()).and_then(|v| v.as_u64()).unwrap_or(0)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Runs the migrations when the config asks for it at start; logs what was applied.
pub async fn migrate_on_start(cfg: &ClickHouseConfig) -> Result<(), crate::MigrateError> {
    if cfg.migrate_on_start {
        let applied = crate::migrate(cfg).await?;
        if !applied.is_empty() {
            info!(?applied, "clickhouse migrations applied at start");
        }
    } else {
        warn!("clickhouse.migrate_on_start is off: run `tollgate migrate` after upgrading");
    }
    Ok(())
}
