-- 0161_calls_daily: the daily rollup that answers long-range reports (showback, chargeback, budget spend,
-- latency by model) without reading the raw call log.
--
-- One row per UTC day and combination of the attribution, model, route and outcome columns: about
-- users x models x outcomes rows a day, 20-50x fewer than calls at fleet scale. Reports that group by a
-- column that is not here (stream, tags, ...) read the raw table.
--
-- * SummingMergeTree: a background merge adds up rows with the same key; queries always `sum()` because
--   rows of one key may sit in parts not merged yet. Money stays integer nano-USD (UInt64 sums).
-- * `attempts` counts upstream attempts (one event each, every one a separate bill); `calls` counts
--   requests, each once, by its last attempt (an attempt that was retried has finish_reason `retried`).
-- * `latencyMap` / `ttftMap`: mergeable latency histograms (SummingMergeTree adds nested tables whose
--   name ends in `Map` key by key). A bucket keeps values below 256 ms exactly and larger ones with 7
--   significant bits, so a percentile read from it is within 0.4% of the exact one. The bucket is integer
--   arithmetic that DataFusion computes identically, so both engines give the same approximate answer.
--   `ttftMap` counts calls that produced content (ttft > 0) only.
-- * Kept current by a materialized view on inserts into `calls`; the backfill adds what `calls` held
--   when the migration ran. A collector migrates before its sinks start, so nothing is inserted in
--   between; the remaining window (an insert from another collector between the TRUNCATE and the
--   backfill's read, milliseconds) would count those rows twice: migrate with the collectors stopped.
--   The TRUNCATE makes an interrupted migration safe to run again.

CREATE TABLE IF NOT EXISTS calls_daily (
    date Date,
    tenant String,
    department String,
    team String,
    project String,
    user String,
    api_key_id String,
    provider String,
    upstream String,
    requested_model String,
    served_model String,
    route String,
    endpoint Enum8('chat' = 1, 'messages' = 2, 'embeddings' = 3, 'completions' = 4, 'models' = 5, 'other' = 6),
    outcome Enum8('ok' = 1, 'upstream_error' = 2, 'timeout' = 3, 'client_disconnect' = 4, 'unauthorized' = 5,
        'rejected_budget' = 6, 'rejected_rate_limit' = 7, 'rejected_guard' = 8, 'rejected_context' = 9,
        'invalid_request' = 10),
    attempts UInt64,
    calls UInt64,
    input_tokens UInt64,
    output_tokens UInt64,
    cached_input_tokens UInt64,
    cache_write_tokens UInt64,
    reasoning_tokens UInt64,
    cost_nanousd UInt64,
    saved_nanousd UInt64,
    cache_hits UInt64,
    ttft_calls UInt64,
    latencyMap Nested(bucket UInt16, n UInt64),
    ttftMap Nested(bucket UInt16, n UInt64)
) ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(date)
ORDER BY (tenant, department, team, project, user, date, api_key_id, served_model, requested_model, provider,
    upstream, route, endpoint, outcome);

CREATE MATERIALIZED VIEW IF NOT EXISTS calls_daily_mv TO calls_daily AS
SELECT date, tenant, department, team, project, user, api_key_id, provider, upstream, requested_model,
    served_model, route, endpoint, outcome,
    count() AS attempts,
    toUInt64(countIf(finish_reason != 'retried')) AS calls,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cached_input_tokens) AS cached_input_tokens,
    sum(cache_write_tokens) AS cache_write_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    sum(cost_nanousd) AS cost_nanousd,
    sum(saved_nanousd) AS saved_nanousd,
    toUInt64(sum(cache_hit)) AS cache_hits,
    toUInt64(countIf(ttft_ms > 0)) AS ttft_calls,
    tupleElement(sumMap([toUInt16(if(latency_ms < 256, latency_ms, (toUInt32(floor(log2(latency_ms))) - 7) * 128 + bitShiftRight(latency_ms, toUInt32(floor(log2(latency_ms))) - 7)))], [toUInt64(1)]), 1) AS `latencyMap.bucket`,
    tupleElement(sumMap([toUInt16(if(latency_ms < 256, latency_ms, (toUInt32(floor(log2(latency_ms))) - 7) * 128 + bitShiftRight(latency_ms, toUInt32(floor(log2(latency_ms))) - 7)))], [toUInt64(1)]), 2) AS `latencyMap.n`,
    tupleElement(sumMapIf([toUInt16(if(ttft_ms < 256, ttft_ms, (toUInt32(floor(log2(ttft_ms))) - 7) * 128 + bitShiftRight(ttft_ms, toUInt32(floor(log2(ttft_ms))) - 7)))], [toUInt64(1)], ttft_ms > 0), 1) AS `ttftMap.bucket`,
    tupleElement(sumMapIf([toUInt16(if(ttft_ms < 256, ttft_ms, (toUInt32(floor(log2(ttft_ms))) - 7) * 128 + bitShiftRight(ttft_ms, toUInt32(floor(log2(ttft_ms))) - 7)))], [toUInt64(1)], ttft_ms > 0), 2) AS `ttftMap.n`
FROM calls
GROUP BY date, tenant, department, team, project, user, api_key_id, provider, upstream, requested_model,
    served_model, route, endpoint, outcome;

TRUNCATE TABLE calls_daily;

INSERT INTO calls_daily
SELECT date, tenant, department, team, project, user, api_key_id, provider, upstream, requested_model,
    served_model, route, endpoint, outcome,
    count() AS attempts,
    toUInt64(countIf(finish_reason != 'retried')) AS calls,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cached_input_tokens) AS cached_input_tokens,
    sum(cache_write_tokens) AS cache_write_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    sum(cost_nanousd) AS cost_nanousd,
    sum(saved_nanousd) AS saved_nanousd,
    toUInt64(sum(cache_hit)) AS cache_hits,
    toUInt64(countIf(ttft_ms > 0)) AS ttft_calls,
    tupleElement(sumMap([toUInt16(if(latency_ms < 256, latency_ms, (toUInt32(floor(log2(latency_ms))) - 7) * 128 + bitShiftRight(latency_ms, toUInt32(floor(log2(latency_ms))) - 7)))], [toUInt64(1)]), 1) AS `latencyMap.bucket`,
    tupleElement(sumMap([toUInt16(if(latency_ms < 256, latency_ms, (toUInt32(floor(log2(latency_ms))) - 7) * 128 + bitShiftRight(latency_ms, toUInt32(floor(log2(latency_ms))) - 7)))], [toUInt64(1)]), 2) AS `latencyMap.n`,
    tupleElement(sumMapIf([toUInt16(if(ttft_ms < 256, ttft_ms, (toUInt32(floor(log2(ttft_ms))) - 7) * 128 + bitShiftRight(ttft_ms, toUInt32(floor(log2(ttft_ms))) - 7)))], [toUInt64(1)], ttft_ms > 0), 1) AS `ttftMap.bucket`,
    tupleElement(sumMapIf([toUInt16(if(ttft_ms < 256, ttft_ms, (toUInt32(floor(log2(ttft_ms))) - 7) * 128 + bitShiftRight(ttft_ms, toUInt32(floor(log2(ttft_ms))) - 7)))], [toUInt64(1)], ttft_ms > 0), 2) AS `ttftMap.n`
FROM calls
GROUP BY date, tenant, department, team, project, user, api_key_id, provider, upstream, requested_model,
    served_model, route, endpoint, outcome
