-- Readers of the rollups (sql/0005_rollups.sql): the analysts' figures, messages_hourly,
-- messages_daily and messages_rollup(), each exactly the aggregate of the raw rows.
--
-- Fast at the design volume: a row of the hour or day rollup that is a whole output bucket
-- on its own (all bots' days for 30 days, 30,000 rows for 1,000 bots) is returned as it is,
-- plus whatever is pending for it, with no GROUP BY; only buckets made of several rollup
-- rows are summed. Means and shares are computed in float8 from the exact sums.

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
           p_sentiment_sum::float8 / NULLIF(p_scored, 0)::float8,
           p_negative::float8 / NULLIF(p_analyzed, 0)::float8,
           p_positive::float8 / NULLIF(p_analyzed, 0)::float8,
           p_toxicity_sum::float8 / NULLIF(p_toxicity_n, 0)::float8,
           p_toxicity_max,
           p_flagged::bigint,
           p_flagged::float8 / NULLIF(p_messages, 0)::float8,
           p_nlp_missing::float8 / NULLIF(p_messages, 0)::float8
$$;

-- Per bot per UTC hour (p_level 'hour') or day ('day'): the folded row plus what is pending
-- for it, and pending (bot, bucket)s with no folded row yet. Rows of messages_per_minute's
-- shape. Pending rows are few (folded every second), so each folded row costs a probe of a
-- small hash table instead of a place in a GROUP BY. Inlined: a caller's filter on bucket
-- or bot_id reaches the rollup's index.
CREATE OR REPLACE FUNCTION rollup_merged(p_level text)
RETURNS SETOF messages_per_minute
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    WITH folded AS NOT MATERIALIZED (
        SELECT * FROM messages_per_day WHERE p_level = 'day'
        UNION ALL
        SELECT * FROM messages_per_hour WHERE p_level = 'hour'
    ), pending AS (
        SELECT date_trunc(p_level, p.bucket, 'UTC') AS bucket, p.bot_id,
               sum(p.messages)::bigint AS messages,
               sum(p.analyzed_messages)::bigint AS analyzed_messages,
               sum(p.scored_messages)::bigint AS scored_messages,
               sum(p.sentiment_sum) AS sentiment_sum,
               sum(p.negative_messages)::bigint AS negative_messages,
               sum(p.neutral_messages)::bigint AS neutral_messages,
               sum(p.positive_messages)::bigint AS positive_messages,
               sum(p.toxicity_messages)::bigint AS toxicity_messages,
               sum(p.toxicity_sum) AS toxicity_sum,
               max(p.toxicity_max) AS toxicity_max,
               sum(p.flagged_messages)::bigint AS flagged_messages,
               sum(p.nlp_missing_messages)::bigint AS nlp_missing_messages
          FROM rollup_pending p
         GROUP BY 1, 2
    )
    SELECT f.bucket, f.bot_id,
           f.messages + coalesce(p.messages, 0),
           f.analyzed_messages + coalesce(p.analyzed_messages, 0),
           f.scored_messages + coalesce(p.scored_messages, 0),
           f.sentiment_sum + coalesce(p.sentiment_sum, 0),
           f.negative_messages + coalesce(p.negative_messages, 0),
           f.neutral_messages + coalesce(p.neutral_messages, 0),
           f.positive_messages + coalesce(p.positive_messages, 0),
           f.toxicity_messages + coalesce(p.toxicity_messages, 0),
           f.toxicity_sum + coalesce(p.toxicity_sum, 0),
           greatest(f.toxicity_max, p.toxicity_max),
           f.flagged_messages + coalesce(p.flagged_messages, 0),
           f.nlp_missing_messages + coalesce(p.nlp_missing_messages, 0)
      FROM folded f
      LEFT JOIN pending p ON p.bucket = f.bucket AND p.bot_id = f.bot_id
    UNION ALL
    SELECT p.*
      FROM pending p
     WHERE NOT EXISTS (SELECT FROM folded f WHERE f.bucket = p.bucket AND f.bot_id = p.bot_id)
$$;

-- Per bot per bucket of `p_unit` (any date_trunc unit from 'minute' up) cut in `p_zone`,
-- for messages with sent_at in [p_from, p_to), both taken to the whole UTC minute: the
-- rollups' resolution. Open ranges ('-infinity', 'infinity') are clamped to the data.
--
-- Each part of the range is read from the coarsest rollup that fits it: a UTC day's row
-- when the whole day lies in the range and in one output bucket, else its hours' rows on
-- the same terms, else minute rows; plus what is still pending. A zone whose offset is not
-- a whole number of hours (Asia/Kolkata) is read from hour rows only where an hour fits
-- its buckets, so the answer is exact in every zone, only slower in those. A day or hour
-- that is an output bucket by itself ("solo": unit 'day' in UTC, 'hour' in most zones)
-- comes from rollup_merged unsummed; the rest is summed per output bucket.
--
-- Sets of days and hours are passed to the rollups as arrays (`bucket = ANY (...)`): the
-- planner then probes the primary key instead of estimating a join to a series it cannot
-- see the length of (it chose to read the whole hour rollup).
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
        -- Whole UTC days in the range that lie in one output bucket, and whether that
        -- bucket is the day itself.
        SELECT g AS d,
               date_trunc(p_unit, g, p_zone) = g
               AND date_trunc(p_unit, g + interval '24 hours', p_zone) = g + interval '24 hours'
                   AS solo
          FROM bounds, generate_series(date_trunc('day', f, 'UTC'), t, interval '24 hours') g
         WHERE g >= f AND g + interval '24 hours' <= t
           AND date_trunc(p_unit, g, p_zone)
             = date_trunc(p_unit, g + interval '24 hours' - interval '1 microsecond', p_zone)
    ), slots AS (
        -- Every other UTC hour the range touches: whether its own row fits an output
        -- bucket, and whether it is that bucket by itself.
        SELECT g AS h, whole,
               whole AND date_trunc(p_unit, g, p_zone) = g
                     AND date_trunc(p_unit, g + interval '1 hour', p_zone) = g + interval '1 hour'
                   AS solo,
               greatest(g, f) AS lo, least(g + interval '1 hour', t) AS hi
          FROM bounds,
               generate_series(date_trunc('hour', f, 'UTC'), t - interval '1 microsecond',
                               interval '1 hour') g,
               LATERAL (SELECT g >= f AND g + interval '1 hour' <= t
                               AND date_trunc(p_unit, g, p_zone)
                                 = date_trunc(p_unit, g + interval '1 hour' - interval '1 microsecond',
                                              p_zone)) AS w(whole)
         WHERE date_trunc('day', g, 'UTC') NOT IN (SELECT d FROM days)
    ), solo AS (
        SELECT r.* FROM rollup_merged('day') r
         WHERE r.bucket = ANY (ARRAY(SELECT d FROM days WHERE solo))
        UNION ALL
        SELECT r.* FROM rollup_merged('hour') r
         WHERE r.bucket = ANY (ARRAY(SELECT h FROM slots WHERE solo))
    ), parts AS (
        SELECT r.* FROM messages_per_day r
         WHERE r.bucket = ANY (ARRAY(SELECT d FROM days WHERE NOT solo))
        UNION ALL
        SELECT r.* FROM messages_per_hour r
         WHERE r.bucket = ANY (ARRAY(SELECT h FROM slots WHERE whole AND NOT solo))
        UNION ALL
        SELECT r.* FROM messages_per_minute r
         WHERE r.bucket = ANY (ARRAY(SELECT generate_series(lo, hi - interval '1 minute',
                                                            interval '1 minute')
                                       FROM slots WHERE NOT whole))
        UNION ALL
        SELECT p.* FROM bounds, rollup_pending p
         WHERE p.bucket >= f AND p.bucket < t
           AND date_trunc('day', p.bucket, 'UTC') <> ALL (ARRAY(SELECT d FROM days WHERE solo))
           AND date_trunc('hour', p.bucket, 'UTC') <> ALL (ARRAY(SELECT h FROM slots WHERE solo))
    ), summed AS (
        SELECT s.bot_id, s.bucket, s.messages, s.analyzed_messages, s.scored_messages,
               s.sentiment_sum, s.negative_messages, s.positive_messages,
               s.toxicity_messages, s.toxicity_sum, s.toxicity_max, s.flagged_messages,
               s.nlp_missing_messages
          FROM solo s
        UNION ALL
        SELECT s.bot_id, date_trunc(p_unit, s.bucket, p_zone),
               sum(s.messages), sum(s.analyzed_messages), sum(s.scored_messages),
               sum(s.sentiment_sum), sum(s.negative_messages), sum(s.positive_messages),
               sum(s.toxicity_messages), sum(s.toxicity_sum), max(s.toxicity_max),
               sum(s.flagged_messages), sum(s.nlp_missing_messages)
          FROM parts s
         GROUP BY 1, 2
    )
    SELECT f.*
      FROM summed a
     CROSS JOIN LATERAL rollup_figures(a.bot_id, a.bucket, a.messages, a.analyzed_messages,
                                       a.scored_messages, a.sentiment_sum,
                                       a.negative_messages, a.positive_messages,
                                       a.toxicity_messages, a.toxicity_sum, a.toxicity_max,
                                       a.flagged_messages, a.nlp_missing_messages) f
$$;

COMMENT ON FUNCTION messages_rollup(text, timestamptz, timestamptz, text) IS
    'Per bot per bucket figures for sent_at in [p_from, p_to), from the rollups; see sql/0007_rollup_reads.sql.';

-- Every bot, every UTC hour / day kept by the rollups' retention. A filter on bucket or
-- bot_id reaches the rollup's index.
CREATE OR REPLACE VIEW messages_hourly AS
SELECT f.*
  FROM rollup_merged('hour') a
 CROSS JOIN LATERAL rollup_figures(a.bot_id, a.bucket, a.messages, a.analyzed_messages,
                                   a.scored_messages, a.sentiment_sum, a.negative_messages,
                                   a.positive_messages, a.toxicity_messages, a.toxicity_sum,
                                   a.toxicity_max, a.flagged_messages,
                                   a.nlp_missing_messages) f;

COMMENT ON VIEW messages_hourly IS
    'Per bot per UTC hour: volume, sentiment, toxicity, flagged rate, from the rollups; see sql/0007_rollup_reads.sql.';

CREATE OR REPLACE VIEW messages_daily AS
SELECT f.*
  FROM rollup_merged('day') a
 CROSS JOIN LATERAL rollup_figures(a.bot_id, a.bucket, a.messages, a.analyzed_messages,
                                   a.scored_messages, a.sentiment_sum, a.negative_messages,
                                   a.positive_messages, a.toxicity_messages, a.toxicity_sum,
                                   a.toxicity_max, a.flagged_messages,
                                   a.nlp_missing_messages) f;

COMMENT ON VIEW messages_daily IS
    'Per bot per UTC day: volume, sentiment, toxicity, flagged rate, from the rollups; see sql/0007_rollup_reads.sql.';

-- Analysts' sessions: just-in-time compilation cost 0.6-0.9 s per dashboard query here
-- (estimated costs of a 30-day read cross its threshold while the query itself takes
-- milliseconds); a 30,000-bucket answer needs more than the default 4 MB to aggregate
-- in memory.
DO $$
BEGIN
    EXECUTE format('ALTER ROLE chat_analyst IN DATABASE %I SET jit = off', current_database());
    EXECUTE format('ALTER ROLE chat_analyst IN DATABASE %I SET work_mem = %L',
                   current_database(), '64MB');
END
$$;
