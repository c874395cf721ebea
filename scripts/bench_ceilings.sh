#!/usr/bin/env bash
# Component ceilings (issue 4, item 5), each measured alone on this machine with the same
# infrastructure the service uses (scripts/infra.sh up must have run):
#
#   kafka     Kafka's own producer benchmark (org.apache.kafka.tools.ProducerPerformance, from
#             the broker's jars): 1,000,000 records of 300 bytes, unthrottled, into a fresh
#             12-partition topic, with the service's producer settings (acks=all, idempotence,
#             lz4, linger.ms=5). Records/s and latency (avg, max, p99) from its summary line.
#   postgres  pgbench inserting 200,000 rows into `messages` (sql/0001_messages.sql, one daily
#             partition for today plus the default one) in batches of 500 with the worker's
#             statement shape: one multi-row INSERT ... SELECT ... ON CONFLICT DO NOTHING
#             RETURNING message_id per transaction, prepared. With 1 and 4 clients; rows/s =
#             tps x 500. The rows are generated server-side (generate_series) instead of sent
#             as UNNEST arrays, so client encoding and the parameter transfer are not counted.
#             Run twice per client count: `plain` inserts into messages alone, `keyed` first
#             claims each message_id in message_keys (sql/0003_message_keys.sql) and inserts
#             only the rows whose key was new, as sql/queries/insert_messages.sql does; the
#             ratio of the two is the write cost of exactly-once storage. A third, `rollups`,
#             also appends what the rows add to the rollups (sql/0005_rollups.sql), as the
#             worker's statement does: its ratio to keyed is the write cost of exact rollups.
#   http      the ingest API with Kafka taken out (examples/ingest_ceiling.rs acknowledges every
#             valid message at once), driven by `chat-analytics loadgen` over 2,000 keep-alive
#             connections at an offered rate above what it can answer: accepted msg/s is the
#             HTTP layer's own ceiling (request parsing, admission, envelope encoding, the 202),
#             with the load generator on the same cores.
#
# Writes $OUT/ceilings.json (OUT defaults to bench/results/ceilings-<UTC time>) and prints a
# Markdown table on stdout; progress goes to stderr. The scratch topic and the scratch
# database chat_ceiling are deleted at the end. Loopback only; every step is time-bounded.
#
# Knobs (environment): KAFKA_RECORDS (1000000), KAFKA_RECORD_SIZE (300), PG_ROWS (200000),
# PG_BATCH (500), PG_CLIENTS ("1 4"), HTTP_RATE (80000), HTTP_SECONDS (15), STEP_TIMEOUT (300 s
# per benchmark step). Expects the release build (target/release) to be current.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="${OUT:-bench/results/ceilings-$STAMP}"
KAFKA_RECORDS="${KAFKA_RECORDS:-1000000}"
KAFKA_RECORD_SIZE="${KAFKA_RECORD_SIZE:-300}"
PG_ROWS="${PG_ROWS:-200000}"
PG_BATCH="${PG_BATCH:-500}"
PG_CLIENTS="${PG_CLIENTS:-1 4}"
HTTP_RATE="${HTTP_RATE:-80000}"
HTTP_SECONDS="${HTTP_SECONDS:-15}"
HTTP_ADDR=127.0.0.1:18088
STEP_TIMEOUT="${STEP_TIMEOUT:-300}"

BOOTSTRAP=127.0.0.1:9092
TOPIC="ceiling.$STAMP"
KAFKA_LIBS="${CHAT_ANALYTICS_CACHE_DIR:-.cache}/kafka/libs"
KAFKA_DIR="${CHAT_ANALYTICS_INFRA_DIR:-var/infra}/kafka"
PRODUCER_PROPS=(bootstrap.servers="$BOOTSTRAP" acks=all enable.idempotence=true compression.type=lz4 linger.ms=5)
PG_DB=chat_ceiling
export PGHOST=127.0.0.1 PGPORT=5432 PGUSER=chat PGPASSWORD=chat PGDATABASE=postgres PGCONNECT_TIMEOUT=5

say() { printf 'ceilings: %s\n' "$*" >&2; }
die() { printf 'ceilings: error: %s\n' "$*" >&2; exit 1; }

JAVA=java
if [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ]; then JAVA="$JAVA_HOME/bin/java"; fi
# The JVM options of Kafka's bin/kafka-producer-perf-test.sh (512 MB heap, G1, full JIT).
KAFKA_JAVA=("$JAVA" -Xms512m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true
    -Dlog4j2.configurationFile="$KAFKA_DIR/tools-log4j2.xml" -cp "$KAFKA_LIBS/*")

psql_q() { PGOPTIONS="-c client_min_messages=warning" psql -X -q -A -t -v ON_ERROR_STOP=1 "$@"; }

# shellcheck source=scripts/bench_lib.sh
source scripts/bench_lib.sh

[ $((PG_ROWS % PG_BATCH)) -eq 0 ] || die "PG_ROWS ($PG_ROWS) must be a multiple of PG_BATCH ($PG_BATCH)"
for c in $PG_CLIENTS; do
    [ $((PG_ROWS / PG_BATCH % c)) -eq 0 ] || die "$((PG_ROWS / PG_BATCH)) batches do not split evenly over $c clients"
done
for tool in jq psql pgbench "$JAVA"; do command -v "$tool" >/dev/null || die "$tool not found"; done
scripts/infra.sh is-up || die "Kafka or Postgres is not up (run: scripts/infra.sh up)"

topic_created=
db_created=
http_pid=
cleanup() {
    if [ -n "$http_pid" ]; then kill -TERM "$http_pid" 2>/dev/null || true; wait "$http_pid" 2>/dev/null || true; fi
    if [ -n "$topic_created" ]; then
        timeout 60 scripts/infra.sh kafka-topic-delete "$TOPIC" >/dev/null 2>&1 \
            || say "could not delete topic $TOPIC"
    fi
    if [ -n "$db_created" ]; then
        drop_db "$PG_DB" 2>/dev/null || say "could not drop database $PG_DB"
    fi
}
trap cleanup EXIT

mkdir -p "$OUT"
started=$SECONDS
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------------------------------------
# Kafka

say "kafka: topic $TOPIC (12 partitions), $KAFKA_RECORDS records of $KAFKA_RECORD_SIZE bytes"
scripts/infra.sh kafka-topic "$TOPIC" 12 >&2
topic_created=1
timeout "$STEP_TIMEOUT" "${KAFKA_JAVA[@]}" org.apache.kafka.tools.ProducerPerformance \
    --topic "$TOPIC" --num-records "$KAFKA_RECORDS" --record-size "$KAFKA_RECORD_SIZE" --throughput -1 \
    --producer-props "${PRODUCER_PROPS[@]}" >"$OUT/kafka-producer-perf.txt" 2>&1 \
    || { tail -n 20 "$OUT/kafka-producer-perf.txt" >&2; die "ProducerPerformance failed"; }
# Summary line, e.g.: 1000000 records sent, 151000.1 records/sec (43.2 MB/sec), 120.5 ms avg
# latency, 480.00 ms max latency, 110 ms 50th, 300 ms 95th, 410 ms 99th, 470 ms 99.9th.
summary="$(grep -E '^[0-9]+ records sent, ' "$OUT/kafka-producer-perf.txt" | tail -n 1)"
[ -n "$summary" ] || die "no summary line in $OUT/kafka-producer-perf.txt"
field() { sed -nE "s|.*[ ,]([0-9.]+) $1.*|\\1|p" <<<"$summary"; }
k_sent="$(sed -nE 's/^([0-9]+) records sent,.*/\1/p' <<<"$summary")"
k_rps="$(field 'records/sec')"
k_mbps="$(sed -nE 's/.*\(([0-9.]+) MB\/sec\).*/\1/p' <<<"$summary")"
k_avg="$(field 'ms avg latency')"
k_max="$(field 'ms max latency')"
k_p50="$(field 'ms 50th')"
k_p99="$(field 'ms 99th')"
[ "$k_sent" = "$KAFKA_RECORDS" ] || die "ProducerPerformance sent $k_sent records, not $KAFKA_RECORDS"
for v in "$k_rps" "$k_avg" "$k_max" "$k_p99"; do [ -n "$v" ] || die "cannot parse: $summary"; done
say "kafka: $k_rps records/s, latency avg $k_avg ms, p99 $k_p99 ms, max $k_max ms"

# ---------------------------------------------------------------------------------------------
# Postgres

day="$(date -u +%Y-%m-%d)"
next_day="$(date -u -d "$day + 1 day" +%Y-%m-%d)"
day_epoch="$(date -u -d "$day" +%s)"
partition="messages_p$(date -u -d "$day" +%Y%m%d)"

say "postgres: scratch database $PG_DB, sql/0001, 0002, 0003 and 0005 (messages, keys, rollups), partition $partition"
drop_db "$PG_DB"
psql_q -d postgres -c "CREATE DATABASE $PG_DB" >/dev/null
db_created=1
psql_q -d "$PG_DB" -f sql/0001_messages.sql >/dev/null
psql_q -d "$PG_DB" -f sql/0002_views.sql >/dev/null
psql_q -d "$PG_DB" -f sql/0003_message_keys.sql >/dev/null
psql_q -d "$PG_DB" -f sql/0005_rollups.sql >/dev/null
psql_q -d "$PG_DB" -c "CREATE TABLE $partition PARTITION OF messages
    FOR VALUES FROM ('$day 00:00:00+00') TO ('$next_day 00:00:00+00')" >/dev/null
pg_version="$(psql_q -d "$PG_DB" -c 'SHOW server_version' | cut -d' ' -f1)"
pg_sync_commit="$(psql_q -d "$PG_DB" -c 'SHOW synchronous_commit')"

# One transaction = one batch: the worker's statement with server-generated rows. sent_at is
# spread over today (UTC) so every row lands in $partition, whatever time the run ends.
rows_sql="$(cat <<EOF
SELECT gen_random_uuid(), 'bot-' || r.b, 'conv-' || r.b || '-' || (random() * 50)::int,
       'user-' || (random() * 100000)::int,
       'Hi, my order #' || (random() * 1000000)::int || ' still has not arrived and the tracking '
           || 'page has not changed since Monday. Can you check what happened? ref '
           || md5(random()::text),
       r.t, r.t + interval '4 milliseconds', clock_timestamp(),
       r.label, r.s, r.tox, 'en',
       jsonb_build_object('sentiment', jsonb_build_object('label', r.label, 'score', r.s),
                          'toxicity', r.tox, 'language', 'en'),
       'ok', r.flagged,
       ARRAY(SELECT jsonb_array_elements_text(CASE WHEN r.flagged THEN '["idiot"]' ELSE '[]' END::jsonb)),
       jsonb_build_object('channel', 'web', 'locale', 'en-US', 'app_version', '4.2.1'),
       r.i % 12, (random() * 1e9)::bigint
FROM (SELECT i, b, t, s, tox, random() < 0.02 AS flagged,
             CASE WHEN s > 0.2 THEN 'positive' WHEN s < -0.2 THEN 'negative' ELSE 'neutral' END AS label
      FROM (SELECT i, (random() * 1000)::int AS b, to_timestamp(:day_epoch + random() * 86399) AS t,
                   (random() * 2 - 1)::real AS s, (random() * 0.3)::real AS tox
            FROM generate_series(1, $PG_BATCH) AS i) AS g) AS r
EOF
)"
cat >"$OUT/pg_insert_plain.sql" <<EOF
INSERT INTO messages (
    message_id, bot_id, conversation_id, user_id, text, sent_at, received_at, processed_at,
    sentiment_label, sentiment_score, toxicity, language, nlp, nlp_status,
    flagged, flagged_terms, metadata, kafka_partition, kafka_offset)
$rows_sql
ON CONFLICT DO NOTHING
RETURNING message_id;
EOF
# As plain, but each key is claimed first (in message_id order, with a 16-byte content hash)
# and only the rows whose key was new are inserted.
cat >"$OUT/pg_insert_keyed.sql" <<EOF
WITH batch (
    message_id, bot_id, conversation_id, user_id, text, sent_at, received_at, processed_at,
    sentiment_label, sentiment_score, toxicity, language, nlp, nlp_status,
    flagged, flagged_terms, metadata, kafka_partition, kafka_offset) AS (
$rows_sql
), claimed AS (
    INSERT INTO message_keys (message_id, sent_at, content_hash)
    SELECT message_id, sent_at, decode(md5(text), 'hex') FROM batch ORDER BY message_id
    ON CONFLICT (message_id) DO NOTHING
    RETURNING message_id
)
INSERT INTO messages (
    message_id, bot_id, conversation_id, user_id, text, sent_at, received_at, processed_at,
    sentiment_label, sentiment_score, toxicity, language, nlp, nlp_status,
    flagged, flagged_terms, metadata, kafka_partition, kafka_offset)
SELECT b.* FROM batch b JOIN claimed USING (message_id)
ON CONFLICT DO NOTHING
RETURNING message_id;
EOF

# As keyed, plus what the stored rows add to the rollups appended in the same statement, as
# sql/queries/insert_messages.sql does: the write cost of exact rollups.
cat >"$OUT/pg_insert_rollups.sql" <<EOF
WITH batch (
    message_id, bot_id, conversation_id, user_id, text, sent_at, received_at, processed_at,
    sentiment_label, sentiment_score, toxicity, language, nlp, nlp_status,
    flagged, flagged_terms, metadata, kafka_partition, kafka_offset) AS (
$rows_sql
), claimed AS (
    INSERT INTO message_keys (message_id, sent_at, content_hash)
    SELECT message_id, sent_at, decode(md5(text), 'hex') FROM batch ORDER BY message_id
    ON CONFLICT (message_id) DO NOTHING
    RETURNING message_id
), stored AS (
    INSERT INTO messages (
        message_id, bot_id, conversation_id, user_id, text, sent_at, received_at, processed_at,
        sentiment_label, sentiment_score, toxicity, language, nlp, nlp_status,
        flagged, flagged_terms, metadata, kafka_partition, kafka_offset)
    SELECT b.* FROM batch b JOIN claimed USING (message_id)
    ON CONFLICT DO NOTHING
    RETURNING message_id
), rollup AS (
    INSERT INTO rollup_pending
    SELECT date_trunc('minute', m.sent_at, 'UTC'), m.bot_id,
           count(*), count(m.sentiment_label), count(m.sentiment_score),
           coalesce(sum(m.sentiment_score::float8::numeric), 0),
           count(*) FILTER (WHERE m.sentiment_label = 'negative'),
           count(*) FILTER (WHERE m.sentiment_label = 'neutral'),
           count(*) FILTER (WHERE m.sentiment_label = 'positive'),
           count(m.toxicity), coalesce(sum(m.toxicity::float8::numeric), 0), max(m.toxicity),
           count(*) FILTER (WHERE m.flagged), count(*) FILTER (WHERE m.nlp_status <> 'ok')
      FROM batch m JOIN stored USING (message_id)
     GROUP BY 1, 2
), terms AS (
    INSERT INTO flagged_terms_pending
    SELECT (m.sent_at AT TIME ZONE 'UTC')::date, m.bot_id, t.term, count(*)
      FROM batch m JOIN stored USING (message_id)
     CROSS JOIN LATERAL (SELECT DISTINCT unnest(m.flagged_terms)) AS t(term)
     WHERE m.flagged
     GROUP BY 1, 2, 3
)
SELECT message_id FROM stored;
EOF

pg_json='[]'
for c in $PG_CLIENTS; do
    for statement in plain keyed rollups; do
        tx=$((PG_ROWS / PG_BATCH / c))
        psql_q -d "$PG_DB" -c 'TRUNCATE messages, message_keys, rollup_pending, flagged_terms_pending' >/dev/null
        say "postgres: $statement, $PG_ROWS rows, batches of $PG_BATCH, $c client(s) x $tx transactions"
        log="$OUT/pgbench-$statement-c$c.txt"
        timeout "$STEP_TIMEOUT" pgbench -n -M prepared -c "$c" -j "$c" -t "$tx" -D day_epoch="$day_epoch" \
            -f "$OUT/pg_insert_$statement.sql" "$PG_DB" >"$log" 2>&1 \
            || { tail -n 20 "$log" >&2; die "pgbench ($statement) with $c client(s) failed"; }
        tps="$(sed -nE 's/^tps = ([0-9.]+) \(without initial connection time\).*/\1/p' "$log")"
        lat="$(sed -nE 's/^latency average = ([0-9.]+) ms.*/\1/p' "$log")"
        if [ -z "$tps" ] || [ -z "$lat" ]; then die "cannot parse $log"; fi
        rows="$(psql_q -d "$PG_DB" -c "SELECT count(*) FROM $partition")"
        [ "$rows" = "$PG_ROWS" ] || die "$partition holds $rows rows after the run, expected $PG_ROWS"
        if [ "$statement" != plain ]; then
            keys="$(psql_q -d "$PG_DB" -c "SELECT count(*) FROM message_keys")"
            [ "$keys" = "$PG_ROWS" ] || die "message_keys holds $keys keys after the run, expected $PG_ROWS"
        fi
        rps="$(awk -v t="$tps" -v b="$PG_BATCH" 'BEGIN { printf "%.0f", t * b }')"
        say "postgres: $statement, $c client(s): $tps batches/s = $rps rows/s, $lat ms per batch"
        pg_json="$(jq -c --arg st "$statement" --argjson c "$c" --argjson tps "$tps" --argjson rps "$rps" \
            --argjson lat "$lat" \
            '. + [{statement: $st, clients: $c, batches_per_sec: $tps, rows_per_sec: $rps, batch_latency_avg_ms: $lat}]' \
            <<<"$pg_json")"
    done
done

# ---------------------------------------------------------------------------------------------
# HTTP: the ingest API without Kafka

say "http: ingest API without Kafka on $HTTP_ADDR, $HTTP_RATE msg/s offered for $HTTP_SECONDS s"
target/release/examples/ingest_ceiling "$HTTP_ADDR" 2>"$OUT/ingest-ceiling.log" &
http_pid=$!
wait_http "http://$HTTP_ADDR/livez" || die "the HTTP ceiling server did not start"
timeout "$STEP_TIMEOUT" target/release/chat-analytics loadgen --url "http://$HTTP_ADDR" \
    --rate "$HTTP_RATE" --connections 2000 --duration "$HTTP_SECONDS" --warmup 3 \
    --out "$OUT/http" >"$OUT/http-loadgen.txt" 2>&1 \
    || { tail -n 20 "$OUT/http-loadgen.txt" >&2; die "loadgen against the HTTP ceiling server failed"; }
kill -TERM "$http_pid"
wait "$http_pid" || true
http_pid=
h_rps="$(jq '.results.accepted_msgs_per_s' "$OUT/http/report.json")"
h_p99="$(jq '.results.latency_ms.p99' "$OUT/http/report.json")"
say "http: $h_rps msg/s accepted (p99 $h_p99 ms at that saturation)"

# ---------------------------------------------------------------------------------------------
# Report

mem_total_mb=$(($(awk '/^MemTotal:/ { print $2 }' /proc/meminfo) / 1024))
jq -n \
    --arg stamp "$STAMP" --arg topic "$TOPIC" --arg load_before "$load_before" \
    --arg load_after "$(cut -d' ' -f1-3 /proc/loadavg)" \
    --argjson nproc "$(nproc)" --argjson mem "$mem_total_mb" --arg kernel "$(uname -r)" \
    --arg kafka_version "$(cat "$KAFKA_DIR/version" 2>/dev/null || echo unknown)" \
    --arg pg_version "$pg_version" --arg sync "$pg_sync_commit" \
    --argjson records "$KAFKA_RECORDS" --argjson size "$KAFKA_RECORD_SIZE" \
    --argjson k_rps "$k_rps" --argjson k_mbps "${k_mbps:-null}" --argjson k_avg "$k_avg" \
    --argjson k_max "$k_max" --argjson k_p50 "${k_p50:-null}" --argjson k_p99 "$k_p99" \
    --arg props "${PRODUCER_PROPS[*]}" --arg summary "$summary" \
    --argjson rows "$PG_ROWS" --argjson batch "$PG_BATCH" --argjson pg "$pg_json" \
    --argjson h_rate "$HTTP_RATE" --argjson h_rps "$h_rps" --argjson h_p99 "$h_p99" \
    --argjson secs $((SECONDS - started)) \
    '{
       timestamp: $stamp, duration_secs: $secs,
       machine: {nproc: $nproc, mem_total_mb: $mem, kernel: $kernel,
                 loadavg_before: $load_before, loadavg_after: $load_after},
       kafka: {version: $kafka_version, tool: "org.apache.kafka.tools.ProducerPerformance",
               topic: $topic, partitions: 12, records: $records, record_size: $size,
               producer_props: $props, records_per_sec: $k_rps, mb_per_sec: $k_mbps,
               latency_ms: {avg: $k_avg, p50: $k_p50, p99: $k_p99, max: $k_max},
               summary_line: $summary},
       postgres: {version: $pg_version, synchronous_commit: $sync, table: "messages",
                  rows: $rows, batch: $batch,
                  statements: {plain: "INSERT ... SELECT ... FROM generate_series ON CONFLICT DO NOTHING RETURNING message_id (pgbench -M prepared)",
                              keyed: "the same rows, each message_id claimed in message_keys first, only new keys inserted",
                              rollups: "as keyed, plus the rollup and flagged-term deltas of the stored rows, in the same statement"},
                  runs: $pg},
       http: {server: "examples/ingest_ceiling (ingest API, publisher acknowledges at once)",
              connections: 2000, offered_per_sec: $h_rate, accepted_per_sec: $h_rps,
              latency_p99_ms: $h_p99}
     }' >"$OUT/ceilings.json"

{
    echo "| ceiling | rate | latency |"
    echo "|---|---:|---|"
    printf '| Kafka produce (%s x %s B, 12 partitions, acks=all, lz4) | %.0f records/s (%s MB/s) | avg %s ms, p99 %s ms, max %s ms |\n' \
        "$KAFKA_RECORDS" "$KAFKA_RECORD_SIZE" "$k_rps" "${k_mbps:-?}" "$k_avg" "$k_p99" "$k_max"
    jq -r --argjson rows "$PG_ROWS" --argjson batch "$PG_BATCH" '.[] |
        "| Postgres insert into messages, \(.statement) (\($rows) rows, batches of \($batch), \(.clients) client\(if .clients > 1 then "s" else "" end)) | \(.rows_per_sec) rows/s | avg \(.batch_latency_avg_ms) ms per batch |"' <<<"$pg_json"
    printf '| HTTP ingest API without Kafka (2,000 connections, %s msg/s offered) | %.0f msg/s | p99 %s ms at saturation |\n' \
        "$HTTP_RATE" "$h_rps" "$h_p99"
}
say "wrote $OUT/ceilings.json in $((SECONDS - started)) s"
