-- One bot's minutes without a read per minute.
--
-- messages_per_minute's heap is laid out minute by minute (the folder appends each
-- minute's rows for every bot), so one bot's 1,440 minutes of a day lie on 1,440
-- different pages: 282 ms cold at 100 million rows (docs/BENCHMARKS.md). The (bot_id,
-- bucket) index now carries every column, so such a query is an index-only scan of a few
-- adjacent leaf pages. Its cost: the folder's updates of a minute's row change indexed
-- columns, so they are no longer HOT and add an entry to both indexes (measured in
-- docs/BENCHMARKS.md). The hour and day rollups keep their plain index: a bot's hours are
-- 24 reads a day and are rarely read cold.

DROP INDEX IF EXISTS messages_per_minute_bot_idx;
CREATE INDEX messages_per_minute_bot_idx ON messages_per_minute (bot_id, bucket)
    INCLUDE (messages, analyzed_messages, scored_messages, sentiment_sum, negative_messages,
             neutral_messages, positive_messages, toxicity_messages, toxicity_sum,
             toxicity_max, flagged_messages, nlp_missing_messages);
