//! Re-pricing the ClickHouse call log: the events in scope are read, their new cost computed in Rust
//! (the same pricing code metering uses), the before/after of each changed event recorded in
//! `price_adjustments`, and `calls` corrected in place by `ALTER TABLE … UPDATE` mutations, so every
//! report keeps summing `cost_nanousd` and stays exact. The run itself goes to `price_reprices`.
//!
//! Values reach SQL only as bound parameters (escaped by the client) or as JSON data rows, never pasted.

use crate::config::ClickHouseConfig;
use crate::error::ChError;
use crate::{fetch_json, run};
use std::time::{Duration, Instant};
use tollgate_events::prices::reprice::{reprice_event, RepriceAudit, RepriceChange, RepriceScope};
use tollgate_events::{CallEvent, PriceTable, UsageSource};

/// Events corrected per mutation: keeps each statement well under ClickHouse's 256 KiB query limit.
const CHUNK: usize = 500;
/// How long to wait for the mutations to finish.
const MUTATION_WAIT: Duration = Duration::from_secs(300);

/// Finds the events in `scope` whose cost changes under `table`.
pub async fn plan(
    cfg: &ClickHouseConfig,
    table: &PriceTable,
    scope: &RepriceScope,
) -> Result<Vec<RepriceChange>, ChError> {
    let timeout = Duration::from_millis(cfg.request_timeout_ms.max(60_000));
    let db = cfg.client();
    let from_date = tollgate_events::date_of_day(scope.from_us.div_euclid(86_400_000_000));
    let to_date = tollgate_events::date_of_day(scope.to_us.saturating_sub(1).div_euclid(86_400_000_000));
    let q = db
        .query(
            "SELECT event_id, ts_start_us, served_model, requested_model, upstream, input_tokens, output_tokens, \
             cached_input_tokens, cache_write_tokens, reasoning_tokens, toString(usage_source), cost_nanousd, price_id \
             FROM calls WHERE ts_start_us >= ? AND ts_start_us < ? AND date >= ? AND date <= ? ORDER BY ts_start_us",
        )
        .bind(scope.from_us)
        .bind(scope.to_us)
        .bind(from_date.as_str())
        .bind(to_date.as_str());
    let rows = fetch_json(q, timeout).await?;
    let text = |v: Option<&serde_json::Value>| v.and_then(|x| x.as_str()).unwrap_or("").to_string();
    let num = |v: Option<&serde_json::Value>| v.and_then(|x| x.as_u64()).unwrap_or(0);
    let mut changes = Vec::new();
    for r in rows {
        let ev = CallEvent {
            event_id: text(r.first()),
            ts_start_us: r.get(1).and_then(|x| x.as_i64()).unwrap_or(0),
            served_model: text(r.get(2)).into(),
            requested_model: text(r.get(3)).into(),
            upstream: text(r.get(4)).into(),
            input_tokens: num(r.get(5)),
            output_tokens: num(r.get(6)),
            cached_input_tokens: num(r.get(7)),
            cache_write_tokens: num(r.get(8)),
            reasoning_tokens: num(r.get(9)),
            usage_source: if text(r.get(10)) == "capped" { UsageSource::Capped } else { UsageSource::Provider },
            cost_nanousd: num(r.get(11)),
            price_id: text(r.get(12)).into(),
            ..Default::default()
        };
        if !scope.covers(ev.ts_start_us, &ev.served_model, &ev.requested_model) {
            continue;
        }
        if let Some(c) = reprice_event(table, &ev) {
            changes.push(c);
        }
    }
    Ok(changes)
}

/// Records and applies `changes`, then the run's audit row. Waits until `calls` shows the new costs.
pub async fn apply(cfg: &ClickHouseConfig, changes: &[RepriceChange], audit: &RepriceAudit) -> Result<(), ChError> {
    let timeout = Duration::from_millis(cfg.request_timeout_ms.max(60_000));
    let db = cfg.client();
    let applied_at = chrono::DateTime::from_timestamp_micros(now_us())
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default();
    for chunk in changes.chunks(CHUNK) {
        let mut rows = String::new();
        for c in chunk {
            let row = serde_json::json!({
                "reprice_id": audit.reprice_id,
                "applied_at": applied_at,
                "event_id": c.event_id,
                "ts_start_us": c.ts_start_us,
                "date": tollgate_events::date_of_day(c.ts_start_us.div_euclid(86_400_000_000)),
                "served_model": c.served_model,
                "old_price_id": c.old_price_id,
                "new_price_id": c.new_price_id,
                "old_cost_nanousd": c.old_cost_nanousd,
                "new_cost_nanousd": c.new_cost_nanousd,
            });
            rows.push_str(&row.to_string());
            rows.push('\n');
        }
        // JSON rows after FORMAT are data to ClickHouse's format parser, not SQL.
        run(db.query_raw(&format!("INSERT INTO price_adjustments FORMAT JSONEachRow\n{rows}")), timeout).await?;
        let ids: Vec<&str> = chunk.iter().map(|c| c.event_id.as_str()).collect();
        let costs: Vec<u64> = chunk.iter().map(|c| c.new_cost_nanousd).collect();
        let prices: Vec<&str> = chunk.iter().map(|c| c.new_price_id.as_str()).collect();
        let q = db
            .query(
                "ALTER TABLE calls UPDATE \
                 cost_nanousd = transform(event_id, ?, CAST(? AS Array(UInt64)), cost_nanousd), \
                 price_id = transform(event_id, ?, ?, price_id) \
                 WHERE has(?, event_id)",
            )
            .bind(&ids)
            .bind(&costs)
            .bind(&ids)
            .bind(&prices)
            .bind(&ids);
        run(q, timeout).await?;
    }
    wait_for_mutations(cfg, timeout).await?;
    let row = serde_json::json!({
        "reprice_id": audit.reprice_id,
        "applied_at": applied_at,
        "who": audit.who,
        "from_us": audit.from_us,
        "to_us": audit.to_us,
        "model": audit.model,
        "events": audit.events_changed,
        "old_total_nanousd": audit.old_total_nanousd,
        "new_total_nanousd": audit.new_total_nanousd,
        "delta_nanousd": audit.delta_nanousd,
    });
    run(db.query_raw(&format!("INSERT INTO price_reprices FORMAT JSONEachRow\n{row}\n")), timeout).await
}

async fn wait_for_mutations(cfg: &ClickHouseConfig, timeout: Duration) -> Result<(), ChError> {
    let db = cfg.client();
    let start = Instant::now();
    loop {
        let q = db
            .query("SELECT count() FROM system.mutations WHERE database = ? AND table = 'calls' AND is_done = 0")
            .bind(cfg.database.as_str());
        let rows = fetch_json(q, timeout).await?;
        let pending = rows.first().and_then(|r| r.first()).and_then(|v| v.as_u64()).unwrap_or(0);
        if pending == 0 {
            return Ok(());
        }
        if start.elapsed() > MUTATION_WAIT {
            return Err(ChError::Unavailable(format!(
                "{pending} re-price mutations still running after {} s; they finish in the background",
                MUTATION_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}
