//! What `/v1/sql` lets an analyst read on ClickHouse: the call log and nothing else. The server enforces
//! read-only (`readonly=1`, or a read-only user); this check, on the token stream of the query, keeps
//! analysts to the configured database's call-log tables: no `system.*` or `information_schema`, no other
//! database, no table functions (`url`, `file`, `remote`, …), no dictionaries, and no `SETTINGS`,
//! `FORMAT` or `INTO OUTFILE` clauses that would override the limits or the output.

use crate::error::QueryError;

/// Tables an analyst may name.
pub const CALL_LOG_TABLES: &[&str] = &["calls"];

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// An unquoted word (keyword or identifier), as written.
    Word(String),
    /// A `"quoted"` or `` `quoted` `` identifier, unquoted.
    Quoted(String),
    Str,
    Num,
    Punct(char),
}

fn tokenize(sql: &str) -> Result<Vec<Tok>, QueryError> {
    let b = sql.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let unterminated = |what: &str| QueryError::InvalidSql(format!("unterminated {what}"));
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if b[i..].starts_with(b"--") || c == b'#' {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let end = sql[i + 2..].find("*/").ok_or_else(|| unterminated("comment"))?;
            i += 2 + end + 2;
        } else if c == b'\'' || c == b'"' || c == b'`' {
            let mut j = i + 1;
            let mut text = Vec::new();
            loop {
                match b.get(j) {
                    None => return Err(unterminated("quote")),
                    Some(b'\\') => {
                        if let Some(&n) = b.get(j + 1) {
                            text.push(n);
                        }
                        j += 2;
                    }
                    Some(&q) if q == c => {
                        if b.get(j + 1) == Some(&c) {
                            text.push(c);
                            j += 2;
                        } else {
                            j += 1;
                            break;
                        }
                    }
                    Some(&x) => {
                        text.push(x);
                        j += 1;
                    }
                }
            }
            out.push(if c == b'\'' { Tok::Str } else { Tok::Quoted(String::from_utf8_lossy(&text).into_owned()) });
            i = j;
        } else if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$' || b[i] >= 0x80) {
                i += 1;
            }
            out.push(Tok::Word(sql[start..i].to_string()));
        } else if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
                i += 1;
            }
            out.push(Tok::Num);
        } else {
            out.push(Tok::Punct(c as char));
            i += 1;
        }
    }
    Ok(out)
}

fn ident(t: Option<&Tok>) -> Option<&str> {
    match t {
        Some(Tok::Word(w)) | Some(Tok::Quoted(w)) => Some(w),
        _ => None,
    }
}

fn is_kw(t: Option<&Tok>, kw: &str) -> bool {
    matches!(t, Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
}

fn refuse(msg: String) -> QueryError {
    QueryError::NotAllowed(msg)
}

/// Most tokens in one `/v1/sql` query, on either engine. Planning walks expression trees as deep as a
/// query is long (`1+1+…`, `… OR …`, `UNION ALL`, `||` chains); this keeps that work bounded.
pub const MAX_SQL_TOKENS: usize = 20_000;
/// Deepest parenthesis nesting in one query.
pub const MAX_SQL_NESTING: usize = 64;

/// Bounds the size of an analyst's query before any engine parses it.
pub fn check_shape(sql: &str) -> Result<(), QueryError> {
    let toks = tokenize(sql)?;
    if toks.len() > MAX_SQL_TOKENS {
        return Err(QueryError::TooComplex(format!("{} tokens; at most {MAX_SQL_TOKENS} are allowed", toks.len())));
    }
    let mut depth = 0usize;
    for t in &toks {
        match t {
            Tok::Punct('(') => {
                depth += 1;
                if depth > MAX_SQL_NESTING {
                    return Err(QueryError::TooComplex(format!("parentheses nested more than {MAX_SQL_NESTING} deep")));
                }
            }
            Tok::Punct(')') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Checks an analyst's query; `database` is the configured one (the only database it may name).
pub fn check(sql: &str, database: &str) -> Result<(), QueryError> {
    let toks = tokenize(sql)?;
    // Names defined by `WITH name AS (…)` may be read like tables.
    let mut ctes: Vec<String> = Vec::new();
    for w in toks.windows(3) {
        if let (Some(name), true, Tok::Punct('(')) = (ident(w.first()), is_kw(w.get(1), "AS"), &w[2]) {
            ctes.push(name.to_ascii_lowercase());
        }
    }
    let allowed_table = |name: &str| {
        let n = name.to_ascii_lowercase();
        CALL_LOG_TABLES.contains(&n.as_str()) || ctes.contains(&n)
    };
    for (i, t) in toks.iter().enumerate() {
        if let Some(name) = ident(Some(t)) {
            let lower = name.to_ascii_lowercase();
            if lower == "system" || lower == "information_schema" {
                return Err(refuse(format!(
                    "`{name}` is not readable here: only the call log ({}) is",
                    CALL_LOG_TABLES.join(", ")
                )));
            }
            if lower.starts_with("dictget") || lower.starts_with("dicthas") || lower == "joinget" {
                return Err(refuse(format!("`{name}` reads outside the call log")));
            }
        }
        if let Tok::Word(w) = t {
            let kw = w.to_ascii_uppercase();
            match kw.as_str() {
                "SETTINGS" | "FORMAT" | "OUTFILE" => {
                    return Err(refuse(format!(
                        "`{w}` clauses are not allowed: limits and output format are the service's"
                    )))
                }
                "FROM" | "JOIN" => check_table_list(&toks, i + 1, database, &allowed_table)?,
                "IN" => {
                    // `x IN table` reads a table: allow only the call log.
                    if let Some(name) = ident(toks.get(i + 1)) {
                        if !is_kw(toks.get(i + 1), "SELECT") && !allowed_table(name) {
                            return Err(refuse(format!("`IN {name}` names a table outside the call log")));
                        }
                    }
                }
                _ => {}
            }
        }
        if let Tok::Punct(';') = t {
            if toks.len() > i + 1 {
                return Err(QueryError::NotReadOnly("only one statement per request".into()));
            }
        }
    }
    Ok(())
}

/// Table references after FROM/JOIN: `(subquery)`, `table`, `db.table`, with an optional alias, FINAL
/// or SAMPLE, separated by commas.
fn check_table_list(
    toks: &[Tok],
    mut i: usize,
    database: &str,
    allowed: &dyn Fn(&str) -> bool,
) -> Result<(), QueryError> {
    loop {
        match toks.get(i) {
            Some(Tok::Punct('(')) => return Ok(()), // a subquery: its tokens are checked as they come
            t => {
                let Some(first) = ident(t) else {
                    return Ok(()); // `FROM` as part of an expression (e.g. EXTRACT(x FROM y)): nothing to check
                };
                let (db, table, next) = if toks.get(i + 1) == Some(&Tok::Punct('.')) {
                    (Some(first), ident(toks.get(i + 2)).unwrap_or(""), i + 3)
                } else {
                    (None, first, i + 1)
                };
                if toks.get(next) == Some(&Tok::Punct('(')) {
                    return Err(refuse(format!(
                        "table function `{table}(…)` is not allowed: read the call log tables"
                    )));
                }
                if let Some(db) = db {
                    if db != database {
                        return Err(refuse(format!("database `{db}` is not readable here: only `{database}`")));
                    }
                }
                if !allowed(table) {
                    return Err(refuse(format!(
                        "table `{table}` is not readable here: only the call log ({})",
                        CALL_LOG_TABLES.join(", ")
                    )));
                }
                // skip FINAL / AS alias / alias / SAMPLE n, then continue after a comma
                let mut j = next;
                while let Some(t) = toks.get(j) {
                    match t {
                        Tok::Punct(',') => break,
                        Tok::Word(w)
                            if matches!(w.to_ascii_uppercase().as_str(), "FINAL" | "AS" | "SAMPLE") || j == next =>
                        {
                            j += 1
                        }
                        Tok::Num | Tok::Quoted(_) => j += 1,
                        _ => return Ok(()),
                    }
                }
                if toks.get(j) != Some(&Tok::Punct(',')) {
                    return Ok(());
                }
                i = j + 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(sql: &str) {
        if let Err(e) = check(sql, "tg") {
            panic!("refused `{sql}`: {e}");
        }
    }

    fn no(sql: &str) {
        assert!(check(sql, "tg").is_err(), "allowed `{sql}`");
    }

    #[test]
    fn the_call_log_is_readable() {
        ok("SELECT department, sum(cost_nanousd) FROM calls GROUP BY department");
        ok("select * from tg.calls AS c FINAL where c.department = 'system'");
        ok("SELECT count() FROM calls c JOIN calls d USING (event_id)");
        ok("WITH t AS (SELECT 1 FROM calls) SELECT * FROM t");
        ok("SELECT extract(department FROM 'x') FROM (SELECT department FROM calls)");
        ok("SELECT 'FROM system.tables' FROM calls;");
        ok("SELECT event_id FROM calls WHERE event_id IN (SELECT event_id FROM calls)");
    }

    #[test]
    fn everything_else_is_not() {
        no("SELECT * FROM system.tables");
        no("SELECT * FROM `system`.`parts`");
        no("SELECT * FROM \"system\" . processes");
        no("SELECT * FROM calls, other");
        no("SELECT * FROM otherdb.calls");
        no("SELECT * FROM url('http://x', CSV, 'a String')");
        no("SELECT * FROM numbers(10)");
        no("SELECT * FROM calls SETTINGS max_execution_time = 1000");
        no("SELECT * FROM calls FORMAT TSV");
        no("SELECT * FROM calls INTO OUTFILE 'x'");
        no("SELECT dictGetString('d', 'a', toUInt64(1))");
        no("SELECT 1 FROM calls WHERE 1 IN secrets");
        no("SELECT 1; DROP TABLE calls");
        no("SELECT * FROM information_schema.tables");
        no("SELECT * FROM calls /* unterminated");
    }

    #[test]
    fn the_shape_is_bounded() {
        assert!(check_shape(&format!("SELECT {} AS n", vec!["1"; 1000].join("+"))).is_ok());
        assert!(check_shape(&format!("SELECT {} AS n", vec!["1"; MAX_SQL_TOKENS].join("+"))).is_err());
        let nested = |d: usize| format!("SELECT {}1{}", "(".repeat(d), ")".repeat(d));
        assert!(check_shape(&nested(MAX_SQL_NESTING)).is_ok());
        assert!(check_shape(&nested(MAX_SQL_NESTING + 1)).is_err());
    }

    // Property tests (issue 15). CI runs proptest's default 256 cases; for more:
    // `PROPTEST_CASES=20000 cargo test --workspace --lib -- sqlguard::tests::props`.
    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn never_panics_on_any_text(sql in "\\PC{0,300}") {
                let _ = check(&sql, "tg");
                let _ = check_shape(&sql);
            }

            #[test]
            fn never_panics_on_sql_like_text(
                words in prop::collection::vec(prop_oneof![
                    Just("SELECT"), Just("FROM"), Just("JOIN"), Just("IN"), Just("WITH"), Just("AS"), Just("("),
                    Just(")"), Just(","), Just("."), Just(";"), Just("'"), Just("\""), Just("`"), Just("--"),
                    Just("/*"), Just("*/"), Just("calls"), Just("system"), Just("x"), Just("1"), Just("\\"),
                    Just("é"), Just("\n"),
                ], 0..40),
            ) {
                let sql = words.join(" ");
                let _ = check(&sql, "tg");
                let _ = check_shape(&sql);
            }

            #[test]
            fn tables_other_than_the_call_log_are_refused(
                name in "[a-z_][a-z0-9_]{0,10}".prop_filter("not the call log", |n| n != "calls"),
                db in prop::option::of("[a-z]{1,6}"),
                alias in prop::option::of("[a-z]{1,4}"),
            ) {
                let table = match &db { Some(d) => format!("{d}.{name}"), None => name.clone() };
                let sql = format!("SELECT * FROM calls JOIN {table} {} ON 1 = 1", alias.unwrap_or_default());
                prop_assert!(check(&sql, "tg").is_err(), "allowed: {}", sql);
            }

            #[test]
            fn system_is_refused_wherever_it_is_named(
                before in "[a-z ]{0,12}",
                quote in prop_oneof![Just(""), Just("`"), Just("\"")],
                case_upper in any::<bool>(),
            ) {
                let sys = if case_upper { "SYSTEM" } else { "system" };
                let sql = format!("SELECT {before} 1 FROM {quote}{sys}{quote}.tables");
                prop_assert!(check(&sql, "tg").is_err(), "allowed: {}", sql);
            }

            #[test]
            fn nesting_is_refused_exactly_past_the_bound(depth in 0usize..150) {
                let sql = format!("SELECT {}1{}", "(".repeat(depth), ")".repeat(depth));
                prop_assert_eq!(check_shape(&sql).is_ok(), depth <= MAX_SQL_NESTING);
            }
        }
    }
}
