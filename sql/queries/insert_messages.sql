-- One batch of processed messages as parallel arrays: a single round trip whatever the
-- batch size. Each message_id is claimed in message_keys first and only rows whose key was
-- new are inserted, so a message_id is stored once whatever its sent_at; re-delivery and
-- dead-letter replay add nothing. What the stored rows add to the rollups is appended in
-- the same statement, so rollups count exactly the rows stored. Keys are claimed in message_id order, so two batches
-- holding the same ids wait for each other instead of deadlocking.
--
-- One row per message of the batch (its ids are distinct): whether it was stored, and for
-- one that was not, the content hash of the copy that was (NULL when unknown: stored
-- before keys existed, or by a transaction that committed while this one ran).
WITH batch AS (
    SELECT *
      FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
                  $7::timestamptz[], $8::text[], $9::real[], $10::real[], $11::text[], $12::jsonb[],
                  $13::text[], $14::bool[], $15::jsonb[], $16::jsonb[], $17::int4[], $18::int8[],
                  $19::bytea[])
           AS m(message_id, bot_id, conversation_id, user_id, text, sent_at, received_at,
                sentiment_label, sentiment_score, toxicity, language, nlp, nlp_status,
                flagged, flagged_terms, metadata, kafka_partition, kafka_offset, content_hash)
), claimed AS (
    INSERT INTO message_keys (message_id, sent_at, content_hash)
    SELECT message_id, sent_at, content_hash FROM batch ORDER BY message_id
    ON CONFLICT (message_id) DO NOTHING
    RETURNING message_id
), stored AS (
    INSERT INTO messages (
        message_id, bot_id, conversation_id, user_id, text, sent_at, received_at, processed_at,
        sentiment_label, sentiment_score, toxicity, language, nlp, nlp_status,
        flagged, flagged_terms, metadata, kafka_partition, kafka_offset)
    SELECT m.message_id, m.bot_id, m.conversation_id, m.user_id, m.text, m.sent_at, m.received_at,
           clock_timestamp(), m.sentiment_label, m.sentiment_score, m.toxicity, m.language, m.nlp,
           m.nlp_status, m.flagged, ARRAY(SELECT jsonb_array_elements_text(m.flagged_terms)),
           m.metadata, m.kafka_partition, m.kafka_offset
      FROM batch m
      JOIN claimed USING (message_id)
    ON CONFLICT DO NOTHING
    RETURNING message_id
), rollup AS (
    -- What the stored rows add to the rollups, in this transaction (sql/0005_rollups.sql).
    INSERT INTO rollup_pending
    SELECT date_trunc('minute', m.sent_at, 'UTC'), m.bot_id,
           count(*), count(m.sentiment_label), count(m.sentiment_score),
           coalesce(sum(m.sentiment_score::float8::numeric), 0),
           count(*) FILTER (WHERE m.sentiment_label = 'negative'),
           count(*) FILTER (WHERE m.sentiment_label = 'neutral'),
           count(*) FILTER (WHERE m.sentiment_label = 'positive'),
           count(m.toxicity), coalesce(sum(m.toxicity::float8::numeric), 0), max(m.toxicity),
           count(*) FILTER (WHERE m.flagged), count(*) FILTER (WHERE m.nlp_status <> 'ok')
      FROM batch m
      JOIN stored USING (message_id)
     GROUP BY 1, 2
), terms AS (
    INSERT INTO flagged_terms_pending
    SELECT (m.sent_at AT TIME ZONE 'UTC')::date, m.bot_id, t.term, count(*)
      FROM batch m
      JOIN stored USING (message_id)
     CROSS JOIN LATERAL (SELECT DISTINCT jsonb_array_elements_text(m.flagged_terms)) AS t(term)
     WHERE m.flagged
     GROUP BY 1, 2, 3
)
SELECT b.message_id,
       s.message_id IS NOT NULL AS stored,
       -- Looked up only for the rows not stored (in most batches, none); a join would
       -- search the key index once for every row.
       CASE WHEN s.message_id IS NULL
            THEN (SELECT k.content_hash FROM message_keys k WHERE k.message_id = b.message_id)
       END AS stored_content_hash
  FROM batch b
  LEFT JOIN stored s USING (message_id)
