-- 0181_endpoint_responses: the `endpoint` enum gains OpenAI's Responses API and the other billable
-- endpoints the gateway now meters (audio transcriptions/translations, speech, image generation,
-- moderations). Existing codes keep their values, so rows already stored read back unchanged; adding
-- values at the end of an Enum8 is a metadata-only change on current releases and a cheap rewrite on
-- 18.16. Tables created later by other migrations (rollups, Distributed tables) that copy this column
-- must list the same values.

ALTER TABLE calls
    MODIFY COLUMN endpoint Enum8('chat' = 1, 'messages' = 2, 'embeddings' = 3, 'completions' = 4, 'models' = 5,
        'other' = 6, 'responses' = 7, 'audio_transcriptions' = 8, 'audio_translations' = 9, 'audio_speech' = 10,
        'images' = 11, 'moderations' = 12)
