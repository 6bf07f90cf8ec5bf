//! The query service: answers showback, latency and ad-hoc SQL questions over the call log. Today the
//! engine is DataFusion over the Parquet files the collector writes (`<data_dir>/calls/date=…/`).

mod csv;
mod engine;
mod error;
mod http;
mod params;

pub use engine::{LatencyRow, QueryConfig, QueryService, ShowbackRow, SqlResult, Totals};
pub use error::QueryError;
pub use http::{add_totals, app, showback_csv};
pub use params::{parse_group_by, TimeRange};
