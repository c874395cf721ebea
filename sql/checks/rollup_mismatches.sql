-- How many (bucket, bot) rows of each rollup differ from aggregating the raw rows, column by
-- column, counting what is still pending and the minutes not yet in the hours and days (sql/0011).
-- All zero when the rollups are exact; run by `make chaos` after its faults
-- (scripts/chaos_accounting.py) and by hand:
--     psql -X -A -t -d chat_analytics -f sql/checks/rollup_mismatches.sql
-- Only meaningful while raw rows and rollups cover the same days (raw retention has not
-- dropped any partition yet).
WITH raw AS (
    SELECT date_trunc('minute', sent_at, 'UTC') AS bucket, bot_id,
           count(*) AS messages, count(sentiment_label) AS analyzed_messages,
           count(sentiment_score) AS scored_messages,
           coalesce(sum(sentiment_score::float8::numeric), 0) AS sentiment_sum,
           count(*) FILTER (WHERE sentiment_label = 'negative') AS negative_messages,
           count(*) FILTER (WHERE sentiment_label = 'neutral') AS neutral_messages,
           count(*) FILTER (WHERE sentiment_label = 'positive') AS positive_messages,
           count(toxicity) AS toxicity_messages,
           coalesce(sum(toxicity::float8::numeric), 0) AS toxicity_sum,
           max(toxicity) AS toxicity_max,
           count(*) FILTER (WHERE flagged) AS flagged_messages,
           count(*) FILTER (WHERE nlp_status <> 'ok') AS nlp_missing_messages
      FROM messages
     GROUP BY 1, 2
), levels(level, unit) AS (
    VALUES ('messages_per_minute', 'minute'), ('messages_per_hour', 'hour'), ('messages_per_day', 'day')
), folded AS (
    SELECT 'messages_per_minute' AS level, * FROM messages_per_minute
    UNION ALL SELECT 'messages_per_hour', * FROM messages_per_hour
    UNION ALL SELECT 'messages_per_day', * FROM messages_per_day
    UNION ALL SELECT l.level, date_trunc(l.unit, p.bucket, 'UTC'), p.bot_id, p.messages,
                     p.analyzed_messages, p.scored_messages, p.sentiment_sum,
                     p.negative_messages, p.neutral_messages, p.positive_messages,
                     p.toxicity_messages, p.toxicity_sum, p.toxicity_max, p.flagged_messages,
                     p.nlp_missing_messages
                FROM rollup_pending p CROSS JOIN levels l
    -- Minutes at or after the mark are not in the hours and days yet (sql/0011).
    UNION ALL SELECT l.level, date_trunc(l.unit, m.bucket, 'UTC'), m.bot_id, m.messages,
                     m.analyzed_messages, m.scored_messages, m.sentiment_sum,
                     m.negative_messages, m.neutral_messages, m.positive_messages,
                     m.toxicity_messages, m.toxicity_sum, m.toxicity_max, m.flagged_messages,
                     m.nlp_missing_messages
                FROM messages_per_minute m CROSS JOIN levels l
               WHERE l.unit <> 'minute'
                 AND m.bucket >= rollup_minutes_mark()
), rollup AS (
    SELECT level, bucket, bot_id, sum(messages) AS messages,
           sum(analyzed_messages) AS analyzed_messages, sum(scored_messages) AS scored_messages,
           sum(sentiment_sum) AS sentiment_sum, sum(negative_messages) AS negative_messages,
           sum(neutral_messages) AS neutral_messages, sum(positive_messages) AS positive_messages,
           sum(toxicity_messages) AS toxicity_messages, sum(toxicity_sum) AS toxicity_sum,
           max(toxicity_max) AS toxicity_max, sum(flagged_messages) AS flagged_messages,
           sum(nlp_missing_messages) AS nlp_missing_messages
      FROM folded
     GROUP BY 1, 2, 3
), expected AS (
    SELECT l.level, date_trunc(l.unit, r.bucket, 'UTC') AS bucket, r.bot_id,
           sum(r.messages) AS messages, sum(r.analyzed_messages) AS analyzed_messages,
           sum(r.scored_messages) AS scored_messages, sum(r.sentiment_sum) AS sentiment_sum,
           sum(r.negative_messages) AS negative_messages, sum(r.neutral_messages) AS neutral_messages,
           sum(r.positive_messages) AS positive_messages, sum(r.toxicity_messages) AS toxicity_messages,
           sum(r.toxicity_sum) AS toxicity_sum, max(r.toxicity_max) AS toxicity_max,
           sum(r.flagged_messages) AS flagged_messages,
           sum(r.nlp_missing_messages) AS nlp_missing_messages
      FROM raw r CROSS JOIN levels l
     GROUP BY 1, 2, 3
), terms_raw AS (
    SELECT (m.sent_at AT TIME ZONE 'UTC')::date AS day, m.bot_id, t.term, count(*) AS messages
      FROM messages m CROSS JOIN LATERAL (SELECT DISTINCT unnest(m.flagged_terms)) AS t(term)
     WHERE m.flagged
     GROUP BY 1, 2, 3
)
SELECT l.level,
       (SELECT count(*) FROM (SELECT * FROM expected e WHERE e.level = l.level
                              EXCEPT ALL SELECT * FROM rollup r WHERE r.level = l.level) a)
     + (SELECT count(*) FROM (SELECT * FROM rollup r WHERE r.level = l.level
                              EXCEPT ALL SELECT * FROM expected e WHERE e.level = l.level) b)
       AS mismatches
  FROM levels l
UNION ALL
SELECT 'flagged_terms_per_day',
       (SELECT count(*) FROM (SELECT * FROM terms_raw EXCEPT ALL
                              SELECT day, bot_id, term, messages FROM flagged_terms_daily) a)
     + (SELECT count(*) FROM (SELECT day, bot_id, term, messages FROM flagged_terms_daily
                              EXCEPT ALL SELECT * FROM terms_raw) b);
