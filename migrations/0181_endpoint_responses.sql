-- 0181_endpoint_responses: the `endpoint` enum gains OpenAI's Responses API and the other billable
-- endpoints the gateway now meters (audio transcriptions/translations, speech, image generation,
-- moderations). Existing codes keep their values, so rows already stored read back unchanged; adding
-- values at the end of an Enum8 is a metadata-only change on current releases and a cheap rewrite on
-- 18.16. The daily rollup (0161) copies this column and gets the same values in the same migration:
-- its materialized view writes every new row there, so a value `calls` accepts and `calls_daily` does
-- not would fail the insert into `calls` too. On a cluster each ALTER runs on the local tables and on
-- their Distributed tables.

ALTER TABLE calls
    MODIFY COLUMN endpoint Enum8('chat' = 1, 'messages' = 2, 'embeddings' = 3, 'completions' = 4, 'models' = 5,
        'other' = 6, 'responses' = 7, 'audio_transcriptions' = 8, 'audio_translations' = 9, 'audio_speech' = 10,
        'images' = 11, 'moderations' = 12);

ALTER TABLE calls_daily
    MODIFY COLUMN endpoint Enum8('chat' = 1, 'messages' = 2, 'embeddings' = 3, 'completions' = 4, 'models' = 5,
        'other' = 6, 'responses' = 7, 'audio_transcriptions' = 8, 'audio_translations' = 9, 'audio_speech' = 10,
        'images' = 11, 'moderations' = 12);
