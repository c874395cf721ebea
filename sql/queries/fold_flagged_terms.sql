-- Moves up to $1 pending flagged-term counts into flagged_terms_per_day, in one
-- transaction (see fold_rollups.sql). Returns the rows moved.
WITH moved AS (
    DELETE FROM flagged_terms_pending
     WHERE ctid = ANY (ARRAY(SELECT ctid FROM flagged_terms_pending LIMIT $1))
    RETURNING *
), folded AS (
    INSERT INTO flagged_terms_per_day AS r
    SELECT day, bot_id, term, sum(messages)
      FROM moved
     GROUP BY 1, 2, 3
    ON CONFLICT (day, bot_id, term) DO UPDATE SET messages = r.messages + excluded.messages
)
SELECT count(*) FROM moved
