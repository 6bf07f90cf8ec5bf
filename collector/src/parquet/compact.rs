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

use super::sink::SinkError;
use arrow::array::{ArrayRef, AsArray, ListBuilder, RecordBatch, StringBuilder, UInt16Builder, UInt64Builder};
use arrow::compute::{concat_batches, lexsort_to_indices, take_record_batch, SortColumn};
use arrow::datatypes::{UInt32Type, UInt64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
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
}

impl CompactionConfig {
    pub fn new(data_dir: PathBuf) -> CompactionConfig {
        CompactionConfig { data_dir, rows_per_file: 4 * 1024 * 1024, row_group_rows: 128 * 1024 }
    }
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
    let calls = cfg.data_dir.join("calls");
    let mut done = Vec::new();
    if !calls.exists() {
        return Ok(done);
    }
    // One compaction at a time (the background task and `tollgate compact` may meet): the other skips.
    let path = cfg.data_dir.join("compaction.lock");
    let guard = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io(&path))?;
    match guard.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            info!("another compaction is running; skipped");
            return Ok(done);
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(SinkError::Io { path, source: e }),
    }
    // Left by a run that crashed: a half-built day, or a day's old files after the exchange. Either is
    // redundant (the day directory under `calls/` is complete in both cases).
    let staging_root = cfg.data_dir.join("compaction");
    if staging_root.exists() {
        std::fs::remove_dir_all(&staging_root).map_err(io(&staging_root))?;
    }
    for name in list(&calls)? {
        let Some(date) = name.strip_prefix("date=") else { continue };
        if date >= before {
            continue;
        }
        if let Some(d) = compact_day(cfg, lock, committed, date)? {
            done.push(d);
        }
    }
    Ok(done)
}

/// Compacts one day if it has sink files (or compacted files without a summary) and all of them are
/// below `committed`; `None` when there is nothing to do.
pub fn compact_day(
    cfg: &CompactionConfig,
    lock: &CallsLock,
    committed: u64,
    date: &str,
) -> Result<Option<DayCompacted>, SinkError> {
    let day = cfg.data_dir.join("calls").join(format!("date={date}"));
    let mut inputs = Vec::new();
    let (mut parts, mut summary) = (0, false);
    let mut first_offset = u64::MAX;
    for name in list(&day)? {
        match classify(&name) {
            DayFile::Part(o) if o >= committed => return Ok(None), // the sink may still rewrite it
            DayFile::Part(o) => {
                parts += 1;
                first_offset = first_offset.min(o);
                inputs.push(name);
            }
            DayFile::Compacted => inputs.push(name),
            DayFile::Summary => summary = true,
            DayFile::Other => {}
        }
    }
    if inputs.is_empty() || (parts == 0 && summary) {
        return Ok(None);
    }
    let staging_root = cfg.data_dir.join("compaction");
    let staging = staging_root.join(format!("date={date}"));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    std::fs::create_dir_all(&staging).map_err(io(&staging))?;

    let mut batches = Vec::new();
    for name in &inputs {
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
    let rows = sorted.num_rows() as u64;

    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_max_row_group_row_count(Some(cfg.row_group_rows.max(1)))
        .build();
    let tag = if first_offset == u64::MAX { 0 } else { first_offset };
    // A generation in the name: a day compacted again gets new file names, never new contents under an
    // old name that a reader may have cached metadata for.
    let generation =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let mut files_after = 0;
    let per_file = cfg.rows_per_file.max(1);
    let mut at = 0;
    while at < sorted.num_rows() {
        let n = per_file.min(sorted.num_rows() - at);
        let path = staging.join(format!("compact-{tag:020}-{generation}-{files_after:04}.parquet"));
        write_parquet(&path, &sorted.slice(at, n), &props)?;
        files_after += 1;
        at += n;
    }
    let summary_batch = summarize(&sorted)?;
    let summary_rows = summary_batch.num_rows() as u64;
    drop(sorted);
    write_parquet(&staging.join(SUMMARY_FILE), &summary_batch, &props)?;
    sync_dir(&staging)?;

    lock.with(|| {
        // Files the sink added meanwhile (late events) go along; the summary does not cover them.
        let mut late = 0;
        for name in list(&day)? {
            let known = inputs.contains(&name);
            if !known && matches!(classify(&name), DayFile::Part(_)) {
                let (from, to) = (day.join(&name), staging.join(&name));
                std::fs::hard_link(&from, &to).map_err(io(&to))?;
                late += 1;
            }
        }
        if late > 0 {
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
    info!(date, files_before = inputs.len(), files_after, rows, summary_rows, "day compacted");
    Ok(Some(DayCompacted { date: date.to_string(), files_before: inputs.len(), files_after, rows, summary_rows }))
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

/// Compacts closed days every `interval`, for as long as the process runs. A failed run is logged and
/// tried again at the next interval; the data stays readable in the meantime.
pub async fn run_compaction(cfg: CompactionConfig, interval: std::time::Duration, after_days: u32) {
    let lock = match CallsLock::open(&cfg.data_dir) {
        Ok(l) => Arc::new(l),
        Err(error) => {
            tracing::error!(%error, "compaction disabled: cannot open the lock file");
            return;
        }
    };
    loop {
        // The first run waits one interval too: a process that starts often (tests, restarts) does not
        // rewrite its files at every start.
        tokio::time::sleep(interval).await;
        let (c, l) = (cfg.clone(), lock.clone());
        let work = tokio::task::spawn_blocking(move || {
            let committed = committed_offset(&c.data_dir);
            compact_days(&c, &l, committed, &cutoff_date(after_days))
        });
        match work.await {
            Ok(Ok(days)) if !days.is_empty() => info!(days = days.len(), "compaction run done"),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "compaction run failed; trying again later"),
            Err(error) => tracing::warn!(%error, "compaction task failed; trying again later"),
        }
    }
}
