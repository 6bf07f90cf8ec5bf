//! The query service: answers showback, latency and ad-hoc SQL questions over the call log, from
//! DataFusion over the Parquet files the collector writes (`<data_dir>/calls/date=…/`) or from ClickHouse.

mod bounded;
mod clickhouse;
mod csv;
mod engine;
mod error;
mod http;
mod params;
mod sqlguard;

pub use clickhouse::clickhouse_report_sql;
pub use engine::{Engine, LatencyRow, QueryConfig, QueryService, ShowbackRow, SpendFilter, SqlResult, Totals};
pub use error::QueryError;
pub use http::{add_totals, app, showback_csv};
pub use params::{month_range, parse_group_by, TimeRange};
