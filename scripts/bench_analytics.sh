#!/usr/bin/env bash
# `make bench-analytics`: analysts' queries at the design volume. Generates ROWS messages
# server-side over DAYS daily partitions of a scratch database (BOTS bots, about 3% flagged,
# 9% without NLP data), builds their rollups by aggregating each generated day (what the
# migration does for rows stored before the rollups; tests/rollups.rs proves it equals what
# the worker maintains), then times three queries on the rollups and the same figures on
# the raw rows, each with a cold cache (Postgres restarted, the OS page cache dropped) and a
# warm one, RUNS times each:
#
#   daily      all bots' daily figures for the last 30 days, until now
#   daily_cut  the same until an hour ago (rollups only): today summed from hours and minutes
#   minute     one bot per minute for the last 24 hours
#   terms      the top 20 flagged terms of the last 7 days
#
# Writes bench/results/analytics-<UTC time>/report.md and report.json (medians and every run)
# and drops the scratch database at the end (KEEP=1 keeps it). Needs scripts/infra.sh up, a
# release build, root for the cold runs (it restarts the Postgres cluster it started), and
# about 320 bytes of disk per row: it refuses to start without them.
#
# Knobs: ROWS (100000000), DAYS (30), BOTS (1000), RUNS (3), RAW_RUNS (RUNS: runs of the
# raw-row queries, minutes each when cold at 100 M rows), KEEP (0), REUSE (0; 1 times the
# queries again on the database a KEEP=1 run left, after applying newer migrations to it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROWS="${ROWS:-100000000}"
DAYS="${DAYS:-30}"
BOTS="${BOTS:-1000}"
RUNS="${RUNS:-3}"
KEEP="${KEEP:-0}"
REUSE="${REUSE:-0}"
RAW_RUNS="${RAW_RUNS:-$RUNS}"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="bench/results/analytics-$STAMP"
DB=chat_analytics_volume
BIN=./target/release/chat-analytics
export PGHOST=127.0.0.1 PGPORT=5432 PGUSER=chat PGPASSWORD=chat PGCONNECT_TIMEOUT=5

say() { printf 'bench-analytics: %s\n' "$*" >&2; }
die() { printf 'bench-analytics: error: %s\n' "$*" >&2; exit 1; }
psql_db() { PGOPTIONS="-c client_min_messages=warning" psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$DB" "$@"; }

[ -x "$BIN" ] || die "$BIN missing: cargo build --release first"
scripts/infra.sh is-up || die "Kafka or Postgres is not up (run: scripts/infra.sh up)"
[ "$(id -u)" -eq 0 ] || command -v sudo >/dev/null || die "cold runs need root (or sudo) to drop the page cache"
free_kb="$(df -Pk "$(PGOPTIONS='' psql -X -A -t -d postgres -c 'show data_directory' 2>/dev/null || echo /)" 2>/dev/null | awk 'NR == 2 { print $4 }')"
need_kb=$((ROWS * 320 / 1024))
[ "$REUSE" = 1 ] || [ -z "$free_kb" ] || [ "$free_kb" -ge "$need_kb" ] \
    || die "about $((need_kb / 1048576)) GiB of disk needed for $ROWS rows, $((free_kb / 1048576)) GiB free"
mkdir -p "$OUT"

cleanup() {
    [ "$KEEP" = 1 ] || psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# The scratch database: migrated, DAYS partitions of generated rows, their rollups.
generate() {
say "scratch database $DB: migrate, $DAYS daily partitions"
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null
CHAT_ANALYTICS__POSTGRES__URL="postgres://chat:chat@127.0.0.1:5432/$DB" "$BIN" migrate >"$OUT/migrate.json" 2>"$OUT/migrate.log"
psql_db -v days="$DAYS" <<'SQL'
SELECT format('CREATE TABLE IF NOT EXISTS %I PARTITION OF messages FOR VALUES FROM (%L) TO (%L)',
              'messages_p' || to_char(d, 'YYYYMMDD'),
              d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC')
  FROM generate_series(0, :days - 1) AS g(back),
       LATERAL (SELECT (now() AT TIME ZONE 'UTC')::date - back) AS day(d)
 WHERE to_regclass('messages_p' || to_char(d, 'YYYYMMDD')) IS NULL
\gexec
SQL

per_day=$((ROWS / DAYS))
say "generating $ROWS rows ($per_day a day, $BOTS bots) and their rollups, one day at a time"
started=$SECONDS
for ((back = DAYS - 1; back >= 0; back--)); do
    psql_db -v back="$back" -v n="$per_day" -v bots="$BOTS" <<'SQL'
INSERT INTO messages (message_id, bot_id, conversation_id, user_id, text, sent_at, received_at,
                      sentiment_label, sentiment_score, toxicity, language, nlp_status,
                      flagged, flagged_terms)
SELECT gen_random_uuid(),
       'bot-' || lpad(((i * 7919) % :bots)::text, 4, '0'),
       'conv-' || (i % 50000), 'user-' || (i % 200000),
       (ARRAY['my order has not arrived yet', 'thank you so much, great help',
              'where can I reset my password', 'the refund still has not come through',
              'this is a scam', 'can I talk to a human please'])[1 + i % 6],
       (date_trunc('day', now(), 'UTC') - interval '1 day' * :back) + span * (i::float8 / :n),
       (date_trunc('day', now(), 'UTC') - interval '1 day' * :back) + span * (i::float8 / :n) + interval '40 milliseconds',
       CASE WHEN i % 11 <> 0 THEN (ARRAY['positive', 'neutral', 'negative'])[1 + (i * 7) % 3] END,
       CASE WHEN i % 11 <> 0 THEN ((((i * 37) % 200) - 100) / 100.0)::real END,
       CASE WHEN i % 11 <> 0 THEN (((i * 53) % 100) / 100.0)::real END,
       CASE WHEN i % 11 <> 0 THEN (ARRAY['en', 'en', 'de', 'fr', 'es'])[1 + i % 5] END,
       CASE WHEN i % 11 <> 0 THEN 'ok' ELSE 'breaker_open' END,
       i % 33 = 0,
       CASE WHEN i % 33 = 0 THEN ARRAY[(ARRAY['scam', 'idiot', 'heck', 'damn', 'stupid'])[1 + (i / 33) % 5]]
            ELSE '{}' END
  FROM generate_series(1::bigint, :n) AS i,
       -- Today only up to now, as a live system has it: nothing is sent in the future.
       LATERAL (SELECT least(interval '1 day',
                             now() - date_trunc('day', now(), 'UTC') + interval '1 day' * :back)) AS s(span);
SQL
    say "  day -$back done ($((SECONDS - started)) s)"
done

# In bucket order, as the rollup folder appends them minute after minute: a hash
# aggregate's order would scatter one minute's rows over the whole table.
say "rollups from the raw rows, then VACUUM ANALYZE"
psql_db <<'SQL'
-- Every minute goes into the hours and days here, so the minute mark (sql/0011) moves past
-- the newest; the guard on those tables wants to be told this writer knows of it.
SET chat_analytics.rollup_writer = 'minute_mark';
INSERT INTO messages_per_minute
SELECT date_trunc('minute', sent_at, 'UTC'), bot_id,
       count(*), count(sentiment_label), count(sentiment_score),
       coalesce(sum(sentiment_score::float8::numeric), 0),
       count(*) FILTER (WHERE sentiment_label = 'negative'),
       count(*) FILTER (WHERE sentiment_label = 'neutral'),
       count(*) FILTER (WHERE sentiment_label = 'positive'),
       count(toxicity), coalesce(sum(toxicity::float8::numeric), 0), max(toxicity),
       count(*) FILTER (WHERE flagged), count(*) FILTER (WHERE nlp_status <> 'ok')
  FROM messages GROUP BY 1, 2 ORDER BY 1, 2;
INSERT INTO messages_per_hour
SELECT date_trunc('hour', bucket, 'UTC'), bot_id, sum(messages), sum(analyzed_messages),
       sum(scored_messages), sum(sentiment_sum), sum(negative_messages), sum(neutral_messages),
       sum(positive_messages), sum(toxicity_messages), sum(toxicity_sum), max(toxicity_max),
       sum(flagged_messages), sum(nlp_missing_messages)
  FROM messages_per_minute GROUP BY 1, 2 ORDER BY 1, 2;
INSERT INTO messages_per_day
SELECT date_trunc('day', bucket, 'UTC'), bot_id, sum(messages), sum(analyzed_messages),
       sum(scored_messages), sum(sentiment_sum), sum(negative_messages), sum(neutral_messages),
       sum(positive_messages), sum(toxicity_messages), sum(toxicity_sum), max(toxicity_max),
       sum(flagged_messages), sum(nlp_missing_messages)
  FROM messages_per_hour GROUP BY 1, 2 ORDER BY 1, 2;
UPDATE rollup_minutes_folded
   SET through = greatest(through, (SELECT max(bucket) + interval '1 minute' FROM messages_per_minute));
INSERT INTO flagged_terms_per_day
SELECT (m.sent_at AT TIME ZONE 'UTC')::date, m.bot_id, t.term, count(*)
  FROM messages m CROSS JOIN LATERAL (SELECT DISTINCT unnest(m.flagged_terms)) AS t(term)
 WHERE m.flagged GROUP BY 1, 2, 3;
VACUUM ANALYZE messages, messages_per_minute, messages_per_hour, messages_per_day,
               flagged_terms_per_day, rollup_pending, flagged_terms_pending;
SQL
}

if [ "$REUSE" = 1 ] && [ "$(psql -X -A -t -d postgres -c "SELECT count(*) FROM pg_database WHERE datname = '$DB'")" = 1 ]; then
    say "reusing $DB as an earlier KEEP=1 run left it; migrations applied again"
    CHAT_ANALYTICS__POSTGRES__URL="postgres://chat:chat@127.0.0.1:5432/$DB" "$BIN" migrate >"$OUT/migrate.json" 2>"$OUT/migrate.log"
else
    generate
fi

rows_stored="$(psql_db -c 'SELECT count(*) FROM messages')"
sizes="$(psql_db -c "SELECT string_agg(format('%s %s', r, pg_size_pretty(pg_total_relation_size(r::regclass))), ', ')
                      FROM unnest(ARRAY['messages_per_minute', 'messages_per_hour', 'messages_per_day']) r")"
raw_size="$(psql_db -c "SELECT pg_size_pretty(sum(pg_total_relation_size(inhrelid))) FROM pg_inherits WHERE inhparent = 'messages'::regclass")"
say "$rows_stored rows ($raw_size); rollups: $sizes"

bot="$(psql_db -c "SELECT bot_id FROM messages_per_day GROUP BY 1 ORDER BY sum(messages) DESC LIMIT 1")"
declare -A QUERY
QUERY[daily_rollup]="SELECT * FROM messages_rollup('day', date_trunc('day', now(), 'UTC') - interval '29 days', now())"
QUERY[daily_raw]="SELECT bot_id, date_trunc('day', sent_at, 'UTC'), count(*), count(sentiment_label), avg(sentiment_score), avg(toxicity), max(toxicity), count(*) FILTER (WHERE flagged), count(*) FILTER (WHERE nlp_status <> 'ok') FROM messages WHERE sent_at >= date_trunc('day', now(), 'UTC') - interval '29 days' AND sent_at < now() GROUP BY 1, 2"
# The same days up to an hour ago: today's rows then cannot be taken whole (later data
# exists) and are summed from its hours and minutes, as for any range ending mid-day.
QUERY[daily_cut_rollup]="SELECT * FROM messages_rollup('day', date_trunc('day', now(), 'UTC') - interval '29 days', now() - interval '1 hour')"
QUERY[minute_rollup]="SELECT * FROM messages_rollup('minute', now() - interval '24 hours', now()) WHERE bot_id = '$bot'"
QUERY[minute_raw]="SELECT date_trunc('minute', sent_at, 'UTC'), count(*), count(sentiment_label), avg(sentiment_score), avg(toxicity), max(toxicity), count(*) FILTER (WHERE flagged), count(*) FILTER (WHERE nlp_status <> 'ok') FROM messages WHERE bot_id = '$bot' AND sent_at >= now() - interval '24 hours' AND sent_at < now() GROUP BY 1"
QUERY[terms_rollup]="SELECT term, sum(messages) AS messages FROM flagged_terms_daily WHERE day >= (now() AT TIME ZONE 'UTC')::date - 6 GROUP BY term ORDER BY messages DESC LIMIT 20"
QUERY[terms_raw]="SELECT t.term, count(*) FROM messages m CROSS JOIN LATERAL unnest(m.flagged_terms) AS t(term) WHERE m.flagged AND m.sent_at >= date_trunc('day', now(), 'UTC') - interval '6 days' GROUP BY 1 ORDER BY 2 DESC LIMIT 20"

# One timed execution as chat_analyst, with the role's settings (sql/0006, sql/0007) but no
# statement timeout, so a raw query's time is measured rather than cut at 30 s: the
# server's execution time in ms (EXPLAIN ANALYZE without per-node timing, whose clock
# reads would inflate queries over many rows).
time_query() {
    PGUSER=chat_analyst PGPASSWORD=analyst PGOPTIONS="-c statement_timeout=0" \
        psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$DB" \
        -c "EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) ${QUERY[$1]}" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Execution Time"])'
}

cold_cache() {
    { scripts/infra.sh postgres-stop && sync && drop_page_cache && scripts/infra.sh postgres-start; } >/dev/null 2>&1 \
        || die "restarting Postgres for a cold run failed"
}

drop_page_cache() {
    if [ "$(id -u)" -eq 0 ]; then echo 3 >/proc/sys/vm/drop_caches; else echo 3 | sudo tee /proc/sys/vm/drop_caches >/dev/null; fi
}

echo "query,cache,run,ms" >"$OUT/runs.csv"
for name in daily_rollup daily_raw daily_cut_rollup minute_rollup minute_raw terms_rollup terms_raw; do
    runs=$RUNS
    [[ "$name" != *_raw ]] || runs=$RAW_RUNS
    for ((run = 1; run <= runs; run++)); do
        cold_cache
        echo "$name,cold,$run,$(time_query "$name")" >>"$OUT/runs.csv"
        echo "$name,warm,$run,$(time_query "$name")" >>"$OUT/runs.csv"
    done
    say "  $name: $(grep "^$name," "$OUT/runs.csv" | cut -d, -f2,4 | tr '\n' ' ')"
done

python3 - "$OUT" "$rows_stored" "$raw_size" "$sizes" "$BOTS" "$DAYS" "$bot" <<'PY'
import csv, json, os, statistics, sys
out, rows, raw_size, sizes, bots, days, bot = sys.argv[1:]
runs = list(csv.DictReader(open(os.path.join(out, "runs.csv"))))
def med(q, cache):
    values = [float(r["ms"]) for r in runs if r["query"] == q and r["cache"] == cache]
    return (statistics.median(values) if values else None), values
report = {"rows": int(rows), "raw_size": raw_size, "rollup_sizes": sizes, "bots": int(bots),
          "days": int(days), "bot": bot, "queries": {}}
lines = [f"# Analysts' queries on {int(rows):,} rows ({raw_size}; {bots} bots, {days} days)", "",
         f"Rollups: {sizes}. Server execution time as chat_analyst (EXPLAIN ANALYZE, TIMING OFF), median of the runs, ms.", "",
         "| query | rollup cold | rollup warm | raw cold | raw warm | target |", "|---|---:|---:|---:|---:|---|"]
def cell(ms):
    return "—" if ms is None else f"{ms:.1f}"
for q, title in [("daily", "all bots, daily, 30 days"),
                 ("daily_cut", "all bots, daily, 30 days to an hour ago (today summed)"),
                 ("minute", f"one bot ({bot}) per minute, 24 h"),
                 ("terms", "top 20 flagged terms, 7 days")]:
    cells = {}
    for kind in ("rollup", "raw"):
        for cache in ("cold", "warm"):
            m, values = med(f"{q}_{kind}", cache)
            cells[(kind, cache)] = m
            if values:
                report["queries"].setdefault(q, {})[f"{kind}_{cache}"] = {"median_ms": m, "runs_ms": values}
    if cells[("rollup", "cold")] is None:
        continue
    ok = cells[("rollup", "cold")] < 100 and cells[("rollup", "warm")] < 100
    lines.append(f"| {title} | {cell(cells[('rollup','cold')])} | {cell(cells[('rollup','warm')])} | "
                 f"{cell(cells[('raw','cold')])} | {cell(cells[('raw','warm')])} | < 100 ms: {'PASS' if ok else 'FAIL'} |")
open(os.path.join(out, "report.md"), "w").write("\n".join(lines) + "\n")
json.dump(report, open(os.path.join(out, "report.json"), "w"), indent=2)
print("\n".join(lines))
PY
