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
-- messages_rollup, 0007_rollup_reads.sql) add whatever is still pending, so in any snapshot
--     folded + pending = aggregate of the raw rows.
--
-- Sums are `numeric` over each value's float8: addition is exact, so the result does not
-- depend on the order rows were added or folded. `toxicity_max` only ever grows (rows are
-- added, and re-enrichment fills a NULL), so folding takes the greatest.
--
-- Dropping a raw partition (retention) leaves the rollups alone: they have their own
-- retention (`rollups.retention_days`, `rollups.minute_retention_days`), applied once a
-- day by the worker's rollup folder, next to the partition maintainer.

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

-- The readers of these tables (rollup_figures, messages_rollup, messages_hourly,
-- messages_daily) are in 0007_rollup_reads.sql.

-- Flagged terms per bot per UTC day, folded and pending together.
CREATE OR REPLACE VIEW flagged_terms_daily AS
SELECT day, bot_id, term, sum(messages)::bigint AS messages
  FROM (SELECT * FROM flagged_terms_per_day
        UNION ALL
        SELECT * FROM flagged_terms_pending) t
 GROUP BY day, bot_id, term;

COMMENT ON VIEW flagged_terms_daily IS
    'Messages per bot per UTC day carrying each flagged term; see sql/0005_rollups.sql.';
