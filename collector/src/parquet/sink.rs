//! Batch → Parquet files. Each event has an offset (a sequence number persisted in
//! `<data_dir>/collector.offset`); a file is named after the offset of its first event, so writing the
//! same batch again replaces the file instead of doubling its money. Files are written to a hidden temp
//! name, fsynced and renamed, so readers never see half a file.

use super::config::ParquetSinkConfig;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tollgate_events::{to_record_batch, CallEvent};

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

pub struct ParquetSink {
    cfg: ParquetSinkConfig,
    next_offset: u64,
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
        Ok(ParquetSink { cfg, next_offset })
    }

    pub fn calls_dir(&self) -> PathBuf {
        self.cfg.data_dir.join("calls")
    }

    /// Writes one batch (one file per UTC date it spans) and then persists the next offset.
    pub async fn write(&mut self, events: Arc<Vec<CallEvent>>) -> Result<(), SinkError> {
        let cfg = self.cfg.clone();
        let first = self.next_offset;
        let n = events.len() as u64;
        tokio::task::spawn_blocking(move || write_batch(&cfg, first, &events))
            .await
            .map_err(|e| SinkError::Join(e.to_string()))??;
        self.next_offset = first + n;
        let path = offset_path(&self.cfg.data_dir);
        write_atomically(&path, self.next_offset.to_string().as_bytes())?;
        Ok(())
    }
}

fn offset_path(data_dir: &Path) -> PathBuf {
    data_dir.join("collector.offset")
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), SinkError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn write_batch(cfg: &ParquetSinkConfig, first_offset: u64, events: &[CallEvent]) -> Result<(), SinkError> {
    // Group by date, keeping each group's first offset.
    let mut groups: BTreeMap<String, (u64, Vec<CallEvent>)> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        let g = groups.entry(e.date()).or_insert_with(|| (first_offset + i as u64, Vec::new()));
        g.1.push(e.clone());
    }
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_max_row_group_row_count(Some(cfg.row_group_rows.max(1)))
        .build();
    for (date, (offset, rows)) in groups {
        let dir = cfg.data_dir.join("calls").join(format!("date={date}"));
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let name = format!("part-{offset:020}.parquet");
        let tmp = dir.join(format!(".{name}.tmp"));
        let batch = to_record_batch(&rows)?;
        let file = File::create(&tmp).map_err(io(&tmp))?;
        let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props.clone()))?;
        w.write(&batch)?;
        let file = w.into_inner()?;
        file.sync_all().map_err(io(&tmp))?;
        let dst = dir.join(&name);
        std::fs::rename(&tmp, &dst).map_err(io(&dst))?;
        File::open(&dir).and_then(|d| d.sync_all()).map_err(io(&dir))?;
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
        s.write(Arc::new(vec![ev(day1, 1), ev(day2, 2), ev(day1, 3)])).await.unwrap();
        assert!(dir.join("calls/date=2023-11-14/part-00000000000000000000.parquet").exists());
        assert!(dir.join("calls/date=2023-11-15/part-00000000000000000001.parquet").exists());
        s.write(Arc::new(vec![ev(day1, 4)])).await.unwrap();
        assert!(dir.join("calls/date=2023-11-14/part-00000000000000000003.parquet").exists());
        // A reopened sink continues after the last offset instead of overwriting.
        let s2 = ParquetSink::open(ParquetSinkConfig::new(dir.clone())).unwrap();
        assert_eq!(s2.next_offset, 4);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
