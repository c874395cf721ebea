-- NLP results for rows stored without them (re-enrichment); only rows still without them.
-- What the change adds to the rollups is appended in the same statement: the new values
-- less the old ones (rows stored without NLP data have none of its columns, so in effect
-- the new values), and one message less without NLP data. Returns the rows changed.
WITH u AS (
    -- A row named twice is changed, and counted, once.
    SELECT DISTINCT ON (message_id, sent_at) *
      FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[], $4::real[], $5::real[], $6::text[],
                  $7::jsonb[])
           AS u(message_id, sent_at, sentiment_label, sentiment_score, toxicity, language, nlp)
), old AS (
    SELECT m.message_id, m.sent_at, m.sentiment_label, m.sentiment_score, m.toxicity
      FROM messages m
      JOIN u USING (message_id, sent_at)
     WHERE m.nlp_status <> 'ok'
       FOR UPDATE OF m
), changed AS (
    UPDATE messages AS m
       SET sentiment_label = u.sentiment_label,
           sentiment_score = u.sentiment_score,
           toxicity = u.toxicity,
           language = u.language,
           nlp = u.nlp,
           nlp_status = 'ok'
      FROM u
      JOIN old USING (message_id, sent_at)
     WHERE m.message_id = u.message_id AND m.sent_at = u.sent_at
    RETURNING m.message_id, m.sent_at, m.bot_id, m.sentiment_label, m.sentiment_score, m.toxicity
), rollup AS (
    INSERT INTO rollup_pending
    SELECT date_trunc('minute', c.sent_at, 'UTC'), c.bot_id,
           0,
           count(c.sentiment_label) - count(o.sentiment_label),
           count(c.sentiment_score) - count(o.sentiment_score),
           coalesce(sum(c.sentiment_score::float8::numeric), 0)
               - coalesce(sum(o.sentiment_score::float8::numeric), 0),
           count(*) FILTER (WHERE c.sentiment_label = 'negative')
               - count(*) FILTER (WHERE o.sentiment_label = 'negative'),
           count(*) FILTER (WHERE c.sentiment_label = 'neutral')
               - count(*) FILTER (WHERE o.sentiment_label = 'neutral'),
           count(*) FILTER (WHERE c.sentiment_label = 'positive')
               - count(*) FILTER (WHERE o.sentiment_label = 'positive'),
           count(c.toxicity) - count(o.toxicity),
           coalesce(sum(c.toxicity::float8::numeric), 0)
               - coalesce(sum(o.toxicity::float8::numeric), 0),
           max(c.toxicity),
           0,
           -count(*)
      FROM changed c
      JOIN old o USING (message_id, sent_at)
     GROUP BY 1, 2
)
SELECT count(*) FROM changed
