//! Schema migrations: the SQL files under `migrations/`, compiled into the binary, applied in order and
//! recorded in `schema_migrations`. A migration's statements are idempotent (`IF NOT EXISTS`), so one that
//! failed half-way runs again from its first statement once the cause is fixed.

use crate::config::ClickHouseConfig;
use crate::error::ChError;
use crate::{fetch_json, run};
use std::time::Duration;
use tracing::{info, warn};

pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in order. Add a file under `migrations/` and a line here.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "calls", sql: include_str!("../../migrations/0001_calls.sql") },
    Migration { version: 2, name: "event_v2", sql: include_str!("../../migrations/0002_event_v2.sql") },
    Migration { version: 141, name: "usage_capped", sql: include_str!("../../migrations/0141_usage_capped.sql") },
    Migration {
        version: 142,
        name: "price_adjustments",
        sql: include_str!("../../migrations/0142_price_adjustments.sql"),
    },
    Migration { version: 161, name: "calls_daily", sql: include_str!("../../migrations/0161_calls_daily.sql") },
    Migration {
        version: 181,
        name: "endpoint_responses",
        sql: include_str!("../../migrations/0181_endpoint_responses.sql"),
    },
];

const LEDGER_DDL: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, \
     checksum String, applied_at DateTime('UTC')) ENGINE = MergeTree ORDER BY version";

impl Migration {
    /// The statements of the file: comments dropped, split at `;`.
    pub fn statements(&self) -> Vec<String> {
        let text: String = self
            .sql
            .lines()
            .map(|l| match l.find("--") {
                Some(i) => &l[..i],
                None => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        text.split(';').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
    }

    /// FNV-1a of the file's text: tells whether an applied migration was edited afterwards.
    pub fn checksum(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.sql.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:016x}")
    }
}

fn is_add_column(stmt: &str) -> bool {
    let s = stmt.to_ascii_uppercase();
    s.starts_with("ALTER TABLE") && s.contains("ADD COLUMN")
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("migration {version:04}_{name} failed: {source}")]
    Failed { version: u32, name: &'static str, source: ChError },
    #[error("{0}")]
    Server(#[from] ChError),
}

/// The statements to run for one migration statement: itself on one server, its cluster form
/// ([`crate::cluster::render`]) when `clickhouse.cluster` is set.
fn rendered(cfg: &ClickHouseConfig, m: &Migration, stmt: &str) -> Result<Vec<String>, MigrateError> {
    match &cfg.cluster {
        None => Ok(vec![stmt.to_string()]),
        Some(cluster) => crate::cluster::render(stmt, cluster, &cfg.database).map_err(|e| MigrateError::Failed {
            version: m.version,
            name: m.name,
            source: ChError::Rejected { code: 0, message: e },
        }),
    }
}

/// Applies every migration not yet recorded; returns the versions applied now.
pub async fn migrate(cfg: &ClickHouseConfig) -> Result<Vec<u32>, MigrateError> {
    let timeout = Duration::from_millis(cfg.request_timeout_ms);
    let server = cfg.server_client();
    let on_cluster = cfg.cluster.as_ref().map(|c| format!(" ON CLUSTER `{c}`")).unwrap_or_default();
    run(server.query_raw(&format!("CREATE DATABASE IF NOT EXISTS `{}`{on_cluster}", cfg.database)), timeout).await?;
    let db = cfg.client();
    let ledger = match &cfg.cluster {
        None => LEDGER_DDL.to_string(),
        Some(c) => crate::cluster::ledger_ddl(c, &cfg.database),
    };
    run(db.query_raw(&ledger), timeout).await?;
    let rows =
        fetch_json(db.query_raw("SELECT version, any(checksum) FROM schema_migrations GROUP BY version"), timeout)
            .await?;
    let mut applied: Vec<(u32, String)> = Vec::new();
    for r in rows {
        let version = r.first().and_then(|v| v.as_u64()).unwrap_or(0) as u32;
        let sum = r.get(1).and_then(|v| v.as_str()).unwrap_or("").to_string();
        applied.push((version, sum));
    }
    let mut done = Vec::new();
    for m in MIGRATIONS {
        if let Some((_, sum)) = applied.iter().find(|(v, _)| *v == m.version) {
            if *sum != m.checksum() {
                warn!(version = m.version, name = m.name, "an applied migration was edited since; not run again");
            }
            continue;
        }
        let mut statements = Vec::new();
        for stmt in m.statements() {
            statements.extend(rendered(cfg, m, &stmt)?);
        }
        for stmt in statements {
            // A backfill through Distributed tables must have landed on every shard before the migration
            // counts as applied; the setting is harmless elsewhere.
            let q = db.query_raw(&stmt).with_setting("insert_distributed_sync", "1");
            // A backfill reads the whole call log: give it up to an hour rather than the report timeout.
            let limit = if stmt.starts_with("INSERT") { timeout.max(Duration::from_secs(3_600)) } else { timeout };
            match run(q, limit).await {
                Ok(()) => {}
                // 18.16 has no `ADD COLUMN IF NOT EXISTS`: a column added by an earlier, interrupted run of
                // this migration is already there (code 44), which is what the statement wanted.
                Err(e) if is_add_column(&stmt) && e.code() == Some(44) => {}
                Err(source) => return Err(MigrateError::Failed { version: m.version, name: m.name, source }),
            }
        }
        let record = db
            .query("INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, now())")
            .bind(m.version)
            .bind(m.name)
            .bind(m.checksum());
        run(record, timeout).await?;
        info!(version = m.version, name = m.name, database = %cfg.database, "migration applied");
        done.push(m.version);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_split_into_statements_without_comments() {
        for m in MIGRATIONS {
            let stmts = m.statements();
            assert!(!stmts.is_empty(), "{} has no statements", m.name);
            for s in stmts {
                assert!(!s.contains("--"));
                assert!(["CREATE", "ALTER", "TRUNCATE", "INSERT"].iter().any(|k| s.starts_with(k)), "{s}");
            }
        }
        let versions: Vec<u32> = MIGRATIONS.iter().map(|m| m.version).collect();
        let mut sorted = versions.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(versions, sorted, "versions must be unique and in order");
    }
}
