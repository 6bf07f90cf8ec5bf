//! Compaction: a closed day's many small files (one per sink flush) become a few large files sorted by
//! attribution and time, with a daily summary (`summary.rollup`, the rollup's columns) beside them.
//!
//! The new day is built in `<data_dir>/compaction/date=D/` and then exchanged with `calls/date=D/` in one
//! `renameat2(RENAME_EXCHANGE)`: a reader lists either the old files or the new ones, never both, so no
//! row is ever counted twice or missed. After a crash, whatever is left in `compaction/` (a half-built
//! day, or the old files after the exchange) is redundant and deleted by the next run.
//!
//! Exactly once with the sink: only files whose offset is below the sink's committed cursor are taken, so
//! a batch the sink may still rewrite after a crash (its in-flight batch) is never compacted away and
//! then written again. A file the sink adds to the day while it is being compacted (a late event) is
//! carried over into the new day by hard link, under the lock the sink takes to add files; the day then
//! has no summary (the summary would not cover that file) until the next compaction.

use super::sink::{writer_props, SinkError, Zstd};
use arrow::array::{ArrayRef, AsArray, ListBuilder, RecordBatch, StringBuilder, UInt16Builder, UInt64Builder};
use arrow::compute::{concat_batches, lexsort_to_indices, take_record_batch, SortColumn};
use arrow::datatypes::{UInt32Type, UInt64Type};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::arrow::arrow_writer::{compute_leaves, ArrowColumnWriter, ArrowRowGroupWriterFactory};
use parquet::arrow::ArrowWriter;
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tollgate_events::{latency_bucket, rollup_schema, ROLLUP_DIMENSIONS, ROLLUP_SUMS};
use tracing::info;

/// Name of a day's summary file (not `.parquet`, so readers of the call log skip it).
pub const SUMMARY_FILE: &str = "summary.rollup";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SinkError + '_ {
    move |source| SinkError::Io { path: path.to_path_buf(), source }
}

/// The lock that orders the sink's file additions with compaction's exchange (an advisory `flock` on
/// `<data_dir>/calls.lock`, so it also works between processes).
pub struct CallsLock(File);

impl CallsLock {
    pub fn open(data_dir: &Path) -> Result<CallsLock, SinkError> {
        let path = data_dir.join("calls.lock");
        let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io(&path))?;
        Ok(CallsLock(f))
    }

    /// Holds the lock while `f` runs.
    pub fn with<T>(&self, f: impl FnOnce() -> Result<T, SinkError>) -> Result<T, SinkError> {
        self.0.lock().map_err(|e| SinkError::Io { path: PathBuf::from("calls.lock"), source: e })?;
        let r = f();
        let _ = self.0.unlock();
        r
    }
}

/// What compaction does.
#[derive(Debug, Clone)]
pub struct CompactionConfig {
    pub data_dir: PathBuf,
    /// Rows per output file (the last one of a day holds the rest).
    pub rows_per_file: usize,
    /// Rows per row group.
    pub row_group_rows: usize,
    /// An open day (today, or a day not yet closed for compaction) whose sink files reach this many is
    /// merged: its sink files become one file (not sorted; no summary: the day is still being written). 0
    /// turns merging off. Bounds the files a query of today opens (the sink writes one per flush).
    pub merge_parts: usize,
    /// An open day's merge copies a row group of at least this many rows as it is (its encoded column
    /// chunks spliced into the merged file, not decoded and compressed again) and writes smaller ones
    /// again together. A busy gateway's sink files are its full batches (`collector.batch_max_rows`
    /// rows): they must qualify, or every call is encoded twice (see [`CompactionConfig::for_sink_batches`]).
    pub copy_row_group_rows: usize,
}

impl CompactionConfig {
    pub fn new(data_dir: PathBuf) -> CompactionConfig {
        CompactionConfig {
            data_dir,
            rows_per_file: 4 * 1024 * 1024,
            row_group_rows: 128 * 1024,
            merge_parts: 16,
            copy_row_group_rows: 0,
        }
        .for_sink_batches(crate::config::DEFAULT_BATCH_MAX_ROWS)
    }

    /// Copies the sink's full batches of `batch_max_rows` rows in merges: row groups from that size up,
    /// within [`MIN_COPY_ROWS`] (a merged file does not keep a gateway's tiny batches) and
    /// [`MERGE_ROW_GROUP_ROWS`] (what a merge's own writer makes).
    pub fn for_sink_batches(mut self, batch_max_rows: usize) -> CompactionConfig {
        self.copy_row_group_rows = batch_max_rows.clamp(MIN_COPY_ROWS, MERGE_ROW_GROUP_ROWS);
        self
    }
}

/// Row groups under this many rows are always written again by a merge, whatever the sink's batch.
pub const MIN_COPY_ROWS: usize = 1024;

/// What a rewrite of a day directory takes and leaves.
#[derive(Clone, Copy, PartialEq)]
enum Rewrite {
    /// A closed day: every file into a few sorted files plus the day's summary.
    Close,
    /// An open day: its committed sink files (oldest first, up to `rows_per_file` rows) into one file,
    /// not sorted; compacted files stay as they are (unless enough small ones make a merge); no summary.
    Merge,
}

/// What one day's compaction did.
#[derive(Debug, Clone, PartialEq)]
pub struct DayCompacted {
    pub date: String,
    pub files_before: usize,
    pub files_after: usize,
    pub rows: u64,
    pub summary_rows: u64,
}

/// A file of a day directory: a sink file (`part-<offset>.parquet`), a compacted file, or the summary.
enum DayFile {
    Part(u64),
    Compacted,
    Summary,
    Other,
}

fn classify(name: &str) -> DayFile {
    if name == SUMMARY_FILE {
        return DayFile::Summary;
    }
    if let Some(n) = name.strip_prefix("part-").and_then(|r| r.strip_suffix(".parquet")) {
        return n.parse().map(DayFile::Part).unwrap_or(DayFile::Other);
    }
    if name.starts_with("compact-") && name.ends_with(".parquet") {
        return DayFile::Compacted;
    }
    DayFile::Other
}

fn list(dir: &Path) -> Result<Vec<String>, SinkError> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let e = e.map_err(io(dir))?;
        if let Some(n) = e.file_name().to_str() {
            names.push(n.to_string());
        }
    }
    names.sort();
    Ok(names)
}

fn sync_dir(dir: &Path) -> Result<(), SinkError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Swaps two directories in one step.
#[cfg(not(target_os = "linux"))]
fn exchange(a: &Path, _b: &Path) -> Result<(), SinkError> {
    Err(SinkError::Io {
        path: a.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::Unsupported, "compaction needs Linux renameat2"),
    })
}

/// Swaps two directories in one step.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> Result<(), SinkError> {
    use std::os::unix::ffi::OsStrExt;
    let ca = std::ffi::CString::new(a.as_os_str().as_bytes()).map_err(|e| SinkError::Io {
        path: a.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
    })?;
    let cb = std::ffi::CString::new(b.as_os_str().as_bytes()).map_err(|e| SinkError::Io {
        path: b.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
    })?;
    // SAFETY: two valid NUL-terminated paths; the call reads them and nothing else.
    let rc =
        unsafe { libc::renameat2(libc::AT_FDCWD, ca.as_ptr(), libc::AT_FDCWD, cb.as_ptr(), libc::RENAME_EXCHANGE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(SinkError::Io { path: a.to_path_buf(), source: std::io::Error::last_os_error() })
    }
}

/// Compacts every day before `before` (`YYYY-MM-DD`, exclusive) that has sink files, taking only files
/// below `committed` (the Parquet sink's committed cursor). Blocking; run it off the async threads.
pub fn compact_days(
    cfg: &CompactionConfig,
    lock: &CallsLock,
    committed: u64,
    before: &str,
) -> Result<Vec<DayCompacted>, SinkError> {
    rewrite_days(cfg, lock, committed, Rewrite::Close, |date| date < before)
}

/// Merges the sink files of every day from `from` on (`YYYY-MM-DD`, inclusive: the days not yet closed)
/// that has at least `cfg.merge_parts` of them below `committed`. Blocking; run it off the async threads.
pub fn merge_open_days(
    cfg: &CompactionConfig,
    lock: &CallsLock,
    committed: u64,
    from: &str,
) -> Result<Vec<DayCompacted>, SinkError> {
    if cfg.merge_parts == 0 {
        return Ok(Vec::new());
    }
    rewrite_days(cfg, lock, committed, Rewrite::Merge, |date| date >= from)
}

/// Rewrites the days `pick` chooses, one at a time, under the compaction lock.
fn rewrite_days(
    cfg: &CompactionConfig,
    lock: &CallsLock,
    committed: u64,
    how: Rewrite,
    pick: impl Fn(&str) -> bool,
) -> Result<Vec<DayCompacted>, SinkError> {
    let mut done = Vec::new();
    let Some(_guard) = exclusive(cfg)? else { return Ok(done) };
    for name in list(&cfg.data_dir.join("calls"))? {
        let Some(date) = name.strip_prefix("date=").filter(|d| pick(d)) else { continue };
        if let Some(d) = rewrite_day(cfg, lock, committed, date, how)? {
            done.push(d);
        }
    }
    Ok(done)
}

/// One compaction or merge at a time (the background task and `tollgate compact` may meet): the lock
/// file held while it runs, or `None` when another run holds it. Clears what a crashed run left.
fn exclusive(cfg: &CompactionConfig) -> Result<Option<File>, SinkError> {
    if !cfg.data_dir.join("calls").exists() {
        return Ok(None);
    }
    let path = cfg.data_dir.join("compaction.lock");
    let guard = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io(&path))?;
    match guard.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            info!("another compaction is running; skipped");
            return Ok(None);
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(SinkError::Io { path, source: e }),
    }
    // Left by a run that crashed: a half-built day, or a day's old files after the exchange. Either is
    // redundant (the day directory under `calls/` is complete in both cases).
    let staging_root = cfg.data_dir.join("compaction");
    if staging_root.exists() {
        std::fs::remove_dir_all(&staging_root).map_err(io(&staging_root))?;
    }
    Ok(Some(guard))
}

/// Compacts one day if it has sink files (or compacted files without a summary) and all of them are
/// below `committed`; `None` when there is nothing to do.
pub fn compact_day(
    cfg: &CompactionConfig,
    lock: &CallsLock,
    committed: u64,
    date: &str,
) -> Result<Option<DayCompacted>, SinkError> {
    rewrite_day(cfg, lock, committed, date, Rewrite::Close)
}

fn rewrite_day(
    cfg: &CompactionConfig,
    lock: &CallsLock,
    committed: u64,
    date: &str,
    how: Rewrite,
) -> Result<Option<DayCompacted>, SinkError> {
    let day = cfg.data_dir.join("calls").join(format!("date={date}"));
    let mut inputs = Vec::new();
    let (mut parts, mut summary) = (0, false);
    let mut first_offset = u64::MAX;
    // An open day's compacted files under a quarter of `rows_per_file` rows.
    let mut small = Vec::new();
    // `list` sorts by name, and sink files are named by their zero-padded offset: oldest first.
    for name in list(&day)? {
        match (classify(&name), how) {
            // The sink may still rewrite it: a closed day waits; an open day's merge leaves it.
            (DayFile::Part(o), Rewrite::Close) if o >= committed => return Ok(None),
            (DayFile::Part(o), Rewrite::Merge) if o >= committed => {}
            (DayFile::Part(o), _) => {
                parts += 1;
                first_offset = first_offset.min(o);
                inputs.push(name);
            }
            (DayFile::Compacted, Rewrite::Close) => inputs.push(name),
            (DayFile::Compacted, Rewrite::Merge) => {
                // Merged files that stayed small are merged again once there are as many of them as
                // sink files that make a merge: an open day keeps a bounded number of small files.
                let path = day.join(&name);
                let f = File::open(&path).map_err(io(&path))?;
                let rows = ParquetRecordBatchReaderBuilder::try_new(f)?.metadata().file_metadata().num_rows();
                if (rows.max(0) as usize) < cfg.rows_per_file.max(1) / 4 {
                    small.push(name);
                }
            }
            (DayFile::Summary, _) => summary = true,
            (DayFile::Other, _) => {}
        }
    }
    match how {
        Rewrite::Close if inputs.is_empty() || (parts == 0 && summary) => return Ok(None),
        Rewrite::Merge => {
            let enough = cfg.merge_parts.max(2);
            if small.len() >= enough {
                small.append(&mut inputs);
                inputs = small;
            } else if parts < enough {
                return Ok(None);
            }
        }
        _ => {}
    }
    let staging_root = cfg.data_dir.join("compaction");
    let staging = staging_root.join(format!("date={date}"));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    std::fs::create_dir_all(&staging).map_err(io(&staging))?;

    let tag = if first_offset == u64::MAX { 0 } else { first_offset };
    // A generation in the name: a day compacted again gets new file names, never new contents under an
    // old name that a reader may have cached metadata for.
    let generation =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let out = |n: usize| staging.join(format!("compact-{tag:020}-{generation}-{n:04}.parquet"));
    let (rows, files_after, summary_rows) = match how {
        Rewrite::Close => close_day(cfg, &day, &inputs, out, &staging.join(SUMMARY_FILE))?,
        Rewrite::Merge => (merge_files(cfg, &day, &mut inputs, &out(0))?, 1, 0),
    };
    sync_dir(&staging)?;

    lock.with(|| {
        // Files the sink added meanwhile (late events) go along, and so do the files a merge leaves; a
        // closed day's summary does not cover late files, so it goes.
        let mut late = 0;
        for name in list(&day)? {
            let known = inputs.contains(&name);
            let (carried, part) = match classify(&name) {
                DayFile::Part(_) => (true, true),
                DayFile::Compacted => (how == Rewrite::Merge, false),
                _ => (false, false),
            };
            if !known && carried {
                let (from, to) = (day.join(&name), staging.join(&name));
                std::fs::hard_link(&from, &to).map_err(io(&to))?;
                late += u32::from(part);
            }
        }
        if late > 0 && how == Rewrite::Close {
            let s = staging.join(SUMMARY_FILE);
            std::fs::remove_file(&s).map_err(io(&s))?;
        }
        sync_dir(&staging)?;
        exchange(&day, &staging)?;
        sync_dir(&cfg.data_dir.join("calls"))?;
        sync_dir(&staging_root)
    })?;
    // `staging` now holds the old files.
    std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    let what = if how == Rewrite::Close { "day compacted" } else { "open day's sink files merged" };
    info!(date, files_before = inputs.len(), files_after, rows, summary_rows, "{what}");
    Ok(Some(DayCompacted { date: date.to_string(), files_before: inputs.len(), files_after, rows, summary_rows }))
}

/// A closed day: every input read, sorted for reports, written in files of `rows_per_file` rows, and
/// summarized into `summary`. Holds the day in memory while it sorts. Returns (rows, files written,
/// summary rows).
fn close_day(
    cfg: &CompactionConfig,
    day: &Path,
    inputs: &[String],
    out: impl Fn(usize) -> PathBuf,
    summary: &Path,
) -> Result<(u64, usize, u64), SinkError> {
    let props = &writer_props(cfg.row_group_rows, Zstd::Compact)?;
    let mut batches = Vec::new();
    for name in inputs {
        let path = day.join(name);
        let f = File::open(&path).map_err(io(&path))?;
        for b in ParquetRecordBatchReaderBuilder::try_new(f)?.with_batch_size(64 * 1024).build()? {
            batches.push(b?);
        }
    }
    let schema = tollgate_events::call_event_schema();
    let all = concat_batches(&schema, &batches)?;
    drop(batches);
    let sorted = sort_for_reports(&all)?;
    drop(all);
    let mut files = 0;
    let per_file = cfg.rows_per_file.max(1);
    let mut at = 0;
    while at < sorted.num_rows() {
        let n = per_file.min(sorted.num_rows() - at);
        write_parquet(&out(files), &sorted.slice(at, n), props)?;
        files += 1;
        at += n;
    }
    let rollup = summarize(&sorted)?;
    write_parquet(summary, &rollup, props)?;
    Ok((sorted.num_rows() as u64, files, rollup.num_rows() as u64))
}

/// An open day's merge: the inputs (oldest first) go into one file, not sorted (the day's compaction
/// sorts it once the day closes). A row group of at least `cfg.copy_row_group_rows` rows (a sink file's
/// batch under load, or a row group an earlier merge copied) is copied as it is, its encoded column
/// chunks spliced into the new file without being decoded: a merge under load then holds no more than
/// a copy buffer and the footers, and spends no CPU on compression. Smaller row groups (a quiet
/// gateway's flushes) are decoded and written again together, so a merged file does not keep many tiny
/// row groups; their writer holds at most one row group of [`MERGE_ROW_GROUP_ROWS`]. Inputs after the
/// one that brings the file to `rows_per_file` rows are left for the next merge (`inputs` is cut to
/// those taken). Returns the rows written.
fn merge_files(cfg: &CompactionConfig, day: &Path, inputs: &mut Vec<String>, out: &Path) -> Result<u64, SinkError> {
    let schema = tollgate_events::call_event_schema();
    let props = writer_props(cfg.row_group_rows.min(MERGE_ROW_GROUP_ROWS), Zstd::Fast)?;
    let file = File::create(out).map_err(io(out))?;
    // The Arrow writer puts the Arrow schema into the footer; its lower half writes the row groups.
    let (mut w, columns) = ArrowWriter::try_new(file, schema.clone(), Some(props))?.into_serialized_writer()?;
    let mut small = SmallRowGroups { columns: &columns, writers: Vec::new(), rows: 0 };
    let (mut rows, mut taken) = (0u64, 0);
    for name in inputs.iter() {
        if rows >= cfg.rows_per_file.max(1) as u64 {
            break;
        }
        let path = day.join(name);
        let f = File::open(&path).map_err(io(&path))?;
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let meta = ArrowReaderMetadata::load(&f, options)?;
        // Copied only when the file's Parquet schema is the one written now (a file of an older schema
        // is decoded and converted, as a closed day's compaction does).
        let same_schema = meta.metadata().file_metadata().schema() == w.schema_descr().root_schema();
        for (i, rg) in meta.metadata().row_groups().iter().enumerate() {
            rows += rg.num_rows().max(0) as u64;
            if same_schema && rg.num_rows() >= cfg.copy_row_group_rows.max(1) as i64 {
                copy_row_group(&mut w, &f, meta.metadata(), i)?;
                continue;
            }
            let reader =
                ParquetRecordBatchReaderBuilder::new_with_metadata(f.try_clone().map_err(io(&path))?, meta.clone())
                    .with_row_groups(vec![i])
                    .with_batch_size(8 * 1024)
                    .build()?;
            for b in reader {
                small.write(&mut w, &b?.with_schema(schema.clone())?)?;
            }
        }
        taken += 1;
    }
    small.flush(&mut w)?;
    inputs.truncate(taken);
    let file = w.into_inner()?;
    file.sync_all().map_err(io(out))?;
    Ok(rows)
}

/// Row groups of a merged file written from small ones: small, so the writer's buffered row group stays
/// a few MiB (with 32,768 rows a merge under load took 18 MiB of RSS for two seconds, with 8,192 about
/// 10; bench/RESULTS.md, fifteenth round). A later merge copies groups of this size as they are.
const MERGE_ROW_GROUP_ROWS: usize = 8 * 1024;

/// Splices row group `i` of `meta` (read from `f`) into `w` as a row group of its own, with its
/// statistics and page index.
fn copy_row_group(
    w: &mut SerializedFileWriter<File>,
    f: &File,
    meta: &ParquetMetaData,
    i: usize,
) -> Result<(), SinkError> {
    let rg = meta.row_group(i);
    let mut out = w.next_row_group()?;
    for (j, column) in rg.columns().iter().enumerate() {
        let column_index = meta.column_index().and_then(|c| c.get(i)?.get(j).cloned());
        let offset_index = meta.offset_index().and_then(|o| o.get(i)?.get(j).cloned());
        // Without page locations the page index says nothing; keep neither half without the other.
        let (column_index, offset_index) = match (column_index, offset_index) {
            (Some(c), Some(o)) if !matches!(c, ColumnIndexMetaData::NONE) => (Some(c), Some(o)),
            (_, o) => (None, o),
        };
        let chunk = ColumnCloseResult {
            bytes_written: column.compressed_size().max(0) as u64,
            rows_written: rg.num_rows().max(0) as u64,
            metadata: column.clone(),
            bloom_filter: None,
            column_index,
            offset_index,
        };
        out.append_column(f, chunk)?;
    }
    out.close()?;
    Ok(())
}

/// The rows of a merge's small row groups, encoded into one row group until it holds
/// [`MERGE_ROW_GROUP_ROWS`] rows.
struct SmallRowGroups<'a> {
    columns: &'a ArrowRowGroupWriterFactory,
    writers: Vec<ArrowColumnWriter>,
    rows: usize,
}

impl SmallRowGroups<'_> {
    fn write(&mut self, w: &mut SerializedFileWriter<File>, b: &RecordBatch) -> Result<(), SinkError> {
        let mut at = 0;
        while at < b.num_rows() {
            if self.writers.is_empty() {
                self.writers = self.columns.create_column_writers(w.flushed_row_groups().len())?;
            }
            let n = (MERGE_ROW_GROUP_ROWS - self.rows).min(b.num_rows() - at);
            let part = b.slice(at, n);
            let mut writers = self.writers.iter_mut();
            for (field, column) in part.schema().fields().iter().zip(part.columns()) {
                for leaf in compute_leaves(field, column)? {
                    let writer = writers.next().ok_or_else(|| {
                        parquet::errors::ParquetError::General(
                            "a merged file has more leaf columns than writers".into(),
                        )
                    })?;
                    writer.write(&leaf)?;
                }
            }
            self.rows += n;
            at += n;
            if self.rows >= MERGE_ROW_GROUP_ROWS {
                self.flush(w)?;
            }
        }
        Ok(())
    }

    fn flush(&mut self, w: &mut SerializedFileWriter<File>) -> Result<(), SinkError> {
        if self.rows == 0 {
            return Ok(());
        }
        let mut out = w.next_row_group()?;
        for writer in std::mem::take(&mut self.writers) {
            writer.close()?.append_to_row_group(&mut out)?;
        }
        out.close()?;
        self.rows = 0;
        Ok(())
    }
}

fn write_parquet(path: &Path, batch: &RecordBatch, props: &WriterProperties) -> Result<(), SinkError> {
    let file = File::create(path).map_err(io(path))?;
    let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props.clone()))?;
    w.write(batch)?;
    let file = w.into_inner()?;
    file.sync_all().map_err(io(path))
}

/// Sorted by attribution then time: one department's (and team's) rows of a day are contiguous, so row
/// group statistics let a budget or showback filter skip most of the file.
fn sort_for_reports(b: &RecordBatch) -> Result<RecordBatch, SinkError> {
    let keys = ["tenant", "department", "team", "project", "user", "ts_start"];
    let mut cols = Vec::with_capacity(keys.len());
    for k in keys {
        let values = column(b, k)?.clone();
        cols.push(SortColumn { values, options: None });
    }
    let idx = lexsort_to_indices(&cols, None)?;
    Ok(take_record_batch(b, &idx)?)
}

fn column<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, SinkError> {
    b.column_by_name(name).ok_or_else(|| SinkError::Join(format!("column {name} missing in a Parquet file")))
}

/// Joins a row's dimension values into one hash key.
const SEP: char = '\u{1f}';

#[derive(Default)]
struct Acc {
    sums: [u64; 11],
    latency: BTreeMap<u16, u64>,
    ttft: BTreeMap<u16, u64>,
}

/// The day's rollup rows: one per combination of [`ROLLUP_DIMENSIONS`].
fn summarize(b: &RecordBatch) -> Result<RecordBatch, SinkError> {
    let dims: Vec<_> = ROLLUP_DIMENSIONS
        .iter()
        .map(|d| column(b, d).map(|c| c.as_string::<i32>().clone()))
        .collect::<Result<_, _>>()?;
    let u64s: Vec<_> =
        ["input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "reasoning_tokens"]
            .iter()
            .chain(["cost_nanousd", "saved_nanousd"].iter())
            .map(|c| column(b, c).map(|a| a.as_primitive::<UInt64Type>().clone()))
            .collect::<Result<_, _>>()?;
    let latency = column(b, "latency_ms")?.as_primitive::<UInt32Type>().clone();
    let ttft = column(b, "ttft_ms")?.as_primitive::<UInt32Type>().clone();
    let cache_hit = column(b, "cache_hit")?.as_boolean().clone();
    let finish = column(b, "finish_reason")?.as_string::<i32>().clone();

    // One key string per row (the dimensions joined by a separator that no value holds), reused across
    // rows: a row allocates only when it starts a new group.
    let mut groups: HashMap<String, usize> = HashMap::new();
    let mut accs: Vec<(String, Acc)> = Vec::new();
    let mut key = String::with_capacity(256);
    for i in 0..b.num_rows() {
        key.clear();
        for d in &dims {
            key.push_str(d.value(i));
            key.push(SEP);
        }
        let slot = match groups.get(key.as_str()) {
            Some(s) => *s,
            None => {
                groups.insert(key.clone(), accs.len());
                accs.push((key.clone(), Acc::default()));
                accs.len() - 1
            }
        };
        let acc = &mut accs[slot].1;
        acc.sums[0] += 1; // attempts
                          // calls: each request once, by its last attempt (a retried attempt says so in finish_reason)
        acc.sums[1] += u64::from(finish.value(i) != "retried");
        for (k, col) in u64s.iter().enumerate() {
            acc.sums[2 + k] += col.value(i);
        }
        acc.sums[9] += u64::from(cache_hit.value(i));
        let t = ttft.value(i);
        if t > 0 {
            acc.sums[10] += 1;
            *acc.ttft.entry(latency_bucket(t)).or_default() += 1;
        }
        *acc.latency.entry(latency_bucket(latency.value(i))).or_default() += 1;
    }
    accs.sort_by(|a, b| a.0.cmp(&b.0));

    let mut dim_b: Vec<StringBuilder> = ROLLUP_DIMENSIONS.iter().map(|_| StringBuilder::new()).collect();
    let mut sum_b: Vec<UInt64Builder> = ROLLUP_SUMS.iter().map(|_| UInt64Builder::new()).collect();
    let mut hist_b: Vec<(ListBuilder<UInt16Builder>, ListBuilder<UInt64Builder>)> =
        (0..2).map(|_| (ListBuilder::new(UInt16Builder::new()), ListBuilder::new(UInt64Builder::new()))).collect();
    for (key, acc) in &accs {
        for (bld, v) in dim_b.iter_mut().zip(key.split(SEP)) {
            bld.append_value(v);
        }
        for (bld, v) in sum_b.iter_mut().zip(acc.sums) {
            bld.append_value(v);
        }
        for ((bb, nb), h) in hist_b.iter_mut().zip([&acc.latency, &acc.ttft]) {
            for (bucket, n) in h {
                bb.values().append_value(*bucket);
                nb.values().append_value(*n);
            }
            bb.append(true);
            nb.append(true);
        }
    }
    let mut cols: Vec<ArrayRef> = Vec::new();
    cols.extend(dim_b.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    cols.extend(sum_b.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    for (bb, nb) in hist_b.iter_mut() {
        cols.push(Arc::new(bb.finish()));
        cols.push(Arc::new(nb.finish()));
    }
    // The list fields are declared nullable-item in the schema; the builders agree.
    Ok(RecordBatch::try_new(rollup_schema(), cols)?)
}

/// The sink's side of the lock: before a file is added to a compacted day, the day's summary is removed
/// (it would no longer cover the day), so readers fall back to the raw files for that day.
pub fn invalidate_summary(day_dir: &Path) -> Result<(), SinkError> {
    let s = day_dir.join(SUMMARY_FILE);
    match std::fs::remove_file(&s) {
        Ok(()) => sync_dir(day_dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(SinkError::Io { path: s, source: e }),
    }
}

/// The Parquet sink's committed cursor, as persisted under `<data_dir>/wal` (0 when there is none yet).
pub fn committed_offset(data_dir: &Path) -> u64 {
    crate::wal::Cursor::load(&data_dir.join("wal"), "parquet").map(|c| c.committed).unwrap_or(0)
}

/// The UTC date `days` days before today, `YYYY-MM-DD`: days before it are closed for compaction.
pub fn cutoff_date(days: u32) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    tollgate_events::date_of_day((now / 86_400) as i64 - i64::from(days))
}

/// Compacts closed days every `interval`, and merges the sink files of open days every
/// [`MERGE_EVERY`] (when `cfg.merge_parts` is not 0), for as long as the process runs. A failed run is
/// logged and tried again later; the data stays readable in the meantime.
pub async fn run_compaction(cfg: CompactionConfig, interval: std::time::Duration, after_days: u32) {
    let lock = match CallsLock::open(&cfg.data_dir) {
        Ok(l) => Arc::new(l),
        Err(error) => {
            tracing::error!(%error, "compaction disabled: cannot open the lock file");
            return;
        }
    };
    let tick = if cfg.merge_parts > 0 { interval.min(MERGE_EVERY) } else { interval };
    // The first compaction waits one interval too: a process that starts often (tests, restarts) does
    // not rewrite its files at every start.
    let mut next_compaction = tokio::time::Instant::now() + interval;
    loop {
        tokio::time::sleep(tick).await;
        let compact = tokio::time::Instant::now() >= next_compaction;
        if compact {
            next_compaction = tokio::time::Instant::now() + interval;
        }
        let (c, l) = (cfg.clone(), lock.clone());
        let work = tokio::task::spawn_blocking(move || {
            let committed = committed_offset(&c.data_dir);
            let cutoff = cutoff_date(after_days);
            let mut days = merge_open_days(&c, &l, committed, &cutoff)?;
            if compact {
                days.extend(compact_days(&c, &l, committed, &cutoff)?);
            }
            Ok::<_, SinkError>(days)
        });
        match work.await {
            Ok(Ok(days)) if !days.is_empty() => info!(days = days.len(), "compaction run done"),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "compaction run failed; trying again later"),
            Err(error) => tracing::warn!(%error, "compaction task failed; trying again later"),
        }
    }
}

/// How often open days are checked for sink files to merge.
pub const MERGE_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_events::{CallEvent, CallEventBatchBuilder};

    /// 2026-11-03 00:00 UTC.
    const NOV3: i64 = 1_793_664_000_000_000;
    const DATE: &str = "2026-11-03";

    /// A sink file of events `from..from + n` (one row group, as the sink writes a batch).
    fn part(day: &Path, from: u64, n: u64) {
        let mut b = CallEventBatchBuilder::new();
        for i in from..from + n {
            b.append(&CallEvent {
                event_id: format!("ev-{i:08}"),
                ts_start_us: NOV3 + i as i64,
                cost_nanousd: i,
                ..Default::default()
            });
        }
        let batch = b.finish().unwrap();
        write_parquet(
            &day.join(format!("part-{from:020}.parquet")),
            &batch,
            &writer_props(128 * 1024, Zstd::Fast).unwrap(),
        )
        .unwrap();
    }

    /// Every event id in the day's Parquet files, and the row groups of its merged files.
    fn read_day(day: &Path) -> (Vec<String>, Vec<i64>) {
        let (mut ids, mut groups) = (Vec::new(), Vec::new());
        for name in list(day).unwrap() {
            let f = File::open(day.join(&name)).unwrap();
            // The page index of every row group, copied or written, is readable.
            let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required);
            let meta = ArrowReaderMetadata::load(&f, options).unwrap();
            if name.starts_with("compact-") {
                groups.extend(meta.metadata().row_groups().iter().map(|rg| rg.num_rows()));
            }
            for b in ParquetRecordBatchReaderBuilder::new_with_metadata(f, meta).build().unwrap() {
                let b = b.unwrap();
                ids.extend(column(&b, "event_id").unwrap().as_string::<i32>().iter().map(|s| s.unwrap().to_string()));
            }
        }
        ids.sort();
        (ids, groups)
    }

    fn expected(n: u64) -> Vec<String> {
        (0..n).map(|i| format!("ev-{i:08}")).collect()
    }

    /// A data directory whose day holds one sink file per size, in order; and the events' count.
    fn day_of_parts(sizes: &[u64]) -> (tempfile::TempDir, PathBuf, u64) {
        let dir = tempfile::tempdir().unwrap();
        let day = dir.path().join("calls").join(format!("date={DATE}"));
        std::fs::create_dir_all(&day).unwrap();
        let mut at = 0;
        for &n in sizes {
            part(&day, at, n);
            at += n;
        }
        (dir, day, at)
    }

    #[test]
    fn merge_copies_large_row_groups_and_rewrites_small_ones_every_row_once() {
        // Two batches of a loaded gateway and two of a quiet one, interleaved.
        let (dir, day, at) = day_of_parts(&[10_000, 100, 9_000, 50]);
        let lock = CallsLock::open(dir.path()).unwrap();
        let cfg = CompactionConfig { merge_parts: 2, ..CompactionConfig::new(dir.path().to_path_buf()) };
        let done = merge_open_days(&cfg, &lock, u64::MAX, DATE).unwrap();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].rows, at);
        let names = list(&day).unwrap();
        assert!(names.len() == 1 && names[0].starts_with("compact-"), "{names:?}");
        let (ids, groups) = read_day(&day);
        assert_eq!(ids, expected(at), "every row exactly once");
        // The large row groups as they were, the small ones written again as one.
        assert_eq!(groups, [10_000, 9_000, 150]);
    }

    #[test]
    fn merge_copies_the_sinks_full_batches_as_they_are() {
        // A busy gateway's sink files are full batches of the collector's default `batch_max_rows`; the
        // default merge must copy them, or every call is Parquet-encoded twice (it was, while the copy
        // threshold was 8,192 rows and the batch 4,096).
        let batch = crate::config::CollectorConfig::default().batch_max_rows as u64;
        let (dir, day, at) = day_of_parts(&[batch, batch, batch, 100]);
        let lock = CallsLock::open(dir.path()).unwrap();
        let cfg = CompactionConfig { merge_parts: 2, ..CompactionConfig::new(dir.path().to_path_buf()) };
        merge_open_days(&cfg, &lock, u64::MAX, DATE).unwrap();
        let (ids, groups) = read_day(&day);
        assert_eq!(ids, expected(at), "every row exactly once");
        assert_eq!(groups, [batch as i64, batch as i64, batch as i64, 100]);
    }

    #[test]
    fn merge_of_small_sink_files_writes_row_groups_of_at_most_8192_rows() {
        // The merge's writer holds one row group in memory while it fills it: a merge of thousands of
        // small sink files stays within a few MiB only if those groups stay small.
        let (dir, day, at) = day_of_parts(&[1_000; 10]);
        let lock = CallsLock::open(dir.path()).unwrap();
        let cfg = CompactionConfig { merge_parts: 2, ..CompactionConfig::new(dir.path().to_path_buf()) };
        merge_open_days(&cfg, &lock, u64::MAX, DATE).unwrap();
        let (ids, groups) = read_day(&day);
        assert_eq!(ids, expected(at), "every row exactly once");
        assert_eq!(groups, [8_192, 1_808]);
    }

    #[test]
    fn merges_copy_from_the_sinks_batch_size_within_bounds() {
        let c = |rows| CompactionConfig::new(PathBuf::new()).for_sink_batches(rows).copy_row_group_rows;
        assert_eq!((c(4_096), c(2_000), c(100_000), c(10)), (4_096, 2_000, 8_192, 1_024));
    }

    #[test]
    fn merge_that_stops_at_its_row_cap_leaves_every_row_once() {
        let (dir, day, at) = day_of_parts(&[10_000, 100, 9_000, 50, 8_192]);
        let lock = CallsLock::open(dir.path()).unwrap();
        let cfg = CompactionConfig {
            merge_parts: 2,
            rows_per_file: 15_000,
            ..CompactionConfig::new(dir.path().to_path_buf())
        };
        // The merge takes files until it holds 15,000 rows (the third file passes that) and leaves the
        // rest for the next merge.
        let done = merge_open_days(&cfg, &lock, u64::MAX, DATE).unwrap();
        assert_eq!(done[0].rows, 19_100);
        let names = list(&day).unwrap();
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(read_day(&day).0, expected(at), "every row exactly once after the capped merge");
        // The next merge takes what was left, the merged file being small (under a quarter of the cap)
        // only once there are enough small ones; here the two sink files are enough.
        merge_open_days(&cfg, &lock, u64::MAX, DATE).unwrap();
        assert_eq!(read_day(&day).0, expected(at), "every row exactly once after the second merge");
    }
}
