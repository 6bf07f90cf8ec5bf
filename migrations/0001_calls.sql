-- 0001_calls: the call log, one row per request that reached a gateway.
--
-- Runs unchanged on ClickHouse 18.16 (Debian's package) and on current releases (checked on 26.9), so it
-- uses only what both accept: no DateTime64, Map, Bool, CODEC, TTL or LowCardinality (the last needs a
-- setting on 18.16 that 26.x no longer knows).
--
-- Layout, for tens of billions of rows:
-- * PARTITION BY month: chargeback is monthly, so a finance query touches one partition and a month can be
--   detached, moved or dropped as a unit. Months keep the partition count low (a partition per day over
--   years would mean thousands of parts to merge and open).
-- * ORDER BY (tenant, department, team, project, date, ts_start_us): within a month the rows of one
--   department (and of one team inside it) are one contiguous range of the primary key, so showback and
--   budget queries read that range only; the date then narrows it to the days asked. Sorting by the
--   attribution columns also makes those columns compress to almost nothing.
-- * Strings for attribution and models: low-cardinality values sorted together compress very well with
--   LZ4; Enum8 for the closed sets (endpoint, client_api, outcome, usage_source): one byte each, and a new
--   value is a migration, which is what we want.
-- * Times: `ts_start` (DateTime, UTC, seconds) for humans and Grafana, and the exact `ts_start_us` /
--   `ts_end_us` (Int64 microseconds) that reports filter on. `date` is the UTC day of `ts_start`.
-- * Money is `cost_nanousd` UInt64 (USD x 10^9, exact); sums stay UInt64.
-- * `batch_id` names the collector batch that inserted the row (`<collector id>-<offset>`): a batch whose
--   acknowledgement was lost is looked up by it before being sent again, so it never lands twice.
--
-- Statements are idempotent (IF NOT EXISTS) so that a migration interrupted half-way can simply run again.

CREATE TABLE IF NOT EXISTS calls (
    schema_version UInt16,
    event_id String,
    request_id String,
    ts_start DateTime('UTC'),
    ts_start_us Int64,
    ts_end_us Int64,
    date Date,
    tenant String,
    department String,
    team String,
    project String,
    user String,
    api_key_id String,
    tag_keys Array(String),
    tag_values Array(String),
    endpoint Enum8('chat' = 1, 'messages' = 2, 'embeddings' = 3, 'completions' = 4, 'models' = 5, 'other' = 6),
    client_api Enum8('openai' = 1, 'anthropic' = 2),
    stream UInt8,
    provider String,
    upstream String,
    requested_model String,
    served_model String,
    route String,
    routing_strategy String,
    attempt UInt16,
    fallback_from String,
    status_code UInt16,
    outcome Enum8('ok' = 1, 'upstream_error' = 2, 'timeout' = 3, 'client_disconnect' = 4, 'unauthorized' = 5,
        'rejected_budget' = 6, 'rejected_rate_limit' = 7, 'rejected_guard' = 8, 'rejected_context' = 9,
        'invalid_request' = 10),
    error_type String,
    finish_reason String,
    input_tokens UInt64,
    output_tokens UInt64,
    cached_input_tokens UInt64,
    cache_write_tokens UInt64,
    reasoning_tokens UInt64,
    usage_source Enum8('provider' = 1, 'estimated' = 2, 'none' = 3, 'estimated_approx' = 4),
    cost_nanousd UInt64,
    price_id String,
    latency_ms UInt32,
    ttft_ms UInt32,
    upstream_latency_ms UInt32,
    gateway_overhead_us UInt32,
    request_bytes UInt64,
    response_bytes UInt64,
    batch_id String
) ENGINE = MergeTree
PARTITION BY toYYYYMM(date)
ORDER BY (tenant, department, team, project, date, ts_start_us);
