//! Batch → Parquet files. Each event has an offset (a sequence number persisted in
//! `<data_dir>/collector.offset`); a file is named after the offset of its first event, so writing the
//! same batch again replaces the file instead of doubling its money. Files are written to a hidden temp
//! name, fsynced and renamed, so readers never see half a file.

use super::compact::{invalidate_summary, CallsLock};
use super::config::ParquetSinkConfig;
use arrow::array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tollgate_events::{date_of_day, CallEvent, CallEventBatchBuilder};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("io error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("writer task failed: {0}")]
    Join(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SinkError + '_ {
    move |source| SinkError::Io { path: path.to_path_buf(), source }
}

/// Events waiting to be written, already in columnar form, one builder per UTC day.
#[derive(Default)]
pub struct PendingBatch {
    rows: u64,
    /// day → (offset of the day's first event, its rows)
    days: BTreeMap<i64, (u64, CallEventBatchBuilder)>,
}

impl PendingBatch {
    pub fn len(&self) -> u64 {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }
}

/// A finished batch: one record batch per date, each with the offset its file is named after.
#[derive(Clone)]
pub struct SealedBatch {
    first_offset: u64,
    rows: u64,
    files: Vec<(String, u64, RecordBatch)>,
}

impl SealedBatch {
    pub fn rows(&self) -> u64 {
        self.rows
    }
}

pub struct ParquetSink {
    cfg: ParquetSinkConfig,
    /// Taken while a file is added to a day directory, so compaction's exchange never loses it.
    lock: Arc<CallsLock>,
    next_offset: u64,
    /// Offsets below this are persisted as used.
    reserved: u64,
}

impl ParquetSink {
    /// Reads the persisted offset (start-up I/O).
    pub fn open(cfg: ParquetSinkConfig) -> Result<ParquetSink, SinkError> {
        let calls = cfg.data_dir.join("calls");
        std::fs::create_dir_all(&calls).map_err(io(&calls))?;
        let path = offset_path(&cfg.data_dir);
        let next_offset = match std::fs::read_to_string(&path) {
            Ok(s) => s.trim().parse().unwrap_or(0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(SinkError::Io { path, source: e }),
        };
        let lock = Arc::new(CallsLock::open(&cfg.data_dir)?);
        Ok(ParquetSink { cfg, lock, next_offset, reserved: next_offset })
    }

    /// The offset of the next appended event: set by the collector to the write-ahead log offset, so a
    /// batch replayed after a crash is written under the same file names.
    pub fn set_next_offset(&mut self, offset: u64) {
        self.next_offset = offset;
        self.reserved = self.reserved.max(offset);
    }

    /// Adds an event to the pending batch, assigning its offset.
    pub fn append(&self, batch: &mut PendingBatch, ev: &CallEvent) {
        let offset = self.next_offset + batch.rows;
        let day = batch.days.entry(ev.day()).or_insert_with(|| (offset, CallEventBatchBuilder::new()));
        day.1.append(ev);
        batch.rows += 1;
    }

    /// Turns the pending batch into record batches (the pending batch is empty afterwards).
    pub fn seal(&self, batch: &mut PendingBatch) -> Result<SealedBatch, SinkError> {
        let mut files = Vec::with_capacity(batch.days.len());
        for (day, (offset, mut b)) in std::mem::take(&mut batch.days) {
            files.push((date_of_day(day), offset, b.finish()?));
        }
        let rows = std::mem::take(&mut batch.rows);
        Ok(SealedBatch { first_offset: self.next_offset, rows, files })
    }

    /// Writes one sealed batch (one file per date) and then persists the next offset. Safe to call again
    /// with the same batch after a failure: the files are named by offset and replaced.
    pub async fn write(&mut self, batch: SealedBatch) -> Result<(), SinkError> {
        // The offsets are reserved on disk before any file is written: a collector restarted after a crash
        // in between starts after them, instead of naming new files like ones already written.
        let end = batch.first_offset + batch.rows;
        if end > self.reserved {
            write_atomically(&offset_path(&self.cfg.data_dir), end.to_string().as_bytes())?;
            self.reserved = end;
        }
        let (cfg, lock) = (self.cfg.clone(), self.lock.clone());
        tokio::task::spawn_blocking(move || write_files(&cfg, &lock, &batch.files))
            .await
            .map_err(|e| SinkError::Join(e.to_string()))??;
        self.next_offset = self.next_offset.max(end);
        Ok(())
    }
}

fn offset_path(data_dir: &Path) -> PathBuf {
    data_dir.join("collector.offset")
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), SinkError> {
    crate::wal::write_atomically(path, bytes).map_err(io(path))
}

/// How the files of the call log are written: zstd, row groups of at most `row_group_rows` rows.
/// Columns whose every value is new (the ids) are not dictionary-encoded: a dictionary would only hash and
/// store each value once more, overflow its page and fall back to plain encoding anyway.
///
/// An open day's files ([`Zstd::Fast`]) compress only the columns with bytes to save ([`wide`]):
/// the other columns (attribution, model names, outcomes, flags) are dictionary-encoded to a few dozen
/// bytes per file, which a zstd frame makes larger, not smaller, and each compressed column costs the
/// writer a compression and a decompression context of its own (parquet makes both per column per file).
/// A sink file of 4,096 bench calls: 89.8 KB against 89.3 KB with every column compressed, and a
/// quarter less time to write (bench/RESULTS.md, fourteenth round). A closed day's compaction
/// ([`Zstd::Compact`]) compresses every column.
pub(super) fn writer_props(row_group_rows: usize, level: Zstd) -> Result<WriterProperties, SinkError> {
    let zstd = Compression::ZSTD(ZstdLevel::try_new(level as i32)?);
    let mut b = WriterProperties::builder().set_max_row_group_row_count(Some(row_group_rows.max(1)));
    b = match level {
        Zstd::Compact => b.set_compression(zstd),
        Zstd::Fast => tollgate_events::call_event_schema()
            .fields()
            .iter()
            .filter(|f| wide(f))
            .fold(b.set_compression(Compression::UNCOMPRESSED), |b, f| {
                b.set_column_compression(ColumnPath::from(f.name().as_str()), zstd)
            }),
    };
    for unique in UNIQUE_COLUMNS {
        b = b.set_column_dictionary_enabled(ColumnPath::from(unique), false);
    }
    Ok(b.build())
}

/// zstd levels. A writer holds one compression context per compressed column, and a level-3 context's
/// tables are about 768 KiB where a level-1 context's are under 64 KiB.
#[derive(Clone, Copy)]
pub(super) enum Zstd {
    /// An open day's files (sink flushes and their merges): written often, read back soon, and rewritten
    /// when the day is compacted.
    Fast = 1,
    /// A closed day's compacted files, which stay.
    Compact = 3,
}

/// Whether a column is compressed in an open day's files: the ids, the times and the measures (every
/// 32- and 64-bit number: tokens, cost, latencies, sizes), whose values vary from call to call. Names,
/// outcomes, flags and the small numbers (schema version, attempt, status) are dictionary-encoded to a few
/// bytes and stay plain.
fn wide(field: &arrow::datatypes::Field) -> bool {
    use arrow::datatypes::DataType::{Timestamp, UInt32, UInt64};
    UNIQUE_COLUMNS.contains(&field.name().as_str()) || matches!(field.data_type(), Timestamp(..) | UInt32 | UInt64)
}

/// Columns with a new value in (almost) every row.
const UNIQUE_COLUMNS: [&str; 2] = ["event_id", "request_id"];

fn write_files(
    cfg: &ParquetSinkConfig,
    lock: &CallsLock,
    files: &[(String, u64, RecordBatch)],
) -> Result<(), SinkError> {
    let props = writer_props(cfg.row_group_rows, Zstd::Fast)?;
    for (date, offset, batch) in files {
        let dir = cfg.data_dir.join("calls").join(format!("date={date}"));
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let name = format!("part-{offset:020}.parquet");
        let tmp = dir.join(format!(".{name}.tmp"));
        let file = File::create(&tmp).map_err(io(&tmp))?;
        let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props.clone()))?;
        w.write(batch)?;
        let file = w.into_inner()?;
        file.sync_all().map_err(io(&tmp))?;
        let dst = dir.join(&name);
        // A day compacted meanwhile has a summary that would not cover this file: it goes first. If the
        // day directory was exchanged by compaction since `tmp` was made, the rename fails and the batch
        // is written again.
        lock.with(|| {
            invalidate_summary(&dir)?;
            std::fs::rename(&tmp, &dst).map_err(io(&dst))?;
            File::open(&dir).and_then(|d| d.sync_all()).map_err(io(&dir))
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ts: i64, cost: u64) -> CallEvent {
        CallEvent { ts_start_us: ts, cost_nanousd: cost, ..Default::default() }
    }

    #[tokio::test]
    async fn writes_one_file_per_date_named_by_offset_and_persists_offset() {
        let dir = std::env::temp_dir().join(format!("tg-sink-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut s = ParquetSink::open(ParquetSinkConfig::new(dir.clone())).unwrap();
        // 2023-11-14 and 2023-11-15 (UTC)
        let day1 = 1_700_000_000_000_000;
        let day2 = day1 + 86_400_000_000;
        let mut p = PendingBatch::default();
        for e in [ev(day1, 1), ev(day2, 2), ev(day1, 3)] {
            s.append(&mut p, &e);
        }
        let sealed = s.seal(&mut p).unwrap();
        assert!(p.is_empty());
        // Writing the same sealed batch twice (a retry after a lost acknowledgement) replaces its files.
        s.write(sealed.clone()).await.unwrap();
        s.write(sealed).await.unwrap();
        assert!(dir.join("calls/date=2023-11-14/part-00000000000000000000.parquet").exists());
        assert!(dir.join("calls/date=2023-11-15/part-00000000000000000001.parquet").exists());
        assert_eq!(std::fs::read_dir(dir.join("calls/date=2023-11-14")).unwrap().count(), 1);
        s.append(&mut p, &ev(day1, 4));
        let sealed = s.seal(&mut p).unwrap();
        s.write(sealed).await.unwrap();
        assert!(dir.join("calls/date=2023-11-14/part-00000000000000000003.parquet").exists());
        // A reopened sink continues after the last offset instead of overwriting.
        let s2 = ParquetSink::open(ParquetSinkConfig::new(dir.clone())).unwrap();
        assert_eq!(s2.next_offset, 4);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn ids_are_written_without_a_dictionary_and_attribution_with_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ParquetSink::open(ParquetSinkConfig::new(dir.path().to_path_buf())).unwrap();
        let mut p = PendingBatch::default();
        for i in 0..100u64 {
            let mut e = ev(1_700_000_000_000_000 + i as i64, i);
            e.event_id = format!("ev-{i}");
            e.request_id = format!("req-{i}");
            e.department = ["a", "b"][i as usize % 2].into();
            s.append(&mut p, &e);
        }
        let sealed = s.seal(&mut p).unwrap();
        s.write(sealed).await.unwrap();
        let path = dir.path().join("calls/date=2023-11-14/part-00000000000000000000.parquet");
        let reader = parquet::file::reader::SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        use parquet::file::reader::FileReader;
        let rg = reader.metadata().row_group(0);
        let dictionary = |name: &str| {
            let c = rg.columns().iter().find(|c| c.column_path().string() == name).unwrap();
            c.dictionary_page_offset().is_some()
        };
        assert!(!dictionary("event_id"));
        assert!(!dictionary("request_id"));
        assert!(dictionary("department"));
        // The values are all there.
        let rows: Vec<String> =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap())
                .unwrap()
                .build()
                .unwrap()
                .flat_map(|b| {
                    let b = b.unwrap();
                    let ids = b
                        .column_by_name("event_id")
                        .unwrap()
                        .as_any()
                        .downcast_ref::<arrow::array::StringArray>()
                        .unwrap()
                        .clone();
                    ids.iter().map(|v| v.unwrap_or_default().to_string()).collect::<Vec<_>>()
                })
                .collect();
        assert_eq!(rows, (0..100).map(|i| format!("ev-{i}")).collect::<Vec<_>>());
    }

    #[test]
    fn open_day_files_compress_the_wide_columns_and_compacted_files_all() {
        let schema = tollgate_events::call_event_schema();
        // Written out here, not derived from the rule under test.
        let wide = [
            "event_id",
            "request_id",
            "ts_start",
            "ts_end",
            "input_tokens",
            "output_tokens",
            "cached_input_tokens",
            "cache_write_tokens",
            "reasoning_tokens",
            "cost_nanousd",
            "latency_ms",
            "ttft_ms",
            "upstream_latency_ms",
            "gateway_overhead_us",
            "request_bytes",
            "response_bytes",
            "saved_nanousd",
            "predicted_cost_nanousd",
        ];
        let mut b = CallEventBatchBuilder::new();
        for i in 0..50u64 {
            let mut e = ev(1_700_000_000_000_000 + i as i64, i);
            e.event_id = format!("ev-{i}");
            e.department = "eng".into();
            b.append(&e);
        }
        let batch = b.finish().unwrap();
        let codecs = |level: Zstd| {
            let mut buf = Vec::new();
            let mut w =
                ArrowWriter::try_new(&mut buf, schema.clone(), Some(writer_props(1024, level).unwrap())).unwrap();
            w.write(&batch).unwrap();
            w.close().unwrap();
            let reader = parquet::file::reader::SerializedFileReader::new(bytes::Bytes::from(buf)).unwrap();
            use parquet::file::reader::FileReader;
            let rg = reader.metadata().row_group(0);
            rg.columns().iter().map(|c| (c.column_path().string(), c.compression())).collect::<BTreeMap<_, _>>()
        };
        // (A file records the codec, not its level.)
        let zstd = |c: &Compression| matches!(c, Compression::ZSTD(_));
        let fast = codecs(Zstd::Fast);
        assert_eq!(fast.len(), 46);
        for (column, codec) in &fast {
            let wide = wide.contains(&column.as_str());
            assert_eq!(zstd(codec), wide, "{column}: {codec:?}");
            assert!(wide || *codec == Compression::UNCOMPRESSED, "{column}: {codec:?}");
        }
        assert!(zstd(&fast["event_id"]) && fast["department"] == Compression::UNCOMPRESSED);
        assert!(codecs(Zstd::Compact).values().all(zstd));
    }
}
