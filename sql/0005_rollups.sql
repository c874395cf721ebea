-- Incremental rollups of `messages`, per bot per minute, hour and UTC day, exactly equal to
-- aggregating the raw rows.
--
-- How they stay exact
-- -------------------
-- The statement that inserts a batch (sql/queries/insert_messages.sql) also appends, in
-- the same transaction, one `rollup_pending` row per (bot, minute) holding the sums of the
-- rows it actually inserted: a duplicate, a replay or a re-delivery inserts nothing and so
-- adds nothing. Re-enrichment (sql/queries/update_enrichment.sql) appends the difference it
-- makes (NLP data filled in, one message less without it). Appending never waits on
-- another writer: concurrent batches do not contend for a hot (bot, minute) row.
--
-- The rollup folder (the worker's `RollupFolder`, one at a time under an advisory lock)
-- moves pending rows into messages_per_minute / _per_hour / _per_day in one transaction:
-- the pending rows it deletes are exactly the ones it adds. Readers (the views and
-- messages_rollup below) add whatever is still pending, so in any snapshot
--     folded + pending = aggregate of the raw rows.
--
-- Sums are `numeric` over each value's float8: addition is exact, so the result does not
-- depend on the order rows were added or folded. `toxicity_max` only ever grows (rows are
-- added, and re-enrichment fills a NULL), so folding takes the greatest.
--
-- Dropping a raw partition (retention) leaves the rollups alone: they have their own
-- retention (`rollups.retention_days`, `rollups.minute_retention_days`), applied by the
-- partition maintainer.

CREATE TABLE IF NOT EXISTS messages_per_minute (
    bucket               timestamptz NOT NULL,   -- start of the UTC minute of sent_at
    bot_id               text        NOT NULL,
    messages             bigint      NOT NULL,   -- rows
    analyzed_messages    bigint      NOT NULL,   -- rows with a sentiment_label
    scored_messages      bigint      NOT NULL,   -- rows with a sentiment_score
    sentiment_sum        numeric     NOT NULL,   -- sum of sentiment_score::float8
    negative_messages    bigint      NOT NULL,   -- sentiment_label = 'negative'
    neutral_messages     bigint      NOT NULL,   -- sentiment_label = 'neutral'
    positive_messages    bigint      NOT NULL,   -- sentiment_label = 'positive'
    toxicity_messages    bigint      NOT NULL,   -- rows with a toxicity
    toxicity_sum         numeric     NOT NULL,   -- sum of toxicity::float8
    toxicity_max         real,                   -- NULL while no row has a toxicity
    flagged_messages     bigint      NOT NULL,   -- flagged by moderation
    nlp_missing_messages bigint      NOT NULL,   -- nlp_status <> 'ok'
    PRIMARY KEY (bucket, bot_id)
);
CREATE INDEX IF NOT EXISTS messages_per_minute_bot_idx ON messages_per_minute (bot_id, bucket);

-- The same columns per UTC hour and per UTC day.
CREATE TABLE IF NOT EXISTS messages_per_hour (LIKE messages_per_minute INCLUDING ALL);
CREATE TABLE IF NOT EXISTS messages_per_day (LIKE messages_per_minute INCLUDING ALL);

-- Deltas not folded yet: appended by writers, emptied by the folder. No key: two
-- transactions may each add to the same (bot, minute).
CREATE TABLE IF NOT EXISTS rollup_pending (LIKE messages_per_minute INCLUDING DEFAULTS);
CREATE INDEX IF NOT EXISTS rollup_pending_bucket_idx ON rollup_pending (bucket);

-- Messages per bot per UTC day carrying each flagged term (a message counts once per term).
CREATE TABLE IF NOT EXISTS flagged_terms_per_day (
    day      date   NOT NULL,
    bot_id   text   NOT NULL,
    term     text   NOT NULL,
    messages bigint NOT NULL,
    PRIMARY KEY (day, bot_id, term)
);
CREATE TABLE IF NOT EXISTS flagged_terms_pending (LIKE flagged_terms_per_day INCLUDING DEFAULTS);
CREATE INDEX IF NOT EXISTS flagged_terms_pending_day_idx ON flagged_terms_pending (day);

-- Rows stored before the rollups existed: aggregated once, here.
INSERT INTO rollup_pending
SELECT date_trunc('minute', sent_at, 'UTC'), bot_id,
       count(*), count(sentiment_label), count(sentiment_score),
       coalesce(sum(sentiment_score::float8::numeric), 0),
       count(*) FILTER (WHERE sentiment_label = 'negative'),
       count(*) FILTER (WHERE sentiment_label = 'neutral'),
       count(*) FILTER (WHERE sentiment_label = 'positive'),
       count(toxicity), coalesce(sum(toxicity::float8::numeric), 0), max(toxicity),
       count(*) FILTER (WHERE flagged), count(*) FILTER (WHERE nlp_status <> 'ok')
  FROM messages
 GROUP BY 1, 2;

INSERT INTO flagged_terms_pending
SELECT (m.sent_at AT TIME ZONE 'UTC')::date, m.bot_id, t.term, count(*)
  FROM messages m
 CROSS JOIN LATERAL (SELECT DISTINCT unnest(m.flagged_terms)) AS t(term)
 WHERE m.flagged
 GROUP BY 1, 2, 3;

-- Analysts' figures from summed rollup columns: the one place the means and shares are
-- derived (NULL when nothing in the bucket had the value). Inlined into the queries below.
CREATE OR REPLACE FUNCTION rollup_figures(
    p_bot_id text, p_bucket timestamptz, p_messages numeric, p_analyzed numeric,
    p_scored numeric, p_sentiment_sum numeric, p_negative numeric, p_positive numeric,
    p_toxicity_n numeric, p_toxicity_sum numeric, p_toxicity_max real, p_flagged numeric,
    p_nlp_missing numeric)
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
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT p_bot_id, p_bucket, p_messages::bigint, p_analyzed::bigint,
           (p_sentiment_sum / NULLIF(p_scored, 0))::float8,
           (p_negative / NULLIF(p_analyzed, 0))::float8,
           (p_positive / NULLIF(p_analyzed, 0))::float8,
           (p_toxicity_sum / NULLIF(p_toxicity_n, 0))::float8,
           p_toxicity_max,
           p_flagged::bigint,
           (p_flagged / NULLIF(p_messages, 0))::float8,
           (p_nlp_missing / NULLIF(p_messages, 0))::float8
$$;

-- Per bot per bucket of `p_unit` (any date_trunc unit from 'minute' up) cut in `p_zone`,
-- for messages with sent_at in [p_from, p_to), both taken to the whole UTC minute: the
-- rollups' resolution. Open ranges ('-infinity', 'infinity') are clamped to the data.
--
-- Each part of the range is read from the coarsest rollup that fits it: a UTC day's row
-- when the whole day lies in the range and in one output bucket, else its hours' rows on
-- the same terms, else minute rows; plus what is still pending. A zone whose offset is not
-- a whole number of hours (Asia/Kolkata) is read from hour rows only where an hour fits
-- its buckets, so the answer is exact in every zone, only slower in those.
--
-- LANGUAGE sql, STABLE, one SELECT: the planner inlines it, so `WHERE bot_id = $1` in
-- the caller's query reaches each rollup's index.
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
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    WITH data AS (
        SELECT least((SELECT min(d.bucket) FROM messages_per_day d),
                     (SELECT date_trunc('day', min(p.bucket), 'UTC') FROM rollup_pending p)) AS lo,
               greatest((SELECT max(d.bucket) + interval '24 hours' FROM messages_per_day d),
                        (SELECT max(p.bucket) + interval '1 minute' FROM rollup_pending p)) AS hi
    ), bounds AS (
        SELECT greatest(date_trunc('minute', p_from, 'UTC'), data.lo) AS f,
               least(date_trunc('minute', p_to, 'UTC'), data.hi) AS t
          FROM data
    ), days AS (
        SELECT g AS d
          FROM bounds, generate_series(date_trunc('day', f, 'UTC'), t, interval '24 hours') g
         WHERE g >= f AND g + interval '24 hours' <= t
           AND date_trunc(p_unit, g, p_zone)
             = date_trunc(p_unit, g + interval '24 hours' - interval '1 microsecond', p_zone)
    ), slots AS (
        -- Every UTC hour the range touches, and whether its own row fits an output bucket.
        SELECT g AS h,
               g >= f AND g + interval '1 hour' <= t
               AND date_trunc(p_unit, g, p_zone)
                 = date_trunc(p_unit, g + interval '1 hour' - interval '1 microsecond', p_zone)
                   AS whole,
               greatest(g, f) AS lo, least(g + interval '1 hour', t) AS hi
          FROM bounds, generate_series(date_trunc('hour', f, 'UTC'), t - interval '1 microsecond',
                                       interval '1 hour') g
         WHERE date_trunc('day', g, 'UTC') NOT IN (SELECT d FROM days)
    ), source AS (
        SELECT r.* FROM days JOIN messages_per_day r ON r.bucket = days.d
        UNION ALL
        SELECT r.* FROM slots JOIN messages_per_hour r ON r.bucket = slots.h WHERE slots.whole
        UNION ALL
        SELECT r.* FROM slots JOIN messages_per_minute r
            ON r.bucket >= slots.lo AND r.bucket < slots.hi WHERE NOT slots.whole
        UNION ALL
        SELECT p.* FROM bounds, rollup_pending p WHERE p.bucket >= f AND p.bucket < t
    ), summed AS (
        SELECT s.bot_id, date_trunc(p_unit, s.bucket, p_zone) AS bucket,
               sum(s.messages) AS messages, sum(s.analyzed_messages) AS analyzed,
               sum(s.scored_messages) AS scored, sum(s.sentiment_sum) AS sentiment_sum,
               sum(s.negative_messages) AS negative, sum(s.positive_messages) AS positive,
               sum(s.toxicity_messages) AS toxicity_n, sum(s.toxicity_sum) AS toxicity_sum,
               max(s.toxicity_max) AS toxicity_max, sum(s.flagged_messages) AS flagged,
               sum(s.nlp_missing_messages) AS nlp_missing
          FROM source s
         GROUP BY 1, 2
    )
    SELECT f.*
      FROM summed a
     CROSS JOIN LATERAL rollup_figures(a.bot_id, a.bucket, a.messages, a.analyzed, a.scored,
                                       a.sentiment_sum, a.negative, a.positive, a.toxicity_n,
                                       a.toxicity_sum, a.toxicity_max, a.flagged,
                                       a.nlp_missing) f
$$;

COMMENT ON FUNCTION messages_rollup(text, timestamptz, timestamptz, text) IS
    'Per bot per bucket figures for sent_at in [p_from, p_to), from the rollups; see sql/0005_rollups.sql.';

-- Every bot, every UTC hour / day kept by the rollups' retention. A filter on bucket or
-- bot_id reaches the rollup's index.
CREATE OR REPLACE VIEW messages_hourly AS
SELECT f.*
  FROM (SELECT s.bot_id, s.bucket,
               sum(s.messages) AS messages, sum(s.analyzed_messages) AS analyzed,
               sum(s.scored_messages) AS scored, sum(s.sentiment_sum) AS sentiment_sum,
               sum(s.negative_messages) AS negative, sum(s.positive_messages) AS positive,
               sum(s.toxicity_messages) AS toxicity_n, sum(s.toxicity_sum) AS toxicity_sum,
               max(s.toxicity_max) AS toxicity_max, sum(s.flagged_messages) AS flagged,
               sum(s.nlp_missing_messages) AS nlp_missing
          FROM (SELECT * FROM messages_per_hour
                UNION ALL
                SELECT date_trunc('hour', p.bucket, 'UTC'), p.bot_id, p.messages,
                       p.analyzed_messages, p.scored_messages, p.sentiment_sum,
                       p.negative_messages, p.neutral_messages, p.positive_messages,
                       p.toxicity_messages, p.toxicity_sum, p.toxicity_max,
                       p.flagged_messages, p.nlp_missing_messages
                  FROM rollup_pending p) s
         GROUP BY s.bot_id, s.bucket) a
 CROSS JOIN LATERAL rollup_figures(a.bot_id, a.bucket, a.messages, a.analyzed, a.scored,
                                   a.sentiment_sum, a.negative, a.positive, a.toxicity_n,
                                   a.toxicity_sum, a.toxicity_max, a.flagged, a.nlp_missing) f;

COMMENT ON VIEW messages_hourly IS
    'Per bot per UTC hour: volume, sentiment, toxicity, flagged rate, from the rollups; see sql/0005_rollups.sql.';

CREATE OR REPLACE VIEW messages_daily AS
SELECT f.*
  FROM (SELECT s.bot_id, s.bucket,
               sum(s.messages) AS messages, sum(s.analyzed_messages) AS analyzed,
               sum(s.scored_messages) AS scored, sum(s.sentiment_sum) AS sentiment_sum,
               sum(s.negative_messages) AS negative, sum(s.positive_messages) AS positive,
               sum(s.toxicity_messages) AS toxicity_n, sum(s.toxicity_sum) AS toxicity_sum,
               max(s.toxicity_max) AS toxicity_max, sum(s.flagged_messages) AS flagged,
               sum(s.nlp_missing_messages) AS nlp_missing
          FROM (SELECT * FROM messages_per_day
                UNION ALL
                SELECT date_trunc('day', p.bucket, 'UTC'), p.bot_id, p.messages,
                       p.analyzed_messages, p.scored_messages, p.sentiment_sum,
                       p.negative_messages, p.neutral_messages, p.positive_messages,
                       p.toxicity_messages, p.toxicity_sum, p.toxicity_max,
                       p.flagged_messages, p.nlp_missing_messages
                  FROM rollup_pending p) s
         GROUP BY s.bot_id, s.bucket) a
 CROSS JOIN LATERAL rollup_figures(a.bot_id, a.bucket, a.messages, a.analyzed, a.scored,
                                   a.sentiment_sum, a.negative, a.positive, a.toxicity_n,
                                   a.toxicity_sum, a.toxicity_max, a.flagged, a.nlp_missing) f;

COMMENT ON VIEW messages_daily IS
    'Per bot per UTC day: volume, sentiment, toxicity, flagged rate, from the rollups; see sql/0005_rollups.sql.';

-- Flagged terms per bot per UTC day, folded and pending together.
CREATE OR REPLACE VIEW flagged_terms_daily AS
SELECT day, bot_id, term, sum(messages)::bigint AS messages
  FROM (SELECT * FROM flagged_terms_per_day
        UNION ALL
        SELECT * FROM flagged_terms_pending) t
 GROUP BY day, bot_id, term;

COMMENT ON VIEW flagged_terms_daily IS
    'Messages per bot per UTC day carrying each flagged term; see sql/0005_rollups.sql.';
