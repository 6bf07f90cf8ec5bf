//! `[clickhouse]`: where the fleet store is and how the sink batches for it.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// HTTP(S) endpoint of the server, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    /// Database holding `calls` and `schema_migrations`; created by the migrations when missing.
    #[serde(default = "default_database")]
    pub database: String,
    #[serde(default = "default_user")]
    pub user: String,
    /// Name of the environment variable holding the password (never the password itself).
    #[serde(default)]
    pub password_env: Option<String>,
    /// A read-only user for `/v1/sql`, if the server has one; otherwise the main user with `readonly=1`.
    #[serde(default)]
    pub sql_user: Option<String>,
    #[serde(default)]
    pub sql_password_env: Option<String>,
    /// Longest a report query or a migration statement may take.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Longest an insert may take before it counts as failed (and is checked before being sent again).
    #[serde(default = "default_insert_timeout_ms")]
    pub insert_timeout_ms: u64,
    /// A batch is inserted when it holds this many rows…
    #[serde(default = "default_batch_max_rows")]
    pub batch_max_rows: usize,
    /// …or this many bytes of RowBinary…
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// …or when this much time has passed since the last insert.
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// Apply pending migrations when the collector starts.
    #[serde(default = "default_true")]
    pub migrate_on_start: bool,
    /// Names this collector in batch ids; generated once and kept in the data dir when not set. Must be
    /// unique across the collectors that feed one database.
    #[serde(default)]
    pub collector_id: Option<String>,
    /// Name of a cluster in the servers' `<remote_servers>`: migrations then run `ON CLUSTER`, each
    /// table becomes a `ReplicatedMergeTree` local table (`<name>_local`, ZooKeeper path
    /// `/clickhouse/tables/{shard}/<database>/<name>_local`, replica `{replica}`: both macros must be set
    /// on every server, `{replica}` unique per server) under a `Distributed` table with the plain name,
    /// which the sink inserts into and the reports read. Unset: one server, plain MergeTree tables.
    #[serde(default)]
    pub cluster: Option<String>,
}

fn default_database() -> String {
    "tollgate".into()
}
fn default_user() -> String {
    "default".into()
}
fn default_request_timeout_ms() -> u64 {
    30_000
}
fn default_insert_timeout_ms() -> u64 {
    30_000
}
fn default_batch_max_rows() -> usize {
    100_000
}
fn default_batch_max_bytes() -> usize {
    32 * 1024 * 1024
}
fn default_flush_interval_ms() -> u64 {
    1_000
}
fn default_true() -> bool {
    true
}

/// ClickHouse parses a whole insert as one block up to this many rows; a batch must fit in one block so
/// that it lands as one part, all or nothing.
pub const MAX_BATCH_ROWS: usize = 1_048_576;

impl ClickHouseConfig {
    pub fn new(url: impl Into<String>, database: impl Into<String>) -> ClickHouseConfig {
        ClickHouseConfig {
            url: url.into(),
            database: database.into(),
            user: default_user(),
            password_env: None,
            sql_user: None,
            sql_password_env: None,
            request_timeout_ms: default_request_timeout_ms(),
            insert_timeout_ms: default_insert_timeout_ms(),
            batch_max_rows: default_batch_max_rows(),
            batch_max_bytes: default_batch_max_bytes(),
            flush_interval_ms: default_flush_interval_ms(),
            migrate_on_start: true,
            collector_id: None,
            cluster: None,
        }
    }

    /// Pure checks; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(format!("clickhouse.url: must start with http:// or https://, got `{}`", self.url));
        }
        if !is_identifier(&self.database) {
            return Err(format!(
                "clickhouse.database: `{}` is not a plain identifier ([A-Za-z_][A-Za-z0-9_]*)",
                self.database
            ));
        }
        if self.batch_max_rows == 0 || self.batch_max_rows > MAX_BATCH_ROWS {
            return Err(format!("clickhouse.batch_max_rows: must be between 1 and {MAX_BATCH_ROWS}"));
        }
        if self.batch_max_bytes < 1024 {
            return Err("clickhouse.batch_max_bytes: must be at least 1024".into());
        }
        for (key, v) in [
            ("request_timeout_ms", self.request_timeout_ms),
            ("insert_timeout_ms", self.insert_timeout_ms),
            ("flush_interval_ms", self.flush_interval_ms),
        ] {
            if v == 0 {
                return Err(format!("clickhouse.{key}: must be greater than 0"));
            }
        }
        for (key, var) in [("password_env", &self.password_env), ("sql_password_env", &self.sql_password_env)] {
            if let Some(var) = var {
                if std::env::var_os(var).is_none() {
                    return Err(format!("clickhouse.{key}: environment variable `{var}` is not set"));
                }
            }
        }
        if let Some(id) = &self.collector_id {
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err("clickhouse.collector_id: use letters, digits, `-` and `_` only".into());
            }
        }
        if let Some(c) = &self.cluster {
            if !is_identifier(c) {
                return Err(format!("clickhouse.cluster: `{c}` is not a plain identifier ([A-Za-z_][A-Za-z0-9_]*)"));
            }
        }
        Ok(())
    }

    fn password(var: &Option<String>) -> Option<String> {
        var.as_ref().and_then(std::env::var_os).map(|v| v.to_string_lossy().into_owned())
    }

    /// A client for the main user, in the configured database.
    pub fn client(&self) -> clickhouse::Client {
        let mut c = self.server_client().with_database(&self.database);
        c = c.with_compression(clickhouse::Compression::Lz4);
        c
    }

    /// A client for the main user without a database (to create it).
    pub fn server_client(&self) -> clickhouse::Client {
        let mut c = clickhouse::Client::default().with_url(&self.url).with_user(&self.user).with_validation(false);
        if let Some(p) = Self::password(&self.password_env) {
            c = c.with_password(p);
        }
        c
    }

    /// The client `/v1/sql` runs analysts' queries with: the read-only user when configured, and
    /// `readonly=1` in any case.
    pub fn sql_client(&self) -> clickhouse::Client {
        let mut c = clickhouse::Client::default()
            .with_url(&self.url)
            .with_user(self.sql_user.as_deref().unwrap_or(&self.user))
            .with_database(&self.database)
            .with_validation(false);
        let pw = if self.sql_user.is_some() { &self.sql_password_env } else { &self.password_env };
        if let Some(p) = Self::password(pw) {
            c = c.with_password(p);
        }
        c
    }
}

pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_key() {
        let mut c = ClickHouseConfig::new("http://127.0.0.1:8123", "tollgate");
        assert!(c.validate().is_ok());
        c.database = "x; DROP".into();
        assert!(c.validate().unwrap_err().starts_with("clickhouse.database"));
        c.database = "ok".into();
        c.url = "tcp://x".into();
        assert!(c.validate().unwrap_err().starts_with("clickhouse.url"));
        c.url = "http://x".into();
        c.batch_max_rows = MAX_BATCH_ROWS + 1;
        assert!(c.validate().unwrap_err().starts_with("clickhouse.batch_max_rows"));
    }
}
