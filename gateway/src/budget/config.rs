//! What the user writes for budgets (`[[budgets]]`), token rate limits (`[[rate_limits]]`), their shared
//! settings (`[budget_settings]`) and admin keys (`[[admin_keys]]`), and `validate_budgets()`, which
//! checks them against the gateway's models and prices (pure: no I/O).

use crate::budget::period::{Period, PeriodSpec};
use crate::config::{err, ConfigError, ValidatedConfig};
use serde::Deserialize;
use std::collections::HashSet;
use std::sync::Arc;

/// Settings shared by every budget and rate limit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSettings {
    /// How often each gateway refreshes its budgets' spend from the query service (the authoritative
    /// store). Between refreshes a gateway counts its own spend; other gateways' spend is seen at the
    /// next refresh, which bounds the overshoot (see the README).
    #[serde(default = "default_sync_interval_ms")]
    pub sync_interval_ms: u64,
    /// No longer used: a gateway now counts its own calls by event id until the store holds them, however
    /// long that takes, so nothing is counted twice or missed. Accepted so that older configs still load.
    #[serde(default = "default_ingest_lag_ms")]
    pub ingest_lag_ms: u64,
    /// Output tokens assumed at admission when a request sets no `max_tokens`/`max_completion_tokens`.
    #[serde(default = "default_output_tokens")]
    pub default_output_tokens: u64,
    /// Optional URL that receives a JSON POST when a budget crosses a soft threshold or its cap.
    #[serde(default)]
    pub webhook_url: Option<String>,
}

impl Default for BudgetSettings {
    fn default() -> Self {
        BudgetSettings {
            sync_interval_ms: default_sync_interval_ms(),
            ingest_lag_ms: default_ingest_lag_ms(),
            default_output_tokens: default_output_tokens(),
            webhook_url: None,
        }
    }
}

fn default_sync_interval_ms() -> u64 {
    5_000
}
fn default_ingest_lag_ms() -> u64 {
    5_000
}
fn default_output_tokens() -> u64 {
    4096
}
fn default_time_zone() -> String {
    "UTC".into()
}

/// Who a budget covers.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// A virtual key (`match` is the key's `id`).
    Key,
    User,
    Project,
    Team,
    Department,
    Tenant,
    /// A tag; `match` is `name=value`.
    Tag,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Key => "key",
            Scope::User => "user",
            Scope::Project => "project",
            Scope::Team => "team",
            Scope::Department => "department",
            Scope::Tenant => "tenant",
            Scope::Tag => "tag",
        }
    }
}

/// What happens to a call that does not fit under the cap.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// HTTP 429 `budget_exceeded`.
    Reject,
    /// Serve the call with `downgrade_to` instead, if that fits; otherwise reject.
    Downgrade,
}

/// A spending cap over a period.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// Stable name, used in errors, the API and metrics.
    pub id: String,
    /// `key`, `user`, `project`, `team`, `department`, `tenant` or `tag`.
    pub scope: Scope,
    /// The value of the scope this budget covers, e.g. `engineering` for a department, `env=prod` for a tag.
    #[serde(rename = "match")]
    pub value: String,
    /// `day`, `week` (Monday to Monday), `month` (calendar month) or `fixed` (from `start` to `end`).
    pub period: Period,
    /// IANA time zone in which days, weeks and months begin, e.g. `Europe/Berlin`. Default `UTC`.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// `fixed` only: RFC 3339 start (inclusive) and end (exclusive) of the window.
    #[serde(default)]
    pub start: Option<String>,
    #[serde(default)]
    pub end: Option<String>,
    /// The cap in USD, as a decimal string (`"1500.00"`): parsed exactly to nano-USD, never a float.
    pub cap_usd: String,
    /// Soft thresholds in percent of the cap (e.g. `[80, 95]`): crossing one logs, counts and notifies.
    #[serde(default)]
    pub soft_thresholds: Vec<u32>,
    /// `reject` (default) or `downgrade`.
    #[serde(default = "default_action")]
    pub action: Action,
    /// `downgrade` only: the cheaper model that serves calls that no longer fit. A key that may not use
    /// it is refused instead.
    #[serde(default)]
    pub downgrade_to: Option<String>,
    /// `true` when `match` deliberately fits no key today (a key added later, or header attribution from
    /// a key that allows it); without it `tollgate check` refuses a budget that can never apply.
    #[serde(default)]
    pub unmatched_ok: bool,
}

fn default_action() -> Action {
    Action::Reject
}

/// Who a token rate limit counts.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum LimitScope {
    Key,
    User,
    Team,
}

impl LimitScope {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitScope::Key => "key",
            LimitScope::User => "user",
            LimitScope::Team => "team",
        }
    }
}

/// Token and request rate limits (fixed UTC minute and day windows), per key, user or team.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Stable name, given in the 429 and in metrics.
    pub id: String,
    /// `key`, `user` or `team`.
    pub scope: LimitScope,
    /// Only this key id / user / team; absent: every one gets its own counters.
    #[serde(default, rename = "match")]
    pub value: Option<String>,
    #[serde(default)]
    pub requests_per_minute: Option<u64>,
    /// Charged at admission with the estimate (prompt bytes / 4 + max tokens), settled on real usage.
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
    #[serde(default)]
    pub tokens_per_day: Option<u64>,
}

/// A key for the admin API (`/admin/*`); separate from virtual keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminKeyConfig {
    /// Who: recorded in the audit log with every change.
    pub id: String,
    /// `sha256:<hex>` of the key (`tollgate hash-key`).
    pub hash: String,
}

/// A checked budget.
#[derive(Debug, Clone)]
pub struct BudgetDef {
    pub id: String,
    pub scope: Scope,
    pub value: String,
    /// For tag budgets: the tag's name and value.
    pub tag: Option<(String, String)>,
    pub period: PeriodSpec,
    pub cap_nanousd: u64,
    pub soft_thresholds: Vec<u32>,
    pub action: Action,
    pub downgrade_to: Option<String>,
    /// Ids of the keys whose own attribution this budget matches: their calls count against it whatever
    /// their `x-tollgate-*` headers say.
    pub keys: Vec<String>,
    pub unmatched_ok: bool,
}

#[derive(Debug, Clone)]
pub struct RateLimitDef {
    pub id: String,
    pub scope: LimitScope,
    pub value: Option<String>,
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub tokens_per_day: Option<u64>,
}

/// Everything the budget system runs on; replaced whole on reload.
#[derive(Debug, Clone, Default)]
pub struct BudgetConfigSet {
    pub budgets: Vec<Arc<BudgetDef>>,
    pub rate_limits: Vec<Arc<RateLimitDef>>,
    pub settings: BudgetSettings,
    /// (id, sha256 digest)
    pub admin_keys: Vec<(String, [u8; 32])>,
}

/// Whether a key's own attribution (its config, not a request's headers) falls in a budget's scope.
fn key_is_bound(k: &crate::config::KeyConfig, scope: Scope, value: &str, tag: Option<&(String, String)>) -> bool {
    match scope {
        Scope::Key => k.id == value,
        Scope::User => k.user == value,
        Scope::Project => k.project == value,
        Scope::Team => k.team == value,
        Scope::Department => k.department == value,
        Scope::Tenant => k.tenant == value,
        Scope::Tag => tag.is_some_and(|(n, v)| k.tags.get(n).is_some_and(|x| x == v)),
    }
}

/// Pure validation against the gateway's checked config (models, prices).
pub fn validate_budgets(
    budgets: &[BudgetConfig],
    rate_limits: &[RateLimitConfig],
    settings: &BudgetSettings,
    admin_keys: &[AdminKeyConfig],
    gw: &ValidatedConfig,
) -> Result<BudgetConfigSet, ConfigError> {
    let mut out = BudgetConfigSet { settings: settings.clone(), ..Default::default() };
    if settings.sync_interval_ms == 0 {
        return Err(err("budget_settings.sync_interval_ms", "must be greater than 0"));
    }
    if let Some(u) = &settings.webhook_url {
        if !(u.starts_with("http://") || u.starts_with("https://")) || u.parse::<http::Uri>().is_err() {
            return Err(err("budget_settings.webhook_url", format!("`{u}` is not an http(s) URL")));
        }
    }
    let mut ids = HashSet::new();
    for (i, b) in budgets.iter().enumerate() {
        let key = |f: &str| format!("budgets[{i}].{f}");
        if b.id.is_empty() || !b.id.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c)) {
            return Err(err(key("id"), "must be non-empty letters, digits, `-`, `_` or `.`"));
        }
        if !ids.insert(b.id.clone()) {
            return Err(err(key("id"), format!("`{}` is used by two budgets", b.id)));
        }
        if b.value.is_empty() {
            return Err(err(key("match"), "must name who the budget covers"));
        }
        let tag = if b.scope == Scope::Tag {
            match b.value.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => {
                    Some((k.trim().to_string(), v.trim().to_string()))
                }
                _ => return Err(err(key("match"), "a tag budget matches `name=value`")),
            }
        } else {
            None
        };
        let tz: chrono_tz::Tz = b
            .time_zone
            .parse()
            .map_err(|_| err(key("time_zone"), format!("`{}` is not an IANA time zone", b.time_zone)))?;
        let parse_time = |f: &str, v: &Option<String>| -> Result<Option<i64>, ConfigError> {
            match v {
                None => Ok(None),
                Some(s) => chrono::DateTime::parse_from_rfc3339(s)
                    .map(|d| Some(d.timestamp_micros()))
                    .map_err(|_| err(key(f), format!("`{s}` is not an RFC 3339 time"))),
            }
        };
        let start = parse_time("start", &b.start)?;
        let end = parse_time("end", &b.end)?;
        let fixed = match (b.period, start, end) {
            (Period::Fixed, Some(s), Some(e)) if e > s => Some((s, e)),
            (Period::Fixed, Some(_), Some(_)) => return Err(err(key("end"), "must be after `start`")),
            (Period::Fixed, _, _) => return Err(err(key("period"), "`fixed` needs `start` and `end`")),
            (_, None, None) => None,
            (_, _, _) => return Err(err(key("start"), "`start`/`end` are for `period = \"fixed\"` only")),
        };
        let cap_nanousd =
            tollgate_events::parse_usd_to_nano(&b.cap_usd).map_err(|e| err(key("cap_usd"), e.to_string()))?;
        if cap_nanousd == 0 {
            return Err(err(key("cap_usd"), "must be greater than 0"));
        }
        let mut th = b.soft_thresholds.clone();
        if th.iter().any(|t| *t == 0 || *t >= 100) {
            return Err(err(key("soft_thresholds"), "percentages between 1 and 99"));
        }
        th.sort_unstable();
        th.dedup();
        match (b.action, &b.downgrade_to) {
            (Action::Downgrade, None) => {
                return Err(err(key("downgrade_to"), "`downgrade` needs a model to downgrade to"))
            }
            (Action::Downgrade, Some(m)) if !gw.model_routes.contains_key(m) => {
                return Err(err(key("downgrade_to"), format!("model `{m}` is not served by any upstream")))
            }
            (Action::Reject, Some(_)) => return Err(err(key("downgrade_to"), "only with `action = \"downgrade\"`")),
            _ => {}
        }
        let keys: Vec<String> = gw
            .keys
            .iter()
            .filter(|k| key_is_bound(&k.cfg, b.scope, &b.value, tag.as_ref()))
            .map(|k| k.cfg.id.clone())
            .collect();
        // Headers can set only project, user and tags, and only for keys that allow them.
        let by_headers = matches!(b.scope, Scope::Project | Scope::User | Scope::Tag)
            && gw.keys.iter().any(|k| k.cfg.allow_attribution_headers);
        if keys.is_empty() && !by_headers && !b.unmatched_ok {
            return Err(err(
                key("match"),
                format!(
                    "no key has {} `{}`, so this budget never applies (set `unmatched_ok = true` if that is intended)",
                    b.scope.as_str(),
                    b.value
                ),
            ));
        }
        out.budgets.push(Arc::new(BudgetDef {
            id: b.id.clone(),
            scope: b.scope,
            value: b.value.clone(),
            tag,
            period: PeriodSpec { period: b.period, tz, fixed },
            cap_nanousd,
            soft_thresholds: th,
            action: b.action,
            downgrade_to: b.downgrade_to.clone(),
            keys,
            unmatched_ok: b.unmatched_ok,
        }));
    }
    let mut ids = HashSet::new();
    for (i, r) in rate_limits.iter().enumerate() {
        let key = |f: &str| format!("rate_limits[{i}].{f}");
        if r.id.is_empty() {
            return Err(err(key("id"), "must not be empty"));
        }
        if !ids.insert(r.id.clone()) {
            return Err(err(key("id"), format!("`{}` is used by two rate limits", r.id)));
        }
        if r.requests_per_minute.is_none() && r.tokens_per_minute.is_none() && r.tokens_per_day.is_none() {
            return Err(err(key("id"), "set requests_per_minute, tokens_per_minute or tokens_per_day"));
        }
        for (f, v) in [
            ("requests_per_minute", r.requests_per_minute),
            ("tokens_per_minute", r.tokens_per_minute),
            ("tokens_per_day", r.tokens_per_day),
        ] {
            if v == Some(0) {
                return Err(err(key(f), "must be greater than 0"));
            }
        }
        out.rate_limits.push(Arc::new(RateLimitDef {
            id: r.id.clone(),
            scope: r.scope,
            value: r.value.clone(),
            requests_per_minute: r.requests_per_minute,
            tokens_per_minute: r.tokens_per_minute,
            tokens_per_day: r.tokens_per_day,
        }));
    }
    for (i, a) in admin_keys.iter().enumerate() {
        let digest = crate::config::parse_key_hash(&a.hash).ok_or_else(|| {
            err(
                format!("admin_keys[{i}].hash"),
                "must be `sha256:` followed by 64 hex digits (see `tollgate hash-key`)",
            )
        })?;
        if gw.keys.iter().any(|k| k.digest == digest) {
            return Err(err(format!("admin_keys[{i}].hash"), "an admin key must not also be a virtual key"));
        }
        out.admin_keys.push((a.id.clone(), digest));
    }
    Ok(out)
}
