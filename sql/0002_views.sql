-- Rollups of `messages` for analysts: per bot, per hour or per day.
--
--   messages_hourly, messages_daily          plain views: every bot, all retained time
--   messages_rollup(unit, from, to [, zone]) the same figures for a time range, and the
--                                            fast way to ask for one
--
-- Columns (the same everywhere):
--   bot_id               the bot
--   bucket               start of the hour / day, as timestamptz. Buckets are cut in UTC
--                        (the partitions' day), whatever the session's TimeZone, unless
--                        messages_rollup is given another zone.
--   messages             number of messages sent in the bucket (by sent_at)
--   analyzed_messages    messages with an NLP sentiment (the denominator of the shares)
--   avg_sentiment_score  mean sentiment score, -1..1, over analysed messages
--   negative_share       share of analysed messages labelled negative, 0..1
--   positive_share       share of analysed messages labelled positive, 0..1
--   avg_toxicity         mean toxicity, 0..1, over analysed messages
--   max_toxicity         highest toxicity in the bucket
--   flagged_messages     messages that hit the moderation word lists
--   flagged_rate         flagged_messages / messages, 0..1
--   nlp_not_ok_share     share of messages stored without NLP data (nlp_status <> 'ok':
--                        breaker open, failed after retries, invalid response), 0..1
-- Averages and shares are NULL when the bucket has no analysed message.
--
-- How to query
-- ------------
-- For one bot and a time range, call the function with the range: it is an inlinable
-- SQL function, so Postgres plans it as if the range were written in the query, keeps
-- only the partitions of those days, and reads them through the (bot_id, sent_at) index:
--
--   SELECT * FROM messages_rollup('hour', '2024-03-01 00:00+00', '2024-03-08 00:00+00')
--    WHERE bot_id = 'support-bot'
--    ORDER BY bucket;
--
--   -- from an application, with parameters:
--   SELECT * FROM messages_rollup('day', $2, $3) WHERE bot_id = $1 ORDER BY bucket;
--
-- `from` is inclusive, `to` exclusive, on sent_at. Any date_trunc unit works ('minute',
-- 'week', 'month', ...), and an optional fourth argument cuts buckets in another time
-- zone: messages_rollup('day', $2, $3, 'Europe/Berlin').
--
-- The views suit dashboards and ad-hoc looks across bots:
--
--   SELECT * FROM messages_daily WHERE bot_id = 'support-bot' ORDER BY bucket DESC LIMIT 7;
--   SELECT bot_id, sum(flagged_messages) FROM messages_daily
--    WHERE bucket >= date_trunc('day', now(), 'UTC') - interval '7 days' GROUP BY bot_id;
--
-- but note the cost: a filter on `bucket` cannot be turned into a sent_at range (it is a
-- computed column), so `WHERE bot_id = $1 AND bucket >= ...` on a view reads all of that
-- bot's rows in every partition, then discards the ones outside the range. Fine for a
-- quiet bot; for a busy bot or a short range use messages_rollup(...) as above.
--
-- Full-text search, when switched on (index messages_text_fts_idx), must use the indexed
-- expression exactly:
--
--   SELECT message_id, sent_at, text FROM messages
--    WHERE bot_id = $1 AND sent_at >= $2 AND sent_at < $3
--      AND to_tsvector('simple', text) @@ plainto_tsquery('simple', $4);
--
-- Changing a column's type or order later needs DROP VIEW / DROP FUNCTION first
-- (CREATE OR REPLACE only allows adding columns at the end of a view).

CREATE OR REPLACE FUNCTION messages_rollup(
    p_unit text,
    p_from timestamptz,
    p_to   timestamptz,
    p_zone text DEFAULT 'UTC'
)
RETURNS TABLE (
    bot_id              text,
    bucket              timestamptz,
    messages            bigint,
    analyzed_messages   bigint,
    avg_sentiment_score double precision,
    negative_share      double precision,
    positive_share      double precision,
    avg_toxicity        double precision,
    max_toxicity        real,
    flagged_messages    bigint,
    flagged_rate        double precision,
    nlp_not_ok_share    double precision
)
-- LANGUAGE sql + STABLE + a single SELECT, no STRICT / SECURITY DEFINER / SET: the
-- conditions under which the planner inlines it, which is what makes the range prune.
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT m.bot_id,
           date_trunc(p_unit, m.sent_at, p_zone),
           count(*),
           count(m.sentiment_label),
           avg(m.sentiment_score),
           count(*) FILTER (WHERE m.sentiment_label = 'negative')::float8
               / NULLIF(count(m.sentiment_label), 0),
           count(*) FILTER (WHERE m.sentiment_label = 'positive')::float8
               / NULLIF(count(m.sentiment_label), 0),
           avg(m.toxicity),
           max(m.toxicity),
           count(*) FILTER (WHERE m.flagged),
           count(*) FILTER (WHERE m.flagged)::float8 / count(*),
           count(*) FILTER (WHERE m.nlp_status <> 'ok')::float8 / count(*)
      FROM messages m
     WHERE m.sent_at >= p_from
       AND m.sent_at < p_to
     GROUP BY 1, 2
$$;

COMMENT ON FUNCTION messages_rollup(text, timestamptz, timestamptz, text) IS
    'Per bot per bucket rollup of messages with sent_at in [p_from, p_to); see sql/0002_views.sql.';

-- Every bot, every retained hour.
CREATE OR REPLACE VIEW messages_hourly AS
SELECT * FROM messages_rollup('hour', '-infinity', 'infinity');

COMMENT ON VIEW messages_hourly IS
    'Per bot per UTC hour: volume, sentiment, toxicity, flagged rate; see sql/0002_views.sql.';

-- Every bot, every retained day (UTC days, the same as the daily partitions).
CREATE OR REPLACE VIEW messages_daily AS
SELECT * FROM messages_rollup('day', '-infinity', 'infinity');

COMMENT ON VIEW messages_daily IS
    'Per bot per UTC day: volume, sentiment, toxicity, flagged rate; see sql/0002_views.sql.';
