//! Budget spend, many budgets at once: the budgets of one range that compare the same dimension (a
//! scope column such as `department`, or one tag) are answered by one grouped query, and the pending
//! calls they name by one lookup, on either engine. A budget sync over 30 budgets is then two or three
//! queries instead of thirty (or sixty with pending ids).
//!
//! Each budget's answer is what a query of its own would give, to the nano-dollar: the grouped totals
//! are per (dimension value, key) over the calls that match some budget's value or one of its keys, so
//! a budget sums exactly the groups it matches and no call twice; the pending calls the store holds and
//! the budget matches are subtracted from that sum and named. The daily rollup answers the whole days
//! when the dimension is one of its columns (keys included: the rollup is kept per key), pending calls
//! or not; the raw table answers the rest.

use crate::clickhouse::{text_of, u64_of, ChBackend};
use crate::engine::{column, u64_at, QueryService, SpendAnswer, SpendFilter, SpendRequest};
use crate::error::QueryError;
use crate::params::TimeRange;
use crate::rollup::{split, DaySplit, ROLLUP_COLUMNS};
use crate::rollup_clickhouse::{edges_sql, union, Bound};
use crate::rollup_reports::{day_at, not_covered};
use arrow::array::{Array, RecordBatch};
use datafusion::scalar::ScalarValue;
use std::collections::{BTreeMap, BTreeSet};

/// What a budget compares with its value: a scope column, or one tag's value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Dim {
    Column(&'static str),
    Tag(String),
}

impl SpendFilter {
    fn dim(&self) -> (Dim, &str) {
        match self {
            SpendFilter::Column(col, v) => (Dim::Column(col), v),
            SpendFilter::Tag(k, v) => (Dim::Tag(k.clone()), v),
        }
    }
}

/// Summed cost per (dimension value, key); `None` where the row's value (key) is none a budget asks for.
type Parts = BTreeMap<(Option<String>, Option<String>), u64>;

/// One stored call among the pending ids asked about.
struct Found {
    id: String,
    value: Option<String>,
    key: Option<String>,
    cost: u64,
}

/// What one grouped query asks: the values and keys of its budgets and their pending ids.
struct Asked<'a> {
    values: Vec<&'a str>,
    keys: Vec<&'a str>,
    pending: Vec<&'a str>,
}

/// Most ids named in one pending lookup.
const LOOKUP_CHUNK: usize = 1_000;

/// Pending calls are this gateway's recent ones: their UUIDv7 ids carry the time they were made, which
/// is also the call's start (same clock, same moment). The lookup reads from the earliest such day,
/// one day earlier for safety; ids that are not UUIDv7 leave the lookup unbounded.
fn earliest_pending_date(ids: &[&str]) -> Option<String> {
    let mut earliest: Option<i64> = None;
    for id in ids {
        let hex: String = id.chars().filter(|c| *c != '-').collect();
        let version = hex.get(12..13)?;
        if hex.len() != 32 || version != "7" {
            return None;
        }
        let ms = i64::from_str_radix(hex.get(..12)?, 16).ok()?;
        earliest = Some(earliest.map_or(ms, |e| e.min(ms)));
    }
    let day_before = earliest?.checked_sub(86_400_000)?.checked_mul(1000)?;
    Some(TimeRange { from_us: day_before, to_us: day_before.saturating_add(1) }.from_date())
}

fn text_at(b: &RecordBatch, name: &str, i: usize) -> Result<Option<String>, QueryError> {
    let c = column(b, name)?;
    if c.is_null(i) {
        return Ok(None);
    }
    arrow::util::display::array_value_to_string(c, i).map(Some).map_err(|e| QueryError::Internal(e.to_string()))
}

impl QueryService {
    /// A budget's spend in `range`: the cost of the calls `req` selects except the asking gateway's
    /// pending ones, and which of those pending calls the store already holds.
    pub async fn spend(&self, range: &TimeRange, req: &SpendRequest) -> Result<SpendAnswer, QueryError> {
        let mut answers = self.spend_many(range, std::slice::from_ref(req)).await?;
        answers.pop().ok_or_else(|| QueryError::Internal("no spend answer".into()))
    }

    /// Several budgets' spend over one range, answered in the order asked: one grouped query and one
    /// pending lookup per dimension the budgets compare, each answer equal to [`QueryService::spend`]'s.
    pub async fn spend_many(&self, range: &TimeRange, reqs: &[SpendRequest]) -> Result<Vec<SpendAnswer>, QueryError> {
        let mut by_dim: BTreeMap<Dim, Vec<usize>> = BTreeMap::new();
        for (i, r) in reqs.iter().enumerate() {
            by_dim.entry(r.filter.dim().0).or_default().push(i);
        }
        let mut answers = vec![SpendAnswer::default(); reqs.len()];
        for (dim, members) in by_dim {
            let (mut values, mut keys, mut pending) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
            for r in members.iter().map(|i| &reqs[*i]) {
                values.insert(r.filter.dim().1);
                keys.extend(r.keys.iter().map(String::as_str));
                pending.extend(r.pending.iter().map(String::as_str));
            }
            let asked = Asked {
                values: values.into_iter().collect(),
                keys: keys.into_iter().collect(),
                pending: pending.into_iter().collect(),
            };
            // The lookup first, then the totals without any pending id: a pending call stored between the
            // two reads is in neither, so the gateway keeps counting it itself, once.
            let since = earliest_pending_date(&asked.pending);
            let found = self.pending_found(range, &dim, &asked.pending, since.as_deref()).await?;
            let parts = self.spend_parts(range, &dim, &asked, since.as_deref()).await?;
            for i in members {
                answers[i] = settle(&reqs[i], &parts, &found)?;
            }
        }
        Ok(answers)
    }

    /// Totals per (value, key) over the calls some budget matches, without the pending ids.
    async fn spend_parts(
        &self,
        range: &TimeRange,
        dim: &Dim,
        asked: &Asked<'_>,
        since: Option<&str>,
    ) -> Result<Parts, QueryError> {
        // The rollup cannot leave ids out: its whole days must end before the first day a pending call
        // can be on (all raw when pending ids carry no time).
        let cutoff = match since {
            _ if asked.pending.is_empty() => range.to_us,
            Some(d) => TimeRange::parse(Some(d), None).map_or(range.from_us, |r| r.from_us),
            None => range.from_us,
        };
        let s = split_before(range, cutoff);
        let rollup_col = match dim {
            Dim::Column(c) if self.config().rollups && s.days.is_some() && ROLLUP_COLUMNS.contains(c) => Some(*c),
            _ => None,
        };
        if let Some(ch) = self.ch() {
            let s = if rollup_col.is_some() {
                s
            } else {
                DaySplit { days: None, edges: vec![(range.from_us, range.to_us)] }
            };
            return ch.spend_parts(range, &s, dim, asked).await;
        }
        let (Some(col), Some(days)) = (rollup_col, &s.days) else {
            return self.spend_parts_df(range, dim, asked, &BTreeSet::new()).await;
        };
        // A compaction may swap a day's files between listing and reading: `run` plans that read again.
        self.spend_parts_rollup_df(range, days, col, asked).await
    }

    /// Whole days from the day summaries (every summary row of those days is read, so that the days
    /// read are exactly the days that have one), the rest of the range from the raw table.
    async fn spend_parts_rollup_df(
        &self,
        range: &TimeRange,
        (first, last): &(String, String),
        col: &'static str,
        asked: &Asked<'_>,
    ) -> Result<Parts, QueryError> {
        let mut params = vec![ScalarValue::Utf8(Some(first.clone())), ScalarValue::Utf8(Some(last.clone()))];
        let values = placeholders(&mut params, &asked.values);
        // `col` comes from the fixed list in `SpendFilter::scope`; values are bound.
        let mut select = format!("CASE WHEN \"{col}\" IN ({values}) THEN \"{col}\" END");
        let mut by = select.clone();
        if !asked.keys.is_empty() {
            let keys = placeholders(&mut params, &asked.keys);
            let k = format!("CASE WHEN api_key_id IN ({keys}) THEN api_key_id END");
            select = format!("{select} AS v, {k} AS k");
            by = format!("{by}, {k}");
        } else {
            select = format!("{select} AS v");
        }
        let sql = format!(
            "SELECT date AS rollup_day, {select}, sum(cost_nanousd) AS cost_nanousd FROM calls_daily \
             WHERE date >= $1 AND date <= $2 GROUP BY date, {by}"
        );
        let mut parts = Parts::new();
        let mut covered = BTreeSet::new();
        for b in self.run(&sql, params).await? {
            for i in 0..b.num_rows() {
                covered.insert(day_at(&b, i)?);
                add_part(&mut parts, &b, i, !asked.keys.is_empty())?;
            }
        }
        for (key, cost) in self.spend_parts_df(range, &Dim::Column(col), asked, &covered).await? {
            add_cost(&mut parts, key, cost)?;
        }
        Ok(parts)
    }

    /// The raw table's totals per (value, key) over the calls some budget matches, outside `covered` days.
    async fn spend_parts_df(
        &self,
        range: &TimeRange,
        dim: &Dim,
        asked: &Asked<'_>,
        covered: &BTreeSet<String>,
    ) -> Result<Parts, QueryError> {
        let mut params = Self::range_params(range);
        let expr = dim_expr_df(dim, &mut params);
        let values = placeholders(&mut params, &asked.values);
        let mut cond = format!("{expr} IN ({values})");
        let mut select = format!("{expr} AS v");
        let mut by = expr.clone();
        let with_keys = !asked.keys.is_empty();
        if with_keys {
            let keys = placeholders(&mut params, &asked.keys);
            cond = format!("({cond} OR api_key_id IN ({keys}))");
            select.push_str(", api_key_id AS k");
            by.push_str(", api_key_id");
        }
        let (skip, skip_params) = not_covered(covered, params.len() + 1);
        params.extend(skip_params);
        if !asked.pending.is_empty() {
            cond = format!("{cond} AND event_id NOT IN ({})", placeholders(&mut params, &asked.pending));
        }
        let sql = format!(
            "SELECT {select}, sum(cost_nanousd) AS cost_nanousd FROM calls \
             WHERE ts_start >= $1 AND ts_start < $2 AND date >= $3 AND date <= $4 AND {cond}{skip} GROUP BY {by}"
        );
        let mut parts = Parts::new();
        for b in self.run(&sql, params).await? {
            for i in 0..b.num_rows() {
                add_part(&mut parts, &b, i, with_keys)?;
            }
        }
        Ok(parts)
    }

    /// The pending calls the store holds, with what a budget matches them on.
    async fn pending_found(
        &self,
        range: &TimeRange,
        dim: &Dim,
        ids: &[&str],
        since: Option<&str>,
    ) -> Result<Vec<Found>, QueryError> {
        let mut found = Vec::new();
        for chunk in ids.chunks(LOOKUP_CHUNK) {
            if let Some(ch) = self.ch() {
                found.extend(ch.pending_found(range, dim, chunk, since).await?);
                continue;
            }
            let mut params = Self::range_params(range);
            let expr = dim_expr_df(dim, &mut params);
            let since = match since {
                Some(d) => format!(" AND date >= {}", placeholders(&mut params, &[d])),
                None => String::new(),
            };
            let list = placeholders(&mut params, chunk);
            let sql = format!(
                "SELECT event_id, {expr} AS v, api_key_id AS k, cost_nanousd FROM calls \
                 WHERE ts_start >= $1 AND ts_start < $2 AND date >= $3 AND date <= $4{since} AND event_id IN ({list})"
            );
            for b in self.run(&sql, params).await? {
                for i in 0..b.num_rows() {
                    found.push(Found {
                        id: text_at(&b, "event_id", i)?.unwrap_or_default(),
                        value: text_at(&b, "v", i)?,
                        key: text_at(&b, "k", i)?,
                        cost: u64_at(&b, "cost_nanousd", i)?,
                    });
                }
            }
        }
        Ok(found)
    }
}

/// The range's split into whole rollup days and raw edges, with no whole day at or after `cutoff`.
fn split_before(range: &TimeRange, cutoff: i64) -> DaySplit {
    let cut = cutoff.clamp(range.from_us, range.to_us);
    if cut == range.to_us {
        return split(range);
    }
    let mut s = split(&TimeRange { from_us: range.from_us, to_us: cut });
    s.edges.retain(|(a, b)| a < b);
    s.edges.push((cut, range.to_us));
    s
}

/// `$n, $n+1, …` for `values`, appended to `params` as strings (typed: DataFusion cannot always infer
/// a placeholder's type inside a list).
fn placeholders(params: &mut Vec<ScalarValue>, values: &[&str]) -> String {
    let marks: Vec<String> = values
        .iter()
        .map(|v| {
            params.push(ScalarValue::Utf8(Some((*v).to_string())));
            format!("CAST(${} AS VARCHAR)", params.len())
        })
        .collect();
    marks.join(", ")
}

/// The expression a dimension reads on DataFusion (a tag's name is bound).
fn dim_expr_df(dim: &Dim, params: &mut Vec<ScalarValue>) -> String {
    match dim {
        Dim::Column(col) => format!("\"{col}\""),
        Dim::Tag(k) => {
            let k = placeholders(params, &[k.as_str()]);
            format!("array_element(tag_values, CAST(array_position(tag_keys, {k}) AS BIGINT))")
        }
    }
}

/// Adds `cost` to a group's total, refusing to wrap.
fn add_cost(parts: &mut Parts, key: (Option<String>, Option<String>), cost: u64) -> Result<(), QueryError> {
    let total = parts.entry(key).or_default();
    *total = total.checked_add(cost).ok_or_else(|| QueryError::Internal("spend overflows u64 nano-USD".into()))?;
    Ok(())
}

fn add_part(parts: &mut Parts, b: &RecordBatch, i: usize, with_keys: bool) -> Result<(), QueryError> {
    let key = if with_keys { text_at(b, "k", i)? } else { None };
    add_cost(parts, (text_at(b, "v", i)?, key), u64_at(b, "cost_nanousd", i)?)
}

/// One budget's answer from its dimension's totals and pending lookup.
fn settle(req: &SpendRequest, parts: &Parts, found: &[Found]) -> Result<SpendAnswer, QueryError> {
    let overflow = || QueryError::Internal("spend overflows u64 nano-USD".into());
    let (_, value) = req.filter.dim();
    let matches =
        |v: Option<&str>, k: Option<&str>| v == Some(value) || k.is_some_and(|k| req.keys.iter().any(|x| x == k));
    let total: u64 = parts
        .iter()
        .filter(|((v, k), _)| matches(v.as_deref(), k.as_deref()))
        .try_fold(0u64, |s, (_, c)| s.checked_add(*c))
        .ok_or_else(overflow)?;
    // The totals leave out every pending id of the dimension: the stored ones this budget matches are
    // its own pending calls (named) or other budgets' (added back).
    let mine: BTreeSet<&str> = req.pending.iter().map(String::as_str).collect();
    let mut present = BTreeSet::new();
    let mut others_nanousd = total;
    for f in found.iter().filter(|f| matches(f.value.as_deref(), f.key.as_deref())) {
        if mine.contains(f.id.as_str()) {
            present.insert(f.id.clone());
        } else {
            others_nanousd = others_nanousd.checked_add(f.cost).ok_or_else(overflow)?;
        }
    }
    Ok(SpendAnswer { others_nanousd, present: present.into_iter().collect() })
}

/// The expression a dimension reads on ClickHouse and its bound values (a tag's name).
fn dim_expr_ch(dim: &Dim) -> (String, Vec<Bound>) {
    match dim {
        // `col` comes from the fixed list in `SpendFilter::scope`, never from a request.
        Dim::Column(col) => (format!("`{col}`"), Vec::new()),
        Dim::Tag(k) => ("tag_values[indexOf(tag_keys, ?)]".into(), vec![Bound::S(k.clone())]),
    }
}

/// `?, ?, …` for `values`, bound one by one: `x IN (…)` is a hash lookup on ClickHouse, while
/// `has([…], x)` compares with every element for every row (seconds for a thousand pending ids).
fn in_list(binds: &mut Vec<Bound>, values: &[&str]) -> String {
    binds.extend(values.iter().map(|v| Bound::S((*v).to_string())));
    vec!["?"; values.len()].join(", ")
}

impl ChBackend {
    /// Totals per (value, key) over the calls some budget matches: the rollup's whole days (when
    /// `split` has any) and the raw table's rest, in one query.
    async fn spend_parts(
        &self,
        range: &TimeRange,
        split: &DaySplit,
        dim: &Dim,
        asked: &Asked<'_>,
    ) -> Result<Parts, QueryError> {
        let with_keys = !asked.keys.is_empty();
        let (expr, expr_binds) = dim_expr_ch(dim);
        // The `?`s of `piece` in order: the select's expression, the condition's expression, the values, the keys.
        let piece = |binds: &mut Vec<Bound>| {
            binds.extend(expr_binds.iter().cloned());
            binds.extend(expr_binds.iter().cloned());
            let values = in_list(binds, &asked.values);
            let (k, cond) = if with_keys {
                let keys = in_list(binds, &asked.keys);
                (", api_key_id AS k", format!("({expr} IN ({values}) OR api_key_id IN ({keys}))"))
            } else {
                ("", format!("{expr} IN ({values})"))
            };
            (format!("{expr} AS v{k}"), cond)
        };
        let by = if with_keys { "v, k" } else { "v" };
        let mut binds = Vec::new();
        let rollup = split.days.as_ref().map(|(a, b)| {
            let (select, cond) = piece(&mut binds);
            binds.extend([Bound::S(a.clone()), Bound::S(b.clone())]);
            format!("SELECT {select}, sum(cost_nanousd) AS c FROM calls_daily WHERE {cond} AND date >= ? AND date <= ? GROUP BY {by}")
        });
        let raw = (!split.edges.is_empty()).then(|| {
            let (select, cond) = piece(&mut binds);
            let (edges, b) = edges_sql(split, range);
            binds.extend(b);
            let skip = if asked.pending.is_empty() {
                String::new()
            } else {
                format!(" AND event_id NOT IN ({})", in_list(&mut binds, &asked.pending))
            };
            format!("SELECT {select}, sum(cost_nanousd) AS c FROM calls WHERE {cond} AND {edges}{skip} GROUP BY {by}")
        });
        let sql = format!("SELECT {by}, toUInt64(sum(c)) FROM ({}) GROUP BY {by}", union(rollup, raw));
        let rows = tollgate_clickhouse::fetch_json(self.bound(&sql, binds), self.timeout)
            .await
            .map_err(crate::clickhouse::ch_err)?;
        let mut parts = Parts::new();
        for r in rows {
            let key = if with_keys { Some(text_of(r.get(1))) } else { None };
            let cost = u64_of(r.get(if with_keys { 2 } else { 1 }));
            add_cost(&mut parts, (Some(text_of(r.first())), key), cost)?;
        }
        Ok(parts)
    }

    async fn pending_found(
        &self,
        range: &TimeRange,
        dim: &Dim,
        ids: &[&str],
        since: Option<&str>,
    ) -> Result<Vec<Found>, QueryError> {
        let (expr, mut binds) = dim_expr_ch(dim);
        // `calls` is ordered by attribution before the date, so `date >= d` in WHERE prunes nothing inside
        // a monthly partition and the whole month's `event_id` column would be read; as PREWHERE, only
        // the granules holding the last days read it.
        let prewhere = match since {
            Some(d) => {
                binds.push(Bound::S(d.to_string()));
                " PREWHERE date >= ?"
            }
            None => "",
        };
        let (from_date, to_date) = crate::clickhouse::date_bounds(range);
        binds.extend([Bound::I(range.from_us), Bound::I(range.to_us), Bound::S(from_date), Bound::S(to_date)]);
        let list = in_list(&mut binds, ids);
        let sql = format!(
            "SELECT event_id, {expr}, api_key_id, toUInt64(cost_nanousd) FROM calls{prewhere} \
             WHERE ts_start_us >= ? AND ts_start_us < ? AND date >= ? AND date <= ? AND event_id IN ({list})"
        );
        let rows = tollgate_clickhouse::fetch_json(self.bound(&sql, binds), self.timeout)
            .await
            .map_err(crate::clickhouse::ch_err)?;
        Ok(rows
            .iter()
            .map(|r| Found {
                id: text_of(r.first()),
                value: Some(text_of(r.get(1))),
                key: Some(text_of(r.get(2))),
                cost: u64_of(r.get(3)),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_lookup_starts_a_day_before_the_earliest_uuid_v7() {
        // 2026-11-30T12:00:00Z = 1_796_040_000_000 ms.
        let a = format!("{:012x}-7000-8000-000000000000", 1_796_040_000_000u64);
        let a = format!("{}-{}", &a[..8], &a[8..]);
        let b = format!("{:012x}-7000-8000-000000000000", 1_795_900_000_000u64); // 2026-11-28T21:06:40Z
        let b = format!("{}-{}", &b[..8], &b[8..]);
        assert_eq!(earliest_pending_date(&[&a]).as_deref(), Some("2026-11-29"));
        assert_eq!(earliest_pending_date(&[&a, &b]).as_deref(), Some("2026-11-27"));
        assert_eq!(earliest_pending_date(&[&a, "ev-00000001"]), None);
        assert_eq!(earliest_pending_date(&[&uuid_v4()]), None);
    }

    fn uuid_v4() -> String {
        "0190a1b2-c3d4-4e5f-8a6b-7c8d9e0f1a2b".to_string()
    }
}
