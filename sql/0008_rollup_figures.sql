-- Readers of the rollups, made cheaper at the design volume (docs/BENCHMARKS.md):
--
-- * counts reach the figures as bigint: 0007's rollup_figures took them as numeric, so
--   each of the 30,000 rows of a 30-day daily answer paid ten numeric-to-float8
--   conversions, which Postgres makes by printing the number and parsing it back; only
--   the two sums of scores stay numeric (exact sums of float8 values);
-- * a folded row with nothing pending is returned as stored, without arithmetic;
-- * messages_rollup reads every minute its range touches, so a range ending at now()
--   takes today's day (or this hour's) row as it is instead of summing its hours and
--   minutes.
--
-- The views share one definition per level.

DROP VIEW IF EXISTS messages_hourly, messages_daily;
DROP FUNCTION IF EXISTS rollup_figures(text, timestamptz, numeric, numeric, numeric, numeric,
                                       numeric, numeric, numeric, numeric, real, numeric,
                                       numeric);

-- Analysts' figures from summed rollup columns: the one place the means and shares are
-- derived (NULL when nothing in the bucket had the value). Inlined into the queries below.
CREATE FUNCTION rollup_figures(
    p_bot_id text, p_bucket timestamptz, p_messages bigint, p_analyzed bigint,
    p_scored bigint, p_sentiment_sum numeric, p_negative bigint, p_positive bigint,
    p_toxicity_n bigint, p_toxicity_sum numeric, p_toxicity_max real, p_flagged bigint,
    p_nlp_missing bigint)
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
    SELECT p_bot_id, p_bucket, p_messages, p_analyzed,
           p_sentiment_sum::float8 / NULLIF(p_scored, 0)::float8,
           p_negative::float8 / NULLIF(p_analyzed, 0)::float8,
           p_positive::float8 / NULLIF(p_analyzed, 0)::float8,
           p_toxicity_sum::float8 / NULLIF(p_toxicity_n, 0)::float8,
           p_toxicity_max,
           p_flagged,
           p_flagged::float8 / NULLIF(p_messages, 0)::float8,
           p_nlp_missing::float8 / NULLIF(p_messages, 0)::float8
$$;

-- Per bot per UTC hour (p_level 'hour') or day ('day'): the folded row plus what is pending
-- for it, and pending (bot, bucket)s with no folded row yet. Rows of messages_per_minute's
-- shape. Pending rows are few (folded every second): a folded row with nothing pending, by
-- far the most, is returned as stored after a probe of a small hash table, with no
-- arithmetic (0007 added a pending zero to every column, numeric ones included). Inlined:
-- a caller's filter on bucket or bot_id reaches the rollup's index.
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
    SELECT f.*
      FROM folded f
     WHERE NOT EXISTS (SELECT FROM pending p WHERE p.bucket = f.bucket AND p.bot_id = f.bot_id)
    UNION ALL
    SELECT f.bucket, f.bot_id,
           f.messages + p.messages,
           f.analyzed_messages + p.analyzed_messages,
           f.scored_messages + p.scored_messages,
           f.sentiment_sum + p.sentiment_sum,
           f.negative_messages + p.negative_messages,
           f.neutral_messages + p.neutral_messages,
           f.positive_messages + p.positive_messages,
           f.toxicity_messages + p.toxicity_messages,
           f.toxicity_sum + p.toxicity_sum,
           greatest(f.toxicity_max, p.toxicity_max),
           f.flagged_messages + p.flagged_messages,
           f.nlp_missing_messages + p.nlp_missing_messages
      FROM folded f
      JOIN pending p ON p.bucket = f.bucket AND p.bot_id = f.bot_id
    UNION ALL
    SELECT p.*
      FROM pending p
     WHERE NOT EXISTS (SELECT FROM folded f WHERE f.bucket = p.bucket AND f.bot_id = p.bot_id)
$$;

-- Per bot per bucket of `p_unit` (any date_trunc unit from 'minute' up) cut in `p_zone`,
-- for messages sent in every UTC minute that [p_from, p_to) touches: the rollups'
-- resolution. (0007 dropped the minute p_to falls in: a range ending at now() left out
-- the newest seconds and summed all of today from hours and minutes.) Open ranges
-- ('-infinity', 'infinity') are clamped to the data.
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
        -- lo, hi: whole UTC days around all the data; last: the end of its newest minute.
        SELECT least((SELECT min(d.bucket) FROM messages_per_day d),
                     (SELECT date_trunc('day', min(p.bucket), 'UTC') FROM rollup_pending p)) AS lo,
               greatest((SELECT max(d.bucket) + interval '24 hours' FROM messages_per_day d),
                        (SELECT date_trunc('day', max(p.bucket), 'UTC') + interval '24 hours'
                           FROM rollup_pending p)) AS hi,
               greatest((SELECT max(m.bucket) FROM messages_per_minute m),
                        (SELECT max(p.bucket) FROM rollup_pending p)) + interval '1 minute' AS last
    ), bounds AS (
        -- A range reaching past the newest data reaches to the end of its day: nothing
        -- lies between, and today's rows then count as whole.
        SELECT greatest(date_trunc('minute', p_from, 'UTC'), data.lo) AS f,
               CASE WHEN e.t >= coalesce(data.last, data.hi) THEN data.hi
                    ELSE least(e.t, data.hi) END AS t,
               coalesce(data.last, data.hi) AS last
          FROM data,
               LATERAL (SELECT date_trunc('minute', p_to, 'UTC')
                               + CASE WHEN date_trunc('minute', p_to, 'UTC') < p_to
                                      THEN interval '1 minute' ELSE interval '0' END) AS e(t)
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
         WHERE r.bucket = ANY (ARRAY(SELECT generate_series(lo, least(hi, last) - interval '1 minute',
                                                            interval '1 minute')
                                       FROM bounds, slots WHERE NOT whole))
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
               sum(s.messages)::bigint, sum(s.analyzed_messages)::bigint,
               sum(s.scored_messages)::bigint, sum(s.sentiment_sum),
               sum(s.negative_messages)::bigint, sum(s.positive_messages)::bigint,
               sum(s.toxicity_messages)::bigint, sum(s.toxicity_sum), max(s.toxicity_max),
               sum(s.flagged_messages)::bigint, sum(s.nlp_missing_messages)::bigint
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
    'Per bot per bucket figures for every UTC minute [p_from, p_to) touches, from the rollups; see sql/0008_rollup_figures.sql.';

-- Every bot, every UTC hour (p_level 'hour') or day ('day') kept by the rollups'
-- retention: what messages_hourly and messages_daily show. Inlined, so a filter on bucket
-- or bot_id reaches the rollup's index.
CREATE FUNCTION rollup_level_figures(p_level text)
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
    SELECT f.*
      FROM rollup_merged(p_level) a
     CROSS JOIN LATERAL rollup_figures(a.bot_id, a.bucket, a.messages, a.analyzed_messages,
                                       a.scored_messages, a.sentiment_sum,
                                       a.negative_messages, a.positive_messages,
                                       a.toxicity_messages, a.toxicity_sum, a.toxicity_max,
                                       a.flagged_messages, a.nlp_missing_messages) f
$$;

CREATE VIEW messages_hourly AS SELECT * FROM rollup_level_figures('hour');
COMMENT ON VIEW messages_hourly IS
    'Per bot per UTC hour: volume, sentiment, toxicity, flagged rate, from the rollups; see sql/0008_rollup_figures.sql.';

CREATE VIEW messages_daily AS SELECT * FROM rollup_level_figures('day');
COMMENT ON VIEW messages_daily IS
    'Per bot per UTC day: volume, sentiment, toxicity, flagged rate, from the rollups; see sql/0008_rollup_figures.sql.';

GRANT SELECT ON messages_hourly, messages_daily TO chat_analyst;
