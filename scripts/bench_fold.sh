#!/usr/bin/env bash
# The rollup folder's cost per fold (sql/queries/fold_rollups.sql) in a scratch database:
# ITER folds, each after PER pending rows were appended in the current minute (a new minute
# every 60 folds), as the worker's writes leave them at about 10,000 msg/s. The rows cycle
# through BOTS bots: with the default 1,000 a fold finds 8 rows per bot to add up; with
# BOTS=50000 (the design's 50,000 bots at 10,000 msg/s, one message each every 5 s) nearly every
# pending row is a (bot, minute) of its own, so every one is an update of each rollup.
# INDEX=plain replaces the minute rollup's covering (bot_id, bucket) index (sql/0009) with a
# plain one, to compare the two. Prints folds, total and mean ms, the CPU of every Postgres
# process per pending row (appending them included), and the minute rollup's size and
# updates. FOLD_SQL (sql/queries/fold_rollups.sql) names the fold statement, to compare
# another ($1 the row limit, $2 the present). Needs scripts/infra.sh up and a release build.
#
#   scripts/bench_fold.sh                 # INDEX=covering ITER=120 PER=8000 BOTS=1000
#   INDEX=plain BOTS=50000 scripts/bench_fold.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

INDEX="${INDEX:-covering}"
ITER="${ITER:-120}"
PER="${PER:-8000}"
BOTS="${BOTS:-1000}"
FOLD_SQL="${FOLD_SQL:-sql/queries/fold_rollups.sql}"
DB="chat_bench_fold"
export PGHOST=127.0.0.1 PGPORT=5432 PGUSER=chat PGPASSWORD=chat
case "$INDEX" in plain | covering) ;; *) echo "bench-fold: INDEX is plain or covering" >&2; exit 64 ;; esac

say() { printf 'bench-fold: %s\n' "$*" >&2; }
# shellcheck source=scripts/bench_lib.sh
source scripts/bench_lib.sh
drop_db "$DB"
ticks="$(mktemp)"
trap 'drop_db "$DB"; rm -f "$ticks"' EXIT
psql -X -q -d postgres -c "CREATE DATABASE $DB"
CHAT_ANALYTICS__POSTGRES__URL="postgres://chat:chat@127.0.0.1:5432/$DB" \
    ./target/release/chat-analytics migrate >/dev/null
if [ "$INDEX" = plain ]; then
    psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -c "DROP INDEX messages_per_minute_bot_idx" \
        -c "CREATE INDEX messages_per_minute_bot_idx ON messages_per_minute (bot_id, bucket)"
fi

# Postgres CPU is read from psql (`\!`) while its session is open, so that its backend, which
# does the work and exits with the session, is counted.
postgres_ticks="\\! bash -c 'source scripts/bench_lib.sh && ticks_of -x postgres' >>$ticks"
{
    # The fold's present is the pending rows' minute plus a second per fold, so the minute
    # mark (sql/0011) closes each minute at the first fold of the next, as in the worker.
    echo "SET chat_analytics.rollup_writer = 'minute_mark';"
    echo "SELECT date_trunc('minute', now(), 'UTC') AS base \\gset"
    echo "PREPARE fold(bigint, timestamptz) AS $(grep -v '^--' "$FOLD_SQL");"
    echo "$postgres_ticks"
    for ((i = 0; i < ITER; i++)); do
        cat <<SQL
INSERT INTO rollup_pending
SELECT :'base'::timestamptz + interval '1 minute' * ($i / 60), 'bot-' || ((g + $i * $PER) % $BOTS),
       2, 2, 2, 0.5, 1, 0, 1, 2, 0.7, 0.4, 0, 0
  FROM generate_series(1, $PER) g;
\\timing on
EXECUTE fold(1000000, :'base'::timestamptz + interval '1 minute' * ($i / 60) + interval '1 second' * ($i % 60));
\\timing off
SQL
    done
    echo "$postgres_ticks"
} | psql -X -q -v ON_ERROR_STOP=1 -d "$DB" \
    | awk '/^Time:/ { total += $2; n++ } END { printf "%d folds, %.0f ms, %.1f ms per fold\n", n, total, total / n }'
awk -v hz="$(getconf CLK_TCK)" -v rows=$((ITER * PER)) '
    NR == 1 { before = $1 } NR == 2 { after = $1 }
    END { printf "Postgres CPU: %.1f us per pending row (appending included)\n", (after - before) / hz / rows * 1e6 }
' "$ticks"
psql -X -A -t -d "$DB" -c "SELECT format('messages_per_minute: %s with indexes, %s updates (%s HOT)',
                                  pg_size_pretty(pg_total_relation_size(relid)), n_tup_upd, n_tup_hot_upd)
                             FROM pg_stat_user_tables WHERE relname = 'messages_per_minute'"
