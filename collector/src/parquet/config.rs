//! What the user writes for the Parquet sink.

use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct ParquetSinkConfig {
    /// Data directory; files go to `<data_dir>/calls/date=YYYY-MM-DD/part-<offset>.parquet`.
    pub data_dir: PathBuf,
    /// Rows per row group (large groups compress and scan best; 128k is DataFusion's sweet spot).
    pub row_group_rows: usize,
}

impl ParquetSinkConfig {
    pub fn new(data_dir: PathBuf) -> ParquetSinkConfig {
        ParquetSinkConfig { data_dir, row_group_rows: 128 * 1024 }
    }
}
