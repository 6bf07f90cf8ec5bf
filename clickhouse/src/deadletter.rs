//! `tollgate deadletter replay`: lands the batches the ClickHouse sink dead-lettered
//! (`<data_dir>/deadletter/clickhouse-<batch id>.jsonl`) once their cause is fixed (a migration applied,
//! a bad value corrected in the file). Each file is inserted under its original batch id, after checking
//! whether that id is already stored, so running the command twice, or after a crash half-way, stores
//! each event once. A file that landed moves to `deadletter/replayed/`; one the server still refuses
//! stays, with the new message in its first line.

use crate::config::ClickHouseConfig;
use crate::error::ChError;
use crate::sink::{Batch, ClickHouseSink, Landed};
use std::path::{Path, PathBuf};
use tollgate_events::CallEvent;

/// What a replay did, file by file.
#[derive(Debug, Default)]
pub struct ReplayReport {
    /// (file, events) landed now.
    pub inserted: Vec<(PathBuf, u64)>,
    /// (file, events) found already stored.
    pub already_present: Vec<(PathBuf, u64)>,
    /// (file, why) left in place.
    pub failed: Vec<(PathBuf, String)>,
}

/// Replays every dead-letter file under `data_dir`, oldest name first. Stops at the first error that
/// is about the server (unreachable, refused login): the remaining files are untouched.
pub async fn replay(cfg: ClickHouseConfig, data_dir: &Path) -> std::io::Result<ReplayReport> {
    let dir = data_dir.join("deadletter");
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("clickhouse-") && n.ends_with(".jsonl"))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    files.sort();
    let mut report = ReplayReport::default();
    if files.is_empty() {
        return Ok(report);
    }
    let sink = ClickHouseSink::open(cfg, data_dir)?;
    let done_dir = dir.join("replayed");
    for path in files {
        let (batch_id, events) = match read_file(&path) {
            Ok(x) => x,
            Err(why) => {
                report.failed.push((path, why));
                continue;
            }
        };
        let n = events.len() as u64;
        let mut batch = Batch::replay(batch_id, events);
        match sink.write(&mut batch).await {
            Ok(landed @ (Landed::Inserted | Landed::AlreadyPresent)) => {
                std::fs::create_dir_all(&done_dir)?;
                let to = done_dir.join(path.file_name().unwrap_or_default());
                std::fs::rename(&path, &to)?;
                std::fs::File::open(&dir)?.sync_all()?;
                if landed == Landed::Inserted {
                    report.inserted.push((to, n));
                } else {
                    report.already_present.push((to, n));
                }
            }
            Ok(Landed::DeadLettered) => {
                report.failed.push((path, "the server still refuses this batch (see the file's first line)".into()))
            }
            Err(e @ ChError::Unavailable(_)) | Err(e @ ChError::Rejected { .. }) => {
                report.failed.push((path, e.to_string()));
                break;
            }
        }
    }
    Ok(report)
}

/// A dead-letter file: a header line with the batch id, then one event per line.
fn read_file(path: &Path) -> Result<(String, Vec<CallEvent>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: serde_json::Value =
        serde_json::from_str(lines.next().unwrap_or("")).map_err(|e| format!("header line: {e}"))?;
    let batch_id = header
        .get("batch_id")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .ok_or("header line has no batch_id")?
        .to_string();
    let events = lines
        .enumerate()
        .map(|(i, l)| serde_json::from_str::<CallEvent>(l).map_err(|e| format!("line {}: {e}", i + 2)))
        .collect::<Result<Vec<_>, _>>()?;
    if events.is_empty() {
        return Err("no events in the file".into());
    }
    Ok((batch_id, events))
}
