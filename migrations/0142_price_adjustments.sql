-- 0142_price_adjustments: the audit trail of re-pricing (`tollgate reprice`).
--
-- A re-price corrects `calls.cost_nanousd` and `calls.price_id` in place (an ALTER ... UPDATE mutation),
-- so every report keeps summing one column and stays exact. What the rows were before is kept here:
-- * price_adjustments: one row per corrected event, with its old and new price and cost. Summing
--   `new - old` over a reprice_id gives the money difference of that run.
-- * price_reprices: one row per run: who, when, which range and model, how many events, and the totals
--   before and after (delta_nanousd is signed).
CREATE TABLE IF NOT EXISTS price_adjustments (
    reprice_id String,
    applied_at DateTime('UTC'),
    event_id String,
    ts_start_us Int64,
    date Date,
    served_model String,
    old_price_id String,
    new_price_id String,
    old_cost_nanousd UInt64,
    new_cost_nanousd UInt64
) ENGINE = MergeTree
PARTITION BY toYYYYMM(date)
ORDER BY (date, event_id);

CREATE TABLE IF NOT EXISTS price_reprices (
    reprice_id String,
    applied_at DateTime('UTC'),
    who String,
    from_us Int64,
    to_us Int64,
    model String,
    events UInt64,
    old_total_nanousd UInt64,
    new_total_nanousd UInt64,
    delta_nanousd Int64
) ENGINE = MergeTree
ORDER BY (applied_at, reprice_id);
