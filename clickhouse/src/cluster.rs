//! The cluster form of the migrations. Migration files are written for one server; with
//! `clickhouse.cluster` set each statement is rendered for a cluster instead:
//!
//! * `CREATE TABLE t (...) ENGINE = E ...` → `t_local` with `ReplicatedE` on every server (`ON CLUSTER`),
//!   plus `t` as a `Distributed` table over the `t_local` of every shard. Writers and readers keep
//!   using `t`; replicas of a shard share the ZooKeeper path `/clickhouse/tables/{shard}/<db>/t_local`.
//! * `ALTER TABLE t ...` → the same change on `t_local` and on `t`.
//! * `CREATE MATERIALIZED VIEW v TO t AS SELECT ... FROM s` → a view on every server from `s_local`
//!   into `t_local`: each shard rolls up its own rows, and a replica gets its rollup rows by replication
//!   (views run on inserts only, not on fetched parts), so nothing is counted twice.
//! * `TRUNCATE TABLE t` → `TRUNCATE TABLE t_local ON CLUSTER`.
//! * `INSERT INTO t SELECT ... FROM s` → through the Distributed tables, synchronously.
//!
//! Names are qualified with the database: a distributed DDL query runs on each server outside the
//! initiator's session. A statement of any other shape is an error, so a new migration cannot silently
//! skip the cluster.

/// Rows of a table go to the shard this expression picks. `calls` is sharded by request, so every
/// attempt of a request lands on one shard and a batch is split the same way each time it is sent
/// (which is what lets a shard recognise a resent block and drop it).
fn sharding_key(table: &str) -> &'static str {
    match table {
        "calls" => "cityHash64(request_id)",
        _ => "rand()",
    }
}

/// The ledger of applied migrations: one replicated table that every server of the cluster shares
/// (one ZooKeeper path for all), so a migration applied through one server is known to all.
pub fn ledger_ddl(cluster: &str, db: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS `{db}`.schema_migrations ON CLUSTER `{cluster}` (version UInt32, name String, \
         checksum String, applied_at DateTime('UTC')) \
         ENGINE = ReplicatedMergeTree('/clickhouse/tollgate/{db}/schema_migrations', '{{replica}}') ORDER BY version"
    )
}

/// Splits off the first identifier (optionally back-quoted) of `s`: (name, rest).
fn ident(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    if let Some(rest) = s.strip_prefix('`') {
        let end = rest.find('`')?;
        return Some((&rest[..end], &rest[end + 1..]));
    }
    let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
    if end == 0 {
        return None;
    }
    Some((&s[..end], &s[end..]))
}

/// `prefix` at the start of `s`, ignoring ASCII case; returns what follows.
fn strip_keyword<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let s = s.trim_start();
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

/// Rewrites every `FROM <table>` of a SELECT to `FROM <db>.<table><suffix>`.
fn qualify_from(select: &str, db: &str, suffix: &str) -> String {
    let mut out = String::with_capacity(select.len() + 32);
    let mut rest = select;
    loop {
        let upper = rest.to_ascii_uppercase();
        let Some(at) = upper.find("FROM ").filter(|&i| i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric())
        else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..at + 5]);
        match ident(&rest[at + 5..]) {
            Some((name, after)) => {
                out.push_str(&format!("`{db}`.`{name}{suffix}`"));
                rest = after;
            }
            None => rest = &rest[at + 5..],
        }
    }
}

/// The Distributed table `name` over every shard's `name_local`.
fn distributed(cluster: &str, db: &str, name: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS `{db}`.`{name}` ON CLUSTER `{cluster}` AS `{db}`.`{name}_local` \
         ENGINE = Distributed('{cluster}', '{db}', '{name}_local', {key})",
        key = sharding_key(name)
    )
}

/// The cluster statements for one single-server migration statement.
pub fn render(stmt: &str, cluster: &str, db: &str) -> Result<Vec<String>, String> {
    let on = format!("ON CLUSTER `{cluster}`");
    if let Some(rest) = strip_keyword(stmt, "CREATE TABLE IF NOT EXISTS") {
        let (name, body) = ident(rest).ok_or("CREATE TABLE without a name")?;
        let upper = body.to_ascii_uppercase();
        let at = upper.rfind("ENGINE = ").ok_or("CREATE TABLE without `ENGINE = `")?;
        let columns = body[..at].trim_start();
        let (engine, after) = ident(&body[at + 9..]).ok_or("CREATE TABLE without an engine name")?;
        // Engine arguments (e.g. SummingMergeTree's columns) follow the replication arguments.
        let (args, tail) = match after.strip_prefix('(') {
            Some(a) => {
                let end = a.find(')').ok_or("unclosed engine arguments")?;
                (if a[..end].trim().is_empty() { String::new() } else { format!(", {}", &a[..end]) }, &a[end + 1..])
            }
            None => (String::new(), after),
        };
        let local = format!(
            "CREATE TABLE IF NOT EXISTS `{db}`.`{name}_local` {on} {columns}ENGINE = Replicated{engine}(\
             '/clickhouse/tables/{{shard}}/{db}/{name}_local', '{{replica}}'{args}){tail}"
        );
        return Ok(vec![local, distributed(cluster, db, name)]);
    }
    if let Some(rest) = strip_keyword(stmt, "CREATE MATERIALIZED VIEW IF NOT EXISTS") {
        let (view, rest) = ident(rest).ok_or("CREATE MATERIALIZED VIEW without a name")?;
        let rest = strip_keyword(rest, "TO").ok_or("a materialized view must write `TO` a table")?;
        let (target, rest) = ident(rest).ok_or("CREATE MATERIALIZED VIEW without a target")?;
        let select = strip_keyword(rest, "AS").ok_or("CREATE MATERIALIZED VIEW without `AS`")?;
        return Ok(vec![format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS `{db}`.`{view}` {on} TO `{db}`.`{target}_local` AS {}",
            qualify_from(select.trim_start(), db, "_local")
        )]);
    }
    if let Some(rest) = strip_keyword(stmt, "ALTER TABLE") {
        let (name, change) = ident(rest).ok_or("ALTER TABLE without a name")?;
        // 18.16 refuses `ALTER ... ON CLUSTER` of a Distributed table when shards have replicas ("isn't
        // replicated, but shard is"): the Distributed table, which holds no data, is made again instead.
        return Ok(vec![
            format!("ALTER TABLE `{db}`.`{name}_local` {on}{change}"),
            format!("DROP TABLE IF EXISTS `{db}`.`{name}` {on}"),
            distributed(cluster, db, name),
        ]);
    }
    if let Some(rest) = strip_keyword(stmt, "TRUNCATE TABLE") {
        let (name, tail) = ident(rest).ok_or("TRUNCATE TABLE without a name")?;
        if !tail.trim().is_empty() {
            return Err("unexpected text after TRUNCATE TABLE <name>".into());
        }
        return Ok(vec![format!("TRUNCATE TABLE `{db}`.`{name}_local` {on}")]);
    }
    if let Some(rest) = strip_keyword(stmt, "INSERT INTO") {
        let (name, select) = ident(rest).ok_or("INSERT INTO without a table")?;
        return Ok(vec![format!("INSERT INTO `{db}`.`{name}` {}", qualify_from(select, db, ""))]);
    }
    Err(format!("no cluster form for the statement `{}`", stmt.chars().take(60).collect::<String>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_statement_has_a_cluster_form() {
        for m in crate::MIGRATIONS {
            for stmt in m.statements() {
                let out = render(&stmt, "c1", "db").unwrap_or_else(|e| panic!("{}: {e}", m.name));
                for s in &out {
                    assert!(s.contains("ON CLUSTER `c1`") || s.starts_with("INSERT INTO `db`."), "{s}");
                    assert!(!s.contains("FROM calls"), "unqualified table in {s}");
                }
            }
        }
    }

    #[test]
    fn tables_become_replicated_local_tables_under_distributed_ones() {
        let out = render(
            "CREATE TABLE IF NOT EXISTS calls (a UInt8, request_id String) ENGINE = MergeTree ORDER BY a",
            "c",
            "d",
        )
        .unwrap();
        assert_eq!(
            out[0],
            "CREATE TABLE IF NOT EXISTS `d`.`calls_local` ON CLUSTER `c` (a UInt8, request_id String) ENGINE = \
             ReplicatedMergeTree('/clickhouse/tables/{shard}/d/calls_local', '{replica}') ORDER BY a"
        );
        assert!(
            out[1].ends_with("ENGINE = Distributed('c', 'd', 'calls_local', cityHash64(request_id))"),
            "{}",
            out[1]
        );
        let mv = render("CREATE MATERIALIZED VIEW IF NOT EXISTS v TO t AS SELECT x FROM calls\nGROUP BY x", "c", "d")
            .unwrap();
        assert_eq!(
            mv[0],
            "CREATE MATERIALIZED VIEW IF NOT EXISTS `d`.`v` ON CLUSTER `c` TO `d`.`t_local` AS SELECT x FROM `d`.`calls_local`\nGROUP BY x"
        );
        assert!(render("DROP TABLE calls", "c", "d").is_err());
    }
}
