//! The query service: answers showback, latency and ad-hoc SQL questions over the call log, from
//! DataFusion over the Parquet files the collector writes (`<data_dir>/calls/date=…/`) or from ClickHouse.

mod bounded;
mod clickhouse;
mod csv;
mod engine;
mod error;
mod http;
mod params;
mod report;
mod rollup;
mod rollup_clickhouse;
mod rollup_reports;
pub mod routing_stats;
mod spend;
mod sqlguard;

pub use clickhouse::clickhouse_report_sql;
pub use engine::{
    Engine, LatencyRow, QueryConfig, QueryService, ShowbackRow, SpendAnswer, SpendFilter, SpendRequest, SqlResult,
    Totals,
};
pub use error::QueryError;
pub use http::{app, no_store_app};
pub use params::{month_range, parse_group_by, TimeRange};
pub use report::{add_totals, refused_outcomes_sql, Report, CHARGEBACK_BY, UNATTRIBUTED};
pub use rollup::{PercentileMethod, HISTOGRAM_RELATIVE_ERROR};
pub use routing_stats::RoutingStatsRow;
