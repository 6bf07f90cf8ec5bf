-- 0002_event_v2: call event schema 2 appends four columns (cache hits and their savings, the guard that
-- rejected or flagged a call, the routing strategy's predicted cost). Rows written before have the
-- defaults (no cache hit, nothing saved, no guard, no prediction), which is what those calls were.
--
-- 18.16 has no `ADD COLUMN IF NOT EXISTS`; one ALTER adds all four, and the migration runner treats
-- "column already exists" (code 44) on an ADD COLUMN as done, so an interrupted run can run again.

ALTER TABLE calls
    ADD COLUMN cache_hit UInt8 DEFAULT 0,
    ADD COLUMN saved_nanousd UInt64 DEFAULT 0,
    ADD COLUMN guard String DEFAULT '',
    ADD COLUMN predicted_cost_nanousd UInt64 DEFAULT 0
