//! Re-pricing the Parquet call log: every file of the dates in range is read, the events in scope get
//! their cost and price id recomputed, and a file with any change is rewritten next to itself and
//! renamed over the old one (fsynced, then the directory), so a reader sees the old file or the new one,
//! never half of either.

use arrow::array::{ArrayRef, AsArray, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{TimestampMicrosecondType, UInt64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tollgate_events::prices::reprice::{reprice_event, RepriceChange, RepriceScope};
use tollgate_events::{date_of_day, CallEvent, PriceTable, UsageSource};

#[derive(Debug, thiserror::Error)]
pub enum RepriceError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
}

/// What a Parquet re-price did.
#[derive(Debug, Default)]
pub struct ParquetReprice {
    pub files_read: usize,
    pub files_rewritten: usize,
    pub changes: Vec<RepriceChange>,
}

/// Re-prices the events in `scope` under `data_dir/calls/`. With `dry_run` nothing is written.
pub fn reprice_parquet(
    data_dir: &Path,
    table: &PriceTable,
    scope: &RepriceScope,
    dry_run: bool,
) -> Result<ParquetReprice, RepriceError> {
    let mut out = ParquetReprice::default();
    let calls = data_dir.join("calls");
    let first = date_of_day(scope.from_us.div_euclid(86_400_000_000));
    let last = date_of_day((scope.to_us.saturating_sub(1)).div_euclid(86_400_000_000));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RepriceError::Io { path, source }
    };
    let mut dirs: Vec<PathBuf> = match std::fs::read_dir(&calls) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                name.strip_prefix("date=").is_some_and(|d| d >= first.as_str() && d <= last.as_str())
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io(&calls)(e)),
    };
    dirs.sort();
    for dir in dirs {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(io(&dir))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                name.ends_with(".parquet") && !name.starts_with('.')
            })
            .collect();
        files.sort();
        for path in files {
            out.files_read += 1;
            let (batches, changes) = reprice_file(&path, table, scope)?;
            if changes.is_empty() {
                continue;
            }
            out.changes.extend(changes);
            if !dry_run {
                rewrite(&path, &batches)?;
                out.files_rewritten += 1;
            }
        }
    }
    Ok(out)
}

fn bad(path: &Path, message: impl ToString) -> RepriceError {
    RepriceError::File { path: path.to_path_buf(), message: message.to_string() }
}

/// Reads one file and returns its batches with corrected `cost_nanousd`/`price_id` columns.
fn reprice_file(
    path: &Path,
    table: &PriceTable,
    scope: &RepriceScope,
) -> Result<(Vec<RecordBatch>, Vec<RepriceChange>), RepriceError> {
    let file = File::open(path).map_err(|source| RepriceError::Io { path: path.to_path_buf(), source })?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).and_then(|b| b.build()).map_err(|e| bad(path, e))?;
    let mut batches = Vec::new();
    let mut changes = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| bad(path, e))?;
        let (batch, mut c) = reprice_batch(path, &batch, table, scope)?;
        changes.append(&mut c);
        batches.push(batch);
    }
    Ok((batches, changes))
}

fn reprice_batch(
    path: &Path,
    batch: &RecordBatch,
    table: &PriceTable,
    scope: &RepriceScope,
) -> Result<(RecordBatch, Vec<RepriceChange>), RepriceError> {
    let schema = batch.schema();
    let col = |name: &str| -> Result<&ArrayRef, RepriceError> {
        let i = schema.index_of(name).map_err(|e| bad(path, e))?;
        Ok(batch.column(i))
    };
    let text = |name: &str| -> Result<&StringArray, RepriceError> {
        col(name)?.as_string_opt::<i32>().ok_or_else(|| bad(path, format!("column {name} is not text")))
    };
    let num = |name: &str| -> Result<&UInt64Array, RepriceError> {
        col(name)?.as_primitive_opt::<UInt64Type>().ok_or_else(|| bad(path, format!("column {name} is not UInt64")))
    };
    let ts = col("ts_start")?
        .as_primitive_opt::<TimestampMicrosecondType>()
        .ok_or_else(|| bad(path, "column ts_start is not a timestamp"))?;
    let (event_id, served, requested, upstream, price_id, usage_source) = (
        text("event_id")?,
        text("served_model")?,
        text("requested_model")?,
        text("upstream")?,
        text("price_id")?,
        text("usage_source")?,
    );
    let (input, output, cached, write, reasoning, cost) = (
        num("input_tokens")?,
        num("output_tokens")?,
        num("cached_input_tokens")?,
        num("cache_write_tokens")?,
        num("reasoning_tokens")?,
        num("cost_nanousd")?,
    );
    let mut new_cost: Vec<u64> = cost.values().to_vec();
    let mut new_price: Vec<String> = (0..batch.num_rows()).map(|i| price_id.value(i).to_string()).collect();
    let mut changes = Vec::new();
    for i in 0..batch.num_rows() {
        if !scope.covers(ts.value(i), served.value(i), requested.value(i)) {
            continue;
        }
        let ev = CallEvent {
            event_id: event_id.value(i).to_string(),
            ts_start_us: ts.value(i),
            served_model: served.value(i).into(),
            requested_model: requested.value(i).into(),
            upstream: upstream.value(i).into(),
            input_tokens: input.value(i),
            output_tokens: output.value(i),
            cached_input_tokens: cached.value(i),
            cache_write_tokens: write.value(i),
            reasoning_tokens: reasoning.value(i),
            usage_source: if usage_source.value(i) == "capped" { UsageSource::Capped } else { UsageSource::Provider },
            cost_nanousd: cost.value(i),
            price_id: price_id.value(i).into(),
            ..Default::default()
        };
        if let Some(c) = reprice_event(table, &ev) {
            new_cost[i] = c.new_cost_nanousd;
            new_price[i] = c.new_price_id.clone();
            changes.push(c);
        }
    }
    if changes.is_empty() {
        return Ok((batch.clone(), changes));
    }
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    let ci = schema.index_of("cost_nanousd").map_err(|e| bad(path, e))?;
    let pi = schema.index_of("price_id").map_err(|e| bad(path, e))?;
    columns[ci] = Arc::new(UInt64Array::from(new_cost));
    columns[pi] = Arc::new(StringArray::from(new_price));
    let out = RecordBatch::try_new(schema.clone(), columns).map_err(|e| bad(path, e))?;
    debug_assert_eq!(out.num_rows(), batch.num_rows());
    Ok((out, changes))
}

/// Writes `batches` to a temporary file beside `path`, fsyncs it, renames it over `path` and fsyncs the
/// directory.
fn rewrite(path: &Path, batches: &[RecordBatch]) -> Result<(), RepriceError> {
    let Some(first) = batches.first() else { return Ok(()) };
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("part.parquet");
    let tmp = dir.join(format!(".{name}.reprice.tmp"));
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).map_err(|e| bad(path, e))?))
        .build();
    let file = File::create(&tmp).map_err(|source| RepriceError::Io { path: tmp.clone(), source })?;
    let mut w = ArrowWriter::try_new(file, first.schema(), Some(props)).map_err(|e| bad(&tmp, e))?;
    for b in batches {
        w.write(b).map_err(|e| bad(&tmp, e))?;
    }
    let file = w.into_inner().map_err(|e| bad(&tmp, e))?;
    file.sync_all().map_err(|source| RepriceError::Io { path: tmp.clone(), source })?;
    std::fs::rename(&tmp, path).map_err(|source| RepriceError::Io { path: path.to_path_buf(), source })?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(|source| RepriceError::Io { path: dir.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_events::{PriceSpec, SCHEMA_VERSION};

    #[test]
    fn rewrites_only_files_with_changes_and_keeps_other_rows() {
        let dir = tempfile::tempdir().unwrap();
        let day = 1_795_000_000_000_000; // 2026-11-18
        let mk = |id: &str, model: &str, ts: i64| CallEvent {
            schema_version: SCHEMA_VERSION,
            event_id: id.into(),
            ts_start_us: ts,
            served_model: model.into(),
            requested_model: model.into(),
            input_tokens: 1_000,
            output_tokens: 100,
            cost_nanousd: 1,
            price_id: "old".into(),
            ..Default::default()
        };
        let write = |name: &str, evs: Vec<CallEvent>| {
            let d = dir.path().join("calls").join(format!("date={}", date_of_day(evs[0].day())));
            std::fs::create_dir_all(&d).unwrap();
            let b = tollgate_events::to_record_batch(&evs).unwrap();
            let mut w = ArrowWriter::try_new(File::create(d.join(name)).unwrap(), b.schema(), None).unwrap();
            w.write(&b).unwrap();
            w.close().unwrap();
        };
        write("part-1.parquet", vec![mk("a", "m", day), mk("b", "other", day + 1)]);
        write("part-2.parquet", vec![mk("c", "other", day + 2)]);
        let mut t = PriceTable::default();
        t.set("m", &PriceSpec { input: "2".into(), output: "10".into(), ..Default::default() }, "config").unwrap();
        let scope = RepriceScope { from_us: day, to_us: day + 86_400_000_000, model: Some("m".into()) };
        let r = reprice_parquet(dir.path(), &t, &scope, false).unwrap();
        assert_eq!((r.files_read, r.files_rewritten, r.changes.len()), (2, 1, 1));
        // 1000 x $2/M + 100 x $10/M = 2_000_000 + 1_000_000 nano-USD.
        assert_eq!(r.changes[0].new_cost_nanousd, 3_000_000);
        let again = reprice_parquet(dir.path(), &t, &scope, false).unwrap();
        assert!(again.changes.is_empty(), "re-pricing twice changes nothing the second time");
    }
}
