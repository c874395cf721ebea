-- Moves up to $1 pending rollup rows into the per-minute rollup, and closes the minutes
-- before $2's UTC minute for the hour and day rollups (sql/0011_hour_day_from_closed_minutes.sql),
-- in one transaction: the rows deleted here are exactly the ones added, so readers (which
-- add what is pending, and the minutes not yet closed) see the same figures before and
-- after. Returns the pending rows moved.
--
-- Every CTE reads the snapshot from before this statement: the minute rows `to_hours` reads
-- for the closing minutes lack the pending rows moved now, which it adds on their own.
WITH mark AS (
    SELECT through AS since, greatest(through, date_trunc('minute', $2::timestamptz, 'UTC')) AS upto
      FROM rollup_minutes_folded
), moved AS (
    DELETE FROM rollup_pending
     WHERE ctid = ANY (ARRAY(SELECT ctid FROM rollup_pending LIMIT $1))
    RETURNING *
), minute AS (
    INSERT INTO messages_per_minute AS r
    SELECT bucket, bot_id,
           sum(messages),
           sum(analyzed_messages),
           sum(scored_messages),
           sum(sentiment_sum),
           sum(negative_messages),
           sum(neutral_messages),
           sum(positive_messages),
           sum(toxicity_messages),
           sum(toxicity_sum),
           max(toxicity_max),
           sum(flagged_messages),
           sum(nlp_missing_messages)
      FROM moved
     GROUP BY 1, 2
    ON CONFLICT (bucket, bot_id) DO UPDATE SET
        messages = r.messages + excluded.messages,
        analyzed_messages = r.analyzed_messages + excluded.analyzed_messages,
        scored_messages = r.scored_messages + excluded.scored_messages,
        sentiment_sum = r.sentiment_sum + excluded.sentiment_sum,
        negative_messages = r.negative_messages + excluded.negative_messages,
        neutral_messages = r.neutral_messages + excluded.neutral_messages,
        positive_messages = r.positive_messages + excluded.positive_messages,
        toxicity_messages = r.toxicity_messages + excluded.toxicity_messages,
        toxicity_sum = r.toxicity_sum + excluded.toxicity_sum,
        toxicity_max = greatest(r.toxicity_max, excluded.toxicity_max),
        flagged_messages = r.flagged_messages + excluded.flagged_messages,
        nlp_missing_messages = r.nlp_missing_messages + excluded.nlp_missing_messages
), to_hours AS (
    -- Pending rows of closed minutes (late ones, and those of the minutes closing now),
    -- and the closing minutes' rows as folded before.
    SELECT p.* FROM moved p, mark WHERE p.bucket < mark.upto
    UNION ALL
    SELECT m.* FROM messages_per_minute m
     WHERE m.bucket >= rollup_minutes_mark()
       AND m.bucket < greatest(rollup_minutes_mark(), date_trunc('minute', $2::timestamptz, 'UTC'))
), hour AS (
    INSERT INTO messages_per_hour AS r
    SELECT date_trunc('hour', bucket, 'UTC'), bot_id,
           sum(messages),
           sum(analyzed_messages),
           sum(scored_messages),
           sum(sentiment_sum),
           sum(negative_messages),
           sum(neutral_messages),
           sum(positive_messages),
           sum(toxicity_messages),
           sum(toxicity_sum),
           max(toxicity_max),
           sum(flagged_messages),
           sum(nlp_missing_messages)
      FROM to_hours
     GROUP BY 1, 2
    ON CONFLICT (bucket, bot_id) DO UPDATE SET
        messages = r.messages + excluded.messages,
        analyzed_messages = r.analyzed_messages + excluded.analyzed_messages,
        scored_messages = r.scored_messages + excluded.scored_messages,
        sentiment_sum = r.sentiment_sum + excluded.sentiment_sum,
        negative_messages = r.negative_messages + excluded.negative_messages,
        neutral_messages = r.neutral_messages + excluded.neutral_messages,
        positive_messages = r.positive_messages + excluded.positive_messages,
        toxicity_messages = r.toxicity_messages + excluded.toxicity_messages,
        toxicity_sum = r.toxicity_sum + excluded.toxicity_sum,
        toxicity_max = greatest(r.toxicity_max, excluded.toxicity_max),
        flagged_messages = r.flagged_messages + excluded.flagged_messages,
        nlp_missing_messages = r.nlp_missing_messages + excluded.nlp_missing_messages
), day AS (
    INSERT INTO messages_per_day AS r
    SELECT date_trunc('day', bucket, 'UTC'), bot_id,
           sum(messages),
           sum(analyzed_messages),
           sum(scored_messages),
           sum(sentiment_sum),
           sum(negative_messages),
           sum(neutral_messages),
           sum(positive_messages),
           sum(toxicity_messages),
           sum(toxicity_sum),
           max(toxicity_max),
           sum(flagged_messages),
           sum(nlp_missing_messages)
      FROM to_hours
     GROUP BY 1, 2
    ON CONFLICT (bucket, bot_id) DO UPDATE SET
        messages = r.messages + excluded.messages,
        analyzed_messages = r.analyzed_messages + excluded.analyzed_messages,
        scored_messages = r.scored_messages + excluded.scored_messages,
        sentiment_sum = r.sentiment_sum + excluded.sentiment_sum,
        negative_messages = r.negative_messages + excluded.negative_messages,
        neutral_messages = r.neutral_messages + excluded.neutral_messages,
        positive_messages = r.positive_messages + excluded.positive_messages,
        toxicity_messages = r.toxicity_messages + excluded.toxicity_messages,
        toxicity_sum = r.toxicity_sum + excluded.toxicity_sum,
        toxicity_max = greatest(r.toxicity_max, excluded.toxicity_max),
        flagged_messages = r.flagged_messages + excluded.flagged_messages,
        nlp_missing_messages = r.nlp_missing_messages + excluded.nlp_missing_messages
), closed AS (
    UPDATE rollup_minutes_folded SET through = mark.upto FROM mark WHERE mark.upto > mark.since
)
SELECT count(*) FROM moved
