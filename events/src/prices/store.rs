//! Where imported prices and re-price audit records live under the data directory, and reading catalog
//! files of either format. Writes are atomic (temporary file, fsync, rename, directory fsync).

use super::catalog::{litellm_to_catalog, parse_catalog, Catalog, CatalogFormat, LiteLlmReport};
use super::manage::{import_merge, ImportSummary};
use super::reprice::RepriceAudit;
use super::{PriceError, PriceSource, PriceTable};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The catalog `tollgate prices import` maintains.
pub fn catalog_path(data_dir: &Path) -> PathBuf {
    data_dir.join("prices").join("catalog.json")
}

/// The audit trail of `tollgate reprice` (one JSON object per line).
pub fn reprice_audit_path(data_dir: &Path) -> PathBuf {
    data_dir.join("prices").join("reprice-audit.jsonl")
}

fn io_err(path: &Path, e: std::io::Error) -> PriceError {
    PriceError::Catalog(format!("{}: {e}", path.display()))
}

/// The stored catalog, if one was imported.
pub fn load_stored(data_dir: &Path) -> Result<Option<Catalog>, PriceError> {
    let path = catalog_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_catalog(&text, CatalogFormat::Tollgate)
            .map(Some)
            .map_err(|e| PriceError::Catalog(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(&path, e)),
    }
}

/// The built-in table with the stored catalog on top.
pub fn table_with_stored(data_dir: &Path) -> Result<PriceTable, PriceError> {
    let mut t = PriceTable::builtin();
    if let Some(c) = load_stored(data_dir)? {
        t.merge_catalog(&c, PriceSource::Catalog)?;
    }
    Ok(t)
}

/// Reads a catalog file in any supported format (detected from its name and content).
pub fn read_catalog_file(path: &Path) -> Result<(Catalog, Option<LiteLlmReport>), PriceError> {
    let text = std::fs::read_to_string(path).map_err(|e| io_err(path, e))?;
    let name = path.to_string_lossy();
    let fail = |e: PriceError| PriceError::Catalog(format!("{}: {e}", path.display()));
    match CatalogFormat::detect(&name, &text) {
        CatalogFormat::LiteLlm => litellm_to_catalog(&text).map(|(c, r)| (c, Some(r))).map_err(fail),
        f => parse_catalog(&text, f).map(|c| (c, None)).map_err(fail),
    }
}

/// Imports `file` into the stored catalog: new and changed prices take effect from `effective_from`
/// (RFC 3339). Returns what changed.
pub fn import_file(
    data_dir: &Path,
    file: &Path,
    effective_from: &str,
    stamp: &str,
) -> Result<(ImportSummary, Option<LiteLlmReport>), PriceError> {
    let (incoming, report) = read_catalog_file(file)?;
    let stored = load_stored(data_dir)?;
    let (merged, summary) = import_merge(stored, &incoming, effective_from, stamp)?;
    let text = serde_json::to_string_pretty(&merged).map_err(|e| PriceError::Catalog(e.to_string()))?;
    write_atomically(&catalog_path(data_dir), text.as_bytes())?;
    Ok((summary, report))
}

/// Appends one audit record.
pub fn append_reprice_audit(data_dir: &Path, audit: &RepriceAudit) -> Result<(), PriceError> {
    let path = reprice_audit_path(data_dir);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    }
    let mut line = serde_json::to_vec(audit).map_err(|e| PriceError::Catalog(e.to_string()))?;
    line.push(b'\n');
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| io_err(&path, e))?;
    f.write_all(&line).and_then(|_| f.sync_data()).map_err(|e| io_err(&path, e))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), PriceError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let tmp = path.with_extension("json.tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| io_err(path, e))
}
