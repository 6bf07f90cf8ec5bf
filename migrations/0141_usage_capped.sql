-- 0141_usage_capped: `usage_source = 'capped'` marks events whose provider-reported token counts were not
-- believable (negative, fractional, far beyond the model's window, or a cost beyond UInt64) and were capped.
-- Adding a value to an Enum8 only changes metadata: existing parts are not rewritten. Runs again harmlessly.
ALTER TABLE calls MODIFY COLUMN usage_source Enum8('provider' = 1, 'estimated' = 2, 'none' = 3, 'estimated_approx' = 4, 'capped' = 5);
