//! Request parameters: time ranges and group-by columns. Group-by names map through a fixed list to
//! column identifiers, so no user text ever reaches SQL; times are bound as typed parameters.

use crate::error::QueryError;
use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};

/// `[from, to)` in microseconds since the epoch, plus the UTC dates it spans (for partition pruning).
#[derive(Debug, Clone, PartialEq)]
pub struct TimeRange {
    pub from_us: i64,
    pub to_us: i64,
}

impl TimeRange {
    /// `from`/`to` as `YYYY-MM-DD` (a date `to` includes that whole day) or RFC 3339 (exclusive `to`).
    /// Defaults: from the first day of the current month, to the end of time.
    pub fn parse(from: Option<&str>, to: Option<&str>) -> Result<TimeRange, QueryError> {
        let now = Utc::now();
        let from_us = match from {
            Some(s) => parse_bound(s, false, "from")?,
            None => Utc
                .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
                .single()
                .map(|d| d.timestamp_micros())
                .unwrap_or(0),
        };
        let to_us = match to {
            Some(s) => parse_bound(s, true, "to")?,
            None => i64::MAX,
        };
        if to_us <= from_us {
            return Err(QueryError::BadParameter("`to` must be after `from`".into()));
        }
        Ok(TimeRange { from_us, to_us })
    }

    pub fn from_date(&self) -> String {
        date_of(self.from_us)
    }

    /// The last date that can hold an event before `to`.
    pub fn to_date(&self) -> String {
        date_of(self.to_us.saturating_sub(1))
    }

    pub fn render(us: i64) -> String {
        DateTime::from_timestamp_micros(us).map(|d| d.to_rfc3339()).unwrap_or_else(|| "infinity".into())
    }
}

fn date_of(us: i64) -> String {
    DateTime::from_timestamp_micros(us).map(|d| d.format("%Y-%m-%d").to_string()).unwrap_or_else(|| "9999-12-31".into())
}

fn parse_bound(s: &str, is_to: bool, name: &str) -> Result<i64, QueryError> {
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let d = if is_to { d.succ_opt().unwrap_or(d) } else { d };
        return d
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp_micros())
            .ok_or_else(|| QueryError::BadParameter(format!("`{name}` is out of range")));
    }
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.timestamp_micros())
        .map_err(|_| QueryError::BadParameter(format!("`{name}` must be YYYY-MM-DD or an RFC 3339 time, got `{s}`")))
}

/// `YYYY-MM` → that calendar month in UTC, `[first day, first day of the next month)`.
pub fn month_range(month: &str) -> Result<TimeRange, QueryError> {
    let bad = || QueryError::BadParameter(format!("`month` must be YYYY-MM, got `{month}`"));
    let first = NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d").map_err(|_| bad())?;
    if month.len() != 7 {
        return Err(bad());
    }
    let next = if first.month() == 12 {
        NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
    }
    .ok_or_else(bad)?;
    let us = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp_micros()).ok_or_else(bad);
    Ok(TimeRange { from_us: us(first)?, to_us: us(next)? })
}

/// Accepted group-by names and the column each reads.
const GROUP_COLUMNS: &[(&str, &str)] = &[
    ("tenant", "tenant"),
    ("department", "department"),
    ("team", "team"),
    ("project", "project"),
    ("user", "user"),
    ("key", "api_key_id"),
    ("api_key_id", "api_key_id"),
    ("model", "served_model"),
    ("requested_model", "requested_model"),
    ("provider", "provider"),
    ("upstream", "upstream"),
    ("endpoint", "endpoint"),
    ("outcome", "outcome"),
    ("stream", "stream"),
    ("date", "date"),
];

/// Parses `department,team,model` into (output name, column) pairs from the fixed list.
pub fn parse_group_by(s: Option<&str>, default: &[&str]) -> Result<Vec<(&'static str, &'static str)>, QueryError> {
    let names: Vec<&str> = match s {
        Some(s) if !s.trim().is_empty() => s.split(',').map(str::trim).filter(|n| !n.is_empty()).collect(),
        _ => default.to_vec(),
    };
    let mut out = Vec::new();
    for n in names {
        let Some(pair) = GROUP_COLUMNS.iter().find(|(k, _)| *k == n) else {
            let allowed: Vec<&str> = GROUP_COLUMNS.iter().map(|(k, _)| *k).collect();
            return Err(QueryError::BadParameter(format!("cannot group by `{n}`; use any of {}", allowed.join(", "))));
        };
        if !out.contains(pair) {
            out.push(*pair);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_to_includes_the_whole_day() {
        let r = TimeRange::parse(Some("2026-11-01"), Some("2026-11-30")).unwrap();
        assert_eq!(r.from_date(), "2026-11-01");
        assert_eq!(r.to_date(), "2026-11-30");
        assert_eq!(r.to_us - r.from_us, 30 * 86_400_000_000);
        assert!(TimeRange::parse(Some("2026-11-02"), Some("2026-11-01")).is_err());
        assert!(TimeRange::parse(Some("yesterday"), None).is_err());
    }

    #[test]
    fn month_is_a_whole_utc_month() {
        let r = month_range("2026-12").unwrap();
        assert_eq!((r.from_date(), r.to_date()), ("2026-12-01".to_string(), "2026-12-31".to_string()));
        assert!(month_range("2026-13").is_err() && month_range("2026-1").is_err() && month_range("x").is_err());
    }

    #[test]
    fn group_by_only_from_the_list() {
        assert_eq!(
            parse_group_by(Some("department, model"), &[]).unwrap(),
            vec![("department", "department"), ("model", "served_model")]
        );
        let e = parse_group_by(Some("department; DROP TABLE calls"), &[]).unwrap_err();
        assert!(e.to_string().contains("cannot group by"));
    }
}
