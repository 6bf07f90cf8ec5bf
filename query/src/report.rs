//! What finance gets: showback and chargeback as JSON, CSV and a terminal table, with the same
//! columns everywhere. `calls` counts billable requests and `rejected` those refused before a provider
//! billed anything (unauthorized, invalid, budget, rate limit, guard, context window); money is exact
//! (`cost_usd` with nine decimals and `cost_nanousd`) with a rounded `cost_usd_rounded` (cents, half up)
//! beside it; a line without an attribution value says `(unattributed)`; CSV rows carry their period
//! and cells a spreadsheet would run as a formula are escaped.

use crate::csv;
use crate::engine::{QueryService, ShowbackRow, Totals};
use crate::error::QueryError;
use crate::params::{month_range, parse_group_by, TimeRange};
use tollgate_events::{format_usd, Outcome};

/// The label of a line whose attribution value is empty.
pub const UNATTRIBUTED: &str = "(unattributed)";

/// Whether a call with this outcome is a billable request (it reached, or may have reached, a
/// provider) rather than one the gateway refused.
pub fn billable(o: Outcome) -> bool {
    match o {
        Outcome::Ok | Outcome::UpstreamError | Outcome::Timeout | Outcome::ClientDisconnect => true,
        Outcome::Unauthorized
        | Outcome::InvalidRequest
        | Outcome::RejectedBudget
        | Outcome::RejectedRateLimit
        | Outcome::RejectedGuard
        | Outcome::RejectedContext => false,
    }
}

const OUTCOMES: [Outcome; 10] = [
    Outcome::Ok,
    Outcome::UpstreamError,
    Outcome::Timeout,
    Outcome::ClientDisconnect,
    Outcome::Unauthorized,
    Outcome::InvalidRequest,
    Outcome::RejectedBudget,
    Outcome::RejectedRateLimit,
    Outcome::RejectedGuard,
    Outcome::RejectedContext,
];

/// `'unauthorized', 'invalid_request', …`: the refused outcomes as SQL string literals (fixed text,
/// from the enum; the same on both engines).
/// The outcomes refused before any provider, as an SQL list of string literals (`'a', 'b'`).
pub fn refused_outcomes_sql() -> String {
    OUTCOMES.iter().filter(|o| !billable(**o)).map(|o| format!("'{}'", o.as_str())).collect::<Vec<_>>().join(", ")
}

/// USD rounded half up to cents, for the column beside the exact amount.
pub fn usd_cents(nanousd: u64) -> String {
    let cents = (u128::from(nanousd) + 5_000_000) / 10_000_000;
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// A group value as reports show it.
pub fn label(v: &str) -> &str {
    if v.is_empty() {
        UNATTRIBUTED
    } else {
        v
    }
}

/// Who a chargeback line may be about.
pub const CHARGEBACK_BY: &[&str] = &["tenant", "department", "team", "project", "user", "key", "model"];

/// A report ready to render: its period, grouping, lines and their exact total.
pub struct Report {
    pub title: &'static str,
    /// `2026-11` for a chargeback month, `<from>/<to>` (RFC 3339) otherwise.
    pub period: String,
    pub range: TimeRange,
    pub group: Vec<(&'static str, &'static str)>,
    pub rows: Vec<ShowbackRow>,
    pub total: Totals,
}

/// Adds a row's totals into a running total (exact integers).
pub fn add_totals(sum: &mut Totals, t: &Totals) {
    sum.calls += t.calls;
    sum.rejected += t.rejected;
    sum.attempts += t.attempts;
    sum.input_tokens += t.input_tokens;
    sum.output_tokens += t.output_tokens;
    sum.cached_input_tokens += t.cached_input_tokens;
    sum.cache_write_tokens += t.cache_write_tokens;
    sum.reasoning_tokens += t.reasoning_tokens;
    sum.cost_nanousd += t.cost_nanousd;
    sum.cache_hits += t.cache_hits;
    sum.saved_nanousd += t.saved_nanousd;
}

fn period_of(range: &TimeRange) -> String {
    let to = if range.to_us == i64::MAX { "now".to_string() } else { TimeRange::render(range.to_us) };
    format!("{}/{to}", TimeRange::render(range.from_us))
}

impl Report {
    fn new(
        title: &'static str,
        period: String,
        range: TimeRange,
        group: Vec<(&'static str, &'static str)>,
        rows: Vec<ShowbackRow>,
    ) -> Report {
        let mut total = Totals::default();
        for r in &rows {
            add_totals(&mut total, &r.totals);
        }
        Report { title, period, range, group, rows, total }
    }

    /// Showback over `range`, grouped as asked.
    pub async fn showback(
        svc: &QueryService,
        range: TimeRange,
        group_by: Option<&str>,
        default: &[&str],
    ) -> Result<Report, QueryError> {
        let group = parse_group_by(group_by, default)?;
        let rows = svc.showback(&range, &group).await?;
        Ok(Report::new("showback", period_of(&range), range, group, rows))
    }

    /// The bill of one UTC calendar month (`YYYY-MM`), by any of [`CHARGEBACK_BY`].
    pub async fn chargeback(svc: &QueryService, month: &str, by: Option<&str>) -> Result<Report, QueryError> {
        let range = month_range(month)?;
        let by = by.unwrap_or("department");
        for n in by.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if !CHARGEBACK_BY.contains(&n) {
                return Err(QueryError::BadParameter(format!(
                    "cannot charge back by `{n}`; use any of {}",
                    CHARGEBACK_BY.join(", ")
                )));
            }
        }
        let group = parse_group_by(Some(by), &["department"])?;
        let rows = svc.showback(&range, &group).await?;
        Ok(Report::new("chargeback", month.to_string(), range, group, rows))
    }

    /// JSON: `rows` (one object per line) and `total`, with the period.
    pub fn json(&self) -> serde_json::Value {
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|r| {
                let mut o = totals_json(&r.totals);
                if let Some(m) = o.as_object_mut() {
                    for (k, v) in &r.group {
                        m.insert(k.clone(), serde_json::Value::String(label(v).to_string()));
                    }
                }
                o
            })
            .collect();
        serde_json::json!({
            "period": self.period,
            "from": TimeRange::render(self.range.from_us),
            "to": TimeRange::render(self.range.to_us),
            "group_by": self.group.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            "rows": rows,
            "total": totals_json(&self.total),
        })
    }

    /// CSV: `period`, the group columns, then the numbers; a chargeback ends with a `TOTAL` line.
    pub fn csv(&self, with_total: bool) -> String {
        let mut s = String::new();
        let mut header: Vec<&str> = vec!["period"];
        header.extend(self.group.iter().map(|(n, _)| *n));
        header.extend(NUMBER_COLUMNS);
        csv::row(&mut s, header);
        for r in &self.rows {
            let nums = numbers(&r.totals);
            let fields: Vec<&str> = std::iter::once(self.period.as_str())
                .chain(r.group.iter().map(|(_, v)| label(v)))
                .chain(nums.iter().map(String::as_str))
                .collect();
            csv::row(&mut s, fields);
        }
        if with_total {
            let nums = numbers(&self.total);
            let lead = (0..self.group.len().max(1)).map(|i| if i == 0 { "TOTAL" } else { "" });
            csv::row(&mut s, std::iter::once(self.period.as_str()).chain(lead).chain(nums.iter().map(String::as_str)));
        }
        s
    }

    /// A terminal table: the period, one line per group, and the total.
    pub fn table(&self) -> String {
        let mut header: Vec<String> = self.group.iter().map(|(n, _)| (*n).to_string()).collect();
        if header.is_empty() {
            header.push(String::new());
        }
        let lead = header.len();
        header.extend(
            ["calls", "rejected", "input_tokens", "output_tokens", "cost_usd", "cost_usd_rounded"].map(String::from),
        );
        let line = |group: Vec<String>, t: &Totals| -> Vec<String> {
            let mut l = group;
            l.extend([
                t.calls.to_string(),
                t.rejected.to_string(),
                t.input_tokens.to_string(),
                t.output_tokens.to_string(),
                format_usd(t.cost_nanousd),
                usd_cents(t.cost_nanousd),
            ]);
            l
        };
        let mut table = vec![header];
        for r in &self.rows {
            let mut g: Vec<String> = r.group.iter().map(|(_, v)| label(v).to_string()).collect();
            if g.is_empty() {
                g.push(String::new());
            }
            table.push(line(g, &r.totals));
        }
        let g: Vec<String> = (0..lead).map(|i| if i == 0 { "TOTAL".into() } else { String::new() }).collect();
        table.push(line(g, &self.total));
        let widths: Vec<usize> =
            (0..table[0].len()).map(|c| table.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
        let mut out = format!("{} {}\n", self.title, self.period);
        for (i, row) in table.iter().enumerate() {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(
                    |(c, v)| {
                        if c >= lead {
                            format!("{v:>w$}", w = widths[c])
                        } else {
                            format!("{v:<w$}", w = widths[c])
                        }
                    },
                )
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
            if i == 0 || i == table.len() - 2 {
                out.push_str(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
                out.push('\n');
            }
        }
        out
    }
}

const NUMBER_COLUMNS: [&str; 14] = [
    "calls",
    "rejected",
    "attempts",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_usd",
    "cost_usd_rounded",
    "cost_nanousd",
    "cache_hits",
    "saved_usd",
    "saved_nanousd",
];

fn numbers(t: &Totals) -> [String; 14] {
    [
        t.calls.to_string(),
        t.rejected.to_string(),
        t.attempts.to_string(),
        t.input_tokens.to_string(),
        t.output_tokens.to_string(),
        t.cached_input_tokens.to_string(),
        t.cache_write_tokens.to_string(),
        t.reasoning_tokens.to_string(),
        format_usd(t.cost_nanousd),
        usd_cents(t.cost_nanousd),
        t.cost_nanousd.to_string(),
        t.cache_hits.to_string(),
        format_usd(t.saved_nanousd),
        t.saved_nanousd.to_string(),
    ]
}

pub fn totals_json(t: &Totals) -> serde_json::Value {
    serde_json::json!({
        "calls": t.calls,
        "rejected": t.rejected,
        "attempts": t.attempts,
        "input_tokens": t.input_tokens,
        "output_tokens": t.output_tokens,
        "cached_input_tokens": t.cached_input_tokens,
        "cache_write_tokens": t.cache_write_tokens,
        "reasoning_tokens": t.reasoning_tokens,
        "cost_nanousd": t.cost_nanousd,
        "cost_usd": format_usd(t.cost_nanousd),
        "cache_hits": t.cache_hits,
        "saved_nanousd": t.saved_nanousd,
        "saved_usd": format_usd(t.saved_nanousd),
        "cost_usd_rounded": usd_cents(t.cost_nanousd),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cents_round_half_up_from_exact_nanos() {
        assert_eq!(usd_cents(0), "0.00");
        assert_eq!(usd_cents(4_999_999), "0.00");
        assert_eq!(usd_cents(5_000_000), "0.01");
        assert_eq!(usd_cents(1_234_994_999), "1.23");
        assert_eq!(usd_cents(1_235_000_000), "1.24");
        assert_eq!(usd_cents(u64::MAX), "18446744073.71");
    }

    #[test]
    fn refused_outcomes_are_the_gateway_refusals() {
        assert_eq!(
            refused_outcomes_sql(),
            "'unauthorized', 'invalid_request', 'rejected_budget', 'rejected_rate_limit', 'rejected_guard', 'rejected_context'"
        );
    }
}
