-- The hour and day rollups take each (bot, minute) once, when its minute closes, instead of
-- every pending row as it is folded.
--
-- Until now the folder added every pending row to the minute, the hour and the day rollup
-- alike: with many bots, each message became an update of three rollup rows, and the hour
-- and day updates were about 40% of the fold (docs/BENCHMARKS.md). Now a mark,
-- rollup_minutes_folded.through (a UTC minute), splits the minute rollup in two:
--
--   * minutes before the mark are in messages_per_hour and messages_per_day;
--   * minutes at or after it (the current one, and any a skewed clock put in the future)
--     are in the minute rollup only, and readers add them to their hour and day.
--
-- The folder (sql/queries/fold_rollups.sql), in one statement and transaction:
--   * adds every pending row to the minute rollup;
--   * adds to the hour and day rollups the pending rows of minutes before the new mark (late
--     rows of closed minutes, and the minutes closing now), plus the minute rows closing now
--     as they stood before this fold;
--   * moves the mark to the start of the present minute.
-- So in every snapshot: hour (day) rollup + its minute rows at or after the mark + its
-- pending rows = the aggregate of the raw rows. A bot sending every 5 s costs one hour and
-- one day update a minute instead of twelve.
--
-- Writers that predate this migration would add open minutes to the hours and days and
-- count them twice. A statement trigger refuses their writes: a folder must say it knows
-- the mark (chat_analytics.rollup_writer = 'minute_mark', set in its transaction). An old
-- worker's folds then fail, and its pending rows wait, still counted by readers, until a
-- new worker folds them.

-- One folder at a time (crates/service/src/storage/rollups.rs, FOLD_LOCK): no fold runs
-- while the hours and days are rebuilt below.
SELECT pg_advisory_xact_lock(8245928655569513572);
-- This migration is such a writer (the guard below exists already if it is applied again).
SELECT set_config('chat_analytics.rollup_writer', 'minute_mark', true);

CREATE TABLE IF NOT EXISTS rollup_minutes_folded (
    only_row boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    -- Minute rows before this UTC minute are in the hour and day rollups; the rest are not.
    through  timestamptz NOT NULL
);

-- The mark as a function, not a sub-select: the planner evaluates a stable function to
-- estimate, so it knows `bucket >= rollup_minutes_mark()` is the last minute or so of a
-- minute rollup holding 35 days, and reads it by index. Against a sub-select it assumes a
-- third of the table (14 million rows at 100 million messages) and plans for that.
CREATE OR REPLACE FUNCTION rollup_minutes_mark() RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT through FROM rollup_minutes_folded $$;

-- Every minute so far is in the hours and days. The current hour's and day's rows (and any
-- in the future) are rebuilt from their minutes before the mark, so that the minutes from
-- the mark on are in neither: their minute rows are all kept (minute retention is days).
INSERT INTO rollup_minutes_folded (through) VALUES (date_trunc('minute', now(), 'UTC'))
ON CONFLICT (only_row) DO NOTHING;

DELETE FROM messages_per_hour
 WHERE bucket >= date_trunc('hour', rollup_minutes_mark(), 'UTC');
INSERT INTO messages_per_hour
SELECT date_trunc('hour', m.bucket, 'UTC'), m.bot_id, sum(m.messages), sum(m.analyzed_messages),
       sum(m.scored_messages), sum(m.sentiment_sum), sum(m.negative_messages),
       sum(m.neutral_messages), sum(m.positive_messages), sum(m.toxicity_messages),
       sum(m.toxicity_sum), max(m.toxicity_max), sum(m.flagged_messages),
       sum(m.nlp_missing_messages)
  FROM messages_per_minute m
 WHERE m.bucket >= date_trunc('hour', rollup_minutes_mark(), 'UTC')
   AND m.bucket < rollup_minutes_mark()
 GROUP BY 1, 2;

DELETE FROM messages_per_day
 WHERE bucket >= date_trunc('day', rollup_minutes_mark(), 'UTC');
INSERT INTO messages_per_day
SELECT date_trunc('day', m.bucket, 'UTC'), m.bot_id, sum(m.messages), sum(m.analyzed_messages),
       sum(m.scored_messages), sum(m.sentiment_sum), sum(m.negative_messages),
       sum(m.neutral_messages), sum(m.positive_messages), sum(m.toxicity_messages),
       sum(m.toxicity_sum), max(m.toxicity_max), sum(m.flagged_messages),
       sum(m.nlp_missing_messages)
  FROM messages_per_minute m
 WHERE m.bucket >= date_trunc('day', rollup_minutes_mark(), 'UTC')
   AND m.bucket < rollup_minutes_mark()
 GROUP BY 1, 2;

CREATE OR REPLACE FUNCTION rollup_writer_knows_the_mark() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('chat_analytics.rollup_writer', true) IS DISTINCT FROM 'minute_mark' THEN
        RAISE EXCEPTION '% takes minutes before rollup_minutes_folded.through only', TG_TABLE_NAME
            USING HINT = 'A worker older than sql/0011_hour_day_from_closed_minutes.sql is folding: '
                         'upgrade it. Writers that know the mark set chat_analytics.rollup_writer '
                         'to ''minute_mark''.';
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS writers_know_the_mark ON messages_per_hour;
CREATE TRIGGER writers_know_the_mark BEFORE INSERT OR UPDATE ON messages_per_hour
    FOR EACH STATEMENT EXECUTE FUNCTION rollup_writer_knows_the_mark();
DROP TRIGGER IF EXISTS writers_know_the_mark ON messages_per_day;
CREATE TRIGGER writers_know_the_mark BEFORE INSERT OR UPDATE ON messages_per_day
    FOR EACH STATEMENT EXECUTE FUNCTION rollup_writer_knows_the_mark();

-- Readers add the open minutes (at or after the mark) wherever they add what is pending.
-- Rows of messages_per_minute's shape, bucket still the minute.
CREATE OR REPLACE FUNCTION rollup_unfolded()
RETURNS SETOF messages_per_minute
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT * FROM rollup_pending
    UNION ALL
    SELECT m.* FROM messages_per_minute m WHERE m.bucket >= rollup_minutes_mark()
$$;

-- Per bot per UTC hour (p_level 'hour') or day ('day'), as in 0008, with pending read
-- through rollup_unfolded(), which the open minutes make larger: up to one row per bot
-- sending this minute (50,000 at the design's bot count, against about 10,000 pending rows
-- a second's fold leaves). Two changes keep reads cheap:
--   * `pending` is not materialized, so a caller's `WHERE bot_id = ...` reaches the minute
--     rollup's (bot_id, bucket) index and sums one bot's rows, not every bot's (0008 summed
--     all of them whatever the filter: 200-400 ms for one bot with 50,000 open rows, 3-5 ms
--     now);
--   * it is read twice, not three times: folded rows with nothing pending as stored, and
--     every pending (bot, bucket) with its folded row, if any, added.
CREATE OR REPLACE FUNCTION rollup_merged(p_level text)
RETURNS SETOF messages_per_minute
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    WITH folded AS NOT MATERIALIZED (
        SELECT * FROM messages_per_day WHERE p_level = 'day'
        UNION ALL
        SELECT * FROM messages_per_hour WHERE p_level = 'hour'
    ), pending AS NOT MATERIALIZED (
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
          FROM rollup_unfolded() p
         GROUP BY 1, 2
    )
    SELECT f.*
      FROM folded f
     WHERE NOT EXISTS (SELECT FROM pending p WHERE p.bucket = f.bucket AND p.bot_id = f.bot_id)
    UNION ALL
    SELECT p.bucket, p.bot_id,
           coalesce(f.messages, 0) + p.messages,
           coalesce(f.analyzed_messages, 0) + p.analyzed_messages,
           coalesce(f.scored_messages, 0) + p.scored_messages,
           coalesce(f.sentiment_sum, 0) + p.sentiment_sum,
           coalesce(f.negative_messages, 0) + p.negative_messages,
           coalesce(f.neutral_messages, 0) + p.neutral_messages,
           coalesce(f.positive_messages, 0) + p.positive_messages,
           coalesce(f.toxicity_messages, 0) + p.toxicity_messages,
           coalesce(f.toxicity_sum, 0) + p.toxicity_sum,
           greatest(f.toxicity_max, p.toxicity_max),
           coalesce(f.flagged_messages, 0) + p.flagged_messages,
           coalesce(f.nlp_missing_messages, 0) + p.nlp_missing_messages
      FROM pending p
      LEFT JOIN folded f ON f.bucket = p.bucket AND f.bot_id = p.bot_id
$$;

-- As in 0008, except: the data's extent counts the open minutes, and a day or hour read
-- from its own rollup row (not "solo") gets its open minutes added, as it gets its pending
-- rows. Slots read minute by minute need nothing more: the minute rollup holds every
-- folded minute, open or closed.
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
                     (SELECT date_trunc('day', min(p.bucket), 'UTC') FROM rollup_pending p),
                     (SELECT date_trunc('day', min(m.bucket), 'UTC')
                        FROM messages_per_minute m WHERE m.bucket >= rollup_minutes_mark())) AS lo,
               greatest((SELECT max(d.bucket) + interval '24 hours' FROM messages_per_day d),
                        (SELECT date_trunc('day', max(p.bucket), 'UTC') + interval '24 hours'
                           FROM rollup_pending p),
                        (SELECT date_trunc('day', max(m.bucket), 'UTC') + interval '24 hours'
                           FROM messages_per_minute m)) AS hi,
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
         WHERE r.bucket >= rollup_minutes_mark()
           AND (date_trunc('day', r.bucket, 'UTC') = ANY (ARRAY(SELECT d FROM days WHERE NOT solo))
                OR date_trunc('hour', r.bucket, 'UTC')
                   = ANY (ARRAY(SELECT h FROM slots WHERE whole AND NOT solo)))
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

COMMENT ON TABLE rollup_minutes_folded IS
    'Minute rollup rows before `through` are in the hour and day rollups; readers add the rest. See sql/0011_hour_day_from_closed_minutes.sql.';

GRANT SELECT ON rollup_minutes_folded TO chat_analyst;
