-- Room on each page of the hour and day rollups for their rows' next versions.
--
-- The folder updates every (bot, hour) and (bot, day) row a pending row touches, once a
-- second; with many bots sending a message every few seconds that is one update of each
-- per message (docs/BENCHMARKS.md). On a full page (the default fillfactor, 100) an updated
-- row moves to another page and both indexes get a new entry, which later has to be cleaned
-- out of them. With half of each page kept free the new version stays on its page and the
-- update is HOT: no index entry. Measured with scripts/bench_fold.sh at 50,000 bots: the
-- fold's Postgres CPU per pending row fell by about a third. The price is about twice the
-- pages for these two tables, which are small next to the minute rollup (185 MB and 7 MB at
-- 100 million messages).
--
-- The minute rollup keeps its fillfactor: its covering index (0009) changes with every
-- update, so no update of it can be HOT, and spare room would only spread it thinner.
--
-- Pages filled before this migration stay full until rewritten; the rows the folder updates
-- most, the current hour's and day's, land on new pages from the next hour and day on.

ALTER TABLE messages_per_hour SET (fillfactor = 50);
ALTER TABLE messages_per_day SET (fillfactor = 50);
