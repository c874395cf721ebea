#!/usr/bin/env bash
# Local infrastructure for chat-analytics: a single-node Apache Kafka 4.x (KRaft, broker and
# controller in one JVM, run from Maven Central jars) and the Debian PostgreSQL cluster.
# No Docker needed. Used by `make run`, `make test` and `.ci/run`.
#
# Usage: scripts/infra.sh COMMAND [ARGS]
#
#   up [kafka|postgres]       install what is missing, start, provision; idempotent, and fast
#                             (well under a second) when everything is already up
#   down [kafka|postgres]     stop only what `up` started; anything found running is left alone
#   status                    one line per component: state, version, address
#   is-up [kafka|postgres]    exit 0 when the component(s) answer clients, 1 otherwise
#   kafka-topic NAME PARTS    create a topic (replication factor 1) if it does not exist
#   kafka-topic-delete NAME   delete a topic if it exists
#   kafka-stop [--kill]       stop the broker started here (SIGTERM, or SIGKILL with --kill)
#   kafka-start               start it again and wait until it accepts clients
#   postgres-stop [--immediate]  stop the cluster (fast shutdown, or crash-like with --immediate)
#   postgres-start            start it again and wait until it accepts connections
#   logs kafka|postgres       the last 100 lines of the component's log
#   install                   only install missing system packages (java, maven, postgresql, kcat)
#   clean                     `down`, then delete the state directory
#
# The *-stop / *-start pairs exist for tests that simulate an outage; they do not change
# whether `down` considers the component ours.
#
# Fixed addresses (see SPEC.md): Kafka 127.0.0.1:9092 (controller 127.0.0.1:9093), topic
# chat.messages with 12 partitions; Postgres 127.0.0.1:5432, role chat/chat (LOGIN CREATEDB CREATEROLE),
# database chat_analytics owned by chat.
#
# Files (all git-ignored):
#   .cache/kafka/libs/                 Kafka runtime jars, refetched when scripts/kafka/pom.xml changes
#   var/infra/kafka/                   server.properties, log4j2 configs, data/, logs/, kafka.pid
#   var/infra/postgres/                which cluster is used and whether we started it
#
# Environment:
#   CHAT_ANALYTICS_INFRA_DIR   state directory (default: <repo>/var/infra)
#   CHAT_ANALYTICS_CACHE_DIR   cache directory (default: <repo>/.cache)
#   KAFKA_HEAP_OPTS            broker heap (default: -Xms256m -Xmx768m)
#   KAFKA_NETWORK_THREADS      broker network threads (default: Kafka's 3, at most one per core)
#   KAFKA_IO_THREADS           broker request handler threads (default: Kafka's 8, at most one per core)
#   INFRA_WAIT_SECS            how long to wait for a component to answer (default: 60)
#   JAVA_HOME                  java to use (default: `java` on PATH)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE_DIR="${CHAT_ANALYTICS_INFRA_DIR:-$ROOT/var/infra}"
CACHE_DIR="${CHAT_ANALYTICS_CACHE_DIR:-$ROOT/.cache}"
WAIT_SECS="${INFRA_WAIT_SECS:-60}"

KAFKA_HOST=127.0.0.1
KAFKA_PORT=9092
KAFKA_CONTROLLER_PORT=9093
KAFKA_BOOTSTRAP="$KAFKA_HOST:$KAFKA_PORT"
KAFKA_TOPIC=chat.messages
KAFKA_TOPIC_PARTITIONS=12
KAFKA_POM="$ROOT/scripts/kafka/pom.xml"
KAFKA_LIBS="$CACHE_DIR/kafka/libs"
KAFKA_LIBS_STAMP="$KAFKA_LIBS/.pom.sha256"
KAFKA_DIR="$STATE_DIR/kafka"
KAFKA_PID_FILE="$KAFKA_DIR/kafka.pid"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx768m}"
# Kafka's thread defaults suit a dedicated server; on a machine it shares, more threads than
# cores only add hand-offs between them (docs/BENCHMARKS-HISTORY.md, "Kafka's threads").
CORES="$(nproc 2>/dev/null || echo 2)"
KAFKA_NETWORK_THREADS="${KAFKA_NETWORK_THREADS:-$((CORES < 3 ? CORES : 3))}"
KAFKA_IO_THREADS="${KAFKA_IO_THREADS:-$((CORES < 8 ? CORES : 8))}"
# The main classes of Kafka 4.x, as named by its bin/kafka-*.sh launchers.
KAFKA_MAIN=kafka.Kafka
KAFKA_STORAGE_TOOL=kafka.tools.StorageTool
KAFKA_TOPIC_COMMAND=org.apache.kafka.tools.TopicCommand

PG_HOST=127.0.0.1
PG_PORT=5432
PG_USER=chat
PG_PASSWORD=chat
PG_DB=chat_analytics
PG_DIR="$STATE_DIR/postgres"
PG_OURS="$PG_DIR/started-by-infra"     # present: `down` stops the cluster
PG_FOUND="$PG_DIR/found-running"       # present: it was running before `up`; never stopped by `down`

# ---------------------------------------------------------------------------------------------
# Small helpers

say() { printf 'infra: %s\n' "$*"; }
warn() { printf 'infra: warning: %s\n' "$*" >&2; }
die() { printf 'infra: error: %s\n' "$*" >&2; exit 1; }

have() { command -v "$1" >/dev/null 2>&1; }

# True when something accepts TCP connections on HOST PORT.
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

# Run a command as root: directly when we are root, else through passwordless sudo.
# Fd 9 (our lock) is closed for it: daemons it may start (pg_ctlcluster, apt's postinst
# starting a cluster) would otherwise hold the lock for their whole life.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@" 9>&-
    elif have sudo && sudo -n true 2>/dev/null; then sudo -n "$@" 9>&-
    else return 126
    fi
}

# A shell snippet that closes every descriptor above 2, then runs its arguments: a daemon it
# starts (the PostgreSQL server, through pg_ctlcluster) would otherwise hold whatever its
# caller had open for its whole life, such as a lock taken with flock(1) around this script.
# shellcheck disable=SC2016 # $$ and $fd belong to the shell that runs the snippet
STD_FDS_ONLY='for fd in /proc/$$/fd/*; do fd=${fd##*/}; if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi; done; exec "$@"'

can_be_root() { [ "$(id -u)" -eq 0 ] || { have sudo && sudo -n true 2>/dev/null; }; }

# Run a command as the postgres OS user (peer authentication over the Unix socket).
as_postgres() {
    if [ "$(id -un)" = postgres ]; then (cd / && "$@" 9>&-)
    elif [ "$(id -u)" -eq 0 ] && have runuser; then (cd / && runuser -u postgres -- "$@" 9>&-)
    elif have sudo && sudo -n true 2>/dev/null; then (cd / && sudo -n -u postgres "$@" 9>&-)
    else die "need root, passwordless sudo or the postgres user to provision PostgreSQL"
    fi
}

# Serialise state-changing commands (two `make` targets, or parallel tests, may race).
take_lock() {
    mkdir -p "$STATE_DIR"
    exec 9>"$STATE_DIR/.lock"
    if ! flock -w 300 9; then die "another scripts/infra.sh is still running (lock $STATE_DIR/.lock)"; fi
}

APT_UPDATED=
# Install Debian packages non-interactively; `apt-get update` runs once, and only when needed.
apt_install() {
    have apt-get || die "cannot install $*: no apt-get on this machine; install them by hand"
    can_be_root || die "cannot install $*: need root or passwordless sudo (or install them by hand)"
    local log="$STATE_DIR/apt.log"
    mkdir -p "$STATE_DIR"
    if [ -z "$APT_UPDATED" ]; then
        say "apt-get update"
        as_root apt-get update -q >"$log" 2>&1 || { tail -n 20 "$log" >&2; die "apt-get update failed (log: $log)"; }
        APT_UPDATED=1
    fi
    say "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >>"$log" 2>&1 \
        || { tail -n 30 "$log" >&2; die "apt-get install $* failed (log: $log)"; }
}

# ---------------------------------------------------------------------------------------------
# Prerequisites

JAVA=
java_major() { # JAVA -> major version number, e.g. 17 (1.8 -> 8)
    local v
    v="$("$1" -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n 1)"
    case "$v" in 1.*) v="${v#1.}" ;; esac
    echo "${v%%[.+-]*}"
}

find_java() {
    if [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ]; then JAVA="$JAVA_HOME/bin/java"
    elif have java; then JAVA="$(command -v java)"
    else JAVA=
    fi
}

ensure_java() {
    find_java
    if [ -z "$JAVA" ]; then
        if can_be_root && have apt-get; then
            say "java not found: Kafka 4.x needs Java 17 or newer; installing default-jdk-headless"
            apt_install default-jdk-headless
            find_java
        fi
        [ -n "$JAVA" ] || die "java not found: Kafka 4.x needs Java 17 or newer (Debian: apt-get install default-jdk-headless)"
    fi
    local major
    major="$(java_major "$JAVA")"
    if ! [[ "$major" =~ ^[0-9]+$ ]] || [ "$major" -lt 17 ]; then
        die "$JAVA is Java ${major:-?}; Kafka 4.x needs Java 17 or newer (set JAVA_HOME to one)"
    fi
}

ensure_maven() {
    have mvn && return 0
    if can_be_root && have apt-get; then
        say "mvn not found: needed once to fetch the Kafka jars; installing maven"
        apt_install maven
    fi
    have mvn || die "mvn not found: it fetches the Kafka jars once (Debian: apt-get install maven)"
}

postgres_installed() {
    have pg_lsclusters && have pg_ctlcluster && have pg_createcluster && have psql && have pg_isready
}

PG_INSTALLED_NOW=
ensure_postgres_installed() {
    postgres_installed && return 0
    say "PostgreSQL not found: installing the Debian postgresql package"
    apt_install postgresql
    PG_INSTALLED_NOW=1
    postgres_installed || die "PostgreSQL tools (pg_lsclusters, pg_ctlcluster, psql, pg_isready) still missing after install"
}

# kcat is only a convenience (fast readiness checks, debugging); everything works without it.
ensure_kcat() {
    have kcat && return 0
    if can_be_root && have apt-get; then
        ( apt_install kcat ) || warn "could not install kcat; falling back to Kafka's Java tools (slower)"
    fi
}

# ---------------------------------------------------------------------------------------------
# Kafka

pom_sha() { sha256sum "$KAFKA_POM" | cut -d' ' -f1; }
kafka_version() { sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_POM" | head -n 1; }

kafka_jars_fresh() {
    [ -f "$KAFKA_LIBS_STAMP" ] && [ "$(cat "$KAFKA_LIBS_STAMP")" = "$(pom_sha)" ] \
        && compgen -G "$KAFKA_LIBS/kafka_2.13-*.jar" >/dev/null
}

# Copy the runtime classpath named by scripts/kafka/pom.xml into the cache (once per pom).
ensure_kafka_jars() {
    kafka_jars_fresh && return 0
    ensure_java
    ensure_maven
    local tmp="$KAFKA_LIBS.tmp.$$" log="$CACHE_DIR/kafka/mvn.log" started=$SECONDS
    mkdir -p "$CACHE_DIR/kafka"
    rm -rf "$tmp"
    say "fetching Kafka $(kafka_version) jars with Maven (once; log: $log)"
    if ! mvn -q -B -Dstyle.color=never -f "$KAFKA_POM" dependency:copy-dependencies \
            -DoutputDirectory="$tmp" -DincludeScope=runtime >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        rm -rf "$tmp"
        die "Maven could not fetch the Kafka jars (log: $log)"
    fi
    pom_sha >"$tmp/.pom.sha256"
    rm -rf "$KAFKA_LIBS"
    mv "$tmp" "$KAFKA_LIBS"
    say "fetched $(find "$KAFKA_LIBS" -name '*.jar' | wc -l) jars in $((SECONDS - started))s"
}

# PID of the broker this script started, if it is alive (the pid file is removed when stale).
kafka_our_pid() {
    [ -f "$KAFKA_PID_FILE" ] || return 1
    local pid
    pid="$(cat "$KAFKA_PID_FILE" 2>/dev/null || true)"
    if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] \
        && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$KAFKA_MAIN $KAFKA_DIR/server.properties"; then
        echo "$pid"
        return 0
    fi
    rm -f "$KAFKA_PID_FILE"
    return 1
}

# Run one of Kafka's command-line tools from the cached jars (small heap, quick JIT start-up).
kafka_tool() {
    "$JAVA" -Xms32m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$KAFKA_DIR/tools-log4j2.xml" -cp "$KAFKA_LIBS/*" "$@"
}

# True when the broker answers a metadata request within TIMEOUT seconds (default 3): kcat
# takes milliseconds, the Java tool seconds. While a broker starts, its port is open well
# before it answers, hence the short timeout in the wait loop.
kafka_answers() {
    local timeout="${1:-3}"
    port_open "$KAFKA_HOST" "$KAFKA_PORT" || return 1
    if have kcat; then
        kcat -b "$KAFKA_BOOTSTRAP" -L -m "$timeout" >/dev/null 2>&1
    else
        find_java
        [ -n "$JAVA" ] && kafka_jars_fresh && [ -f "$KAFKA_DIR/tools-log4j2.xml" ] || return 1
        timeout 30 "$JAVA" -Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
            -Dlog4j2.configurationFile="$KAFKA_DIR/tools-log4j2.xml" -cp "$KAFKA_LIBS/*" \
            "$KAFKA_TOPIC_COMMAND" --bootstrap-server "$KAFKA_BOOTSTRAP" --list >/dev/null 2>&1
    fi
}

# Partition count of TOPIC according to the broker, via kcat; empty when unknown or missing.
# It lists all topics on purpose: a metadata request naming one topic (kcat -L -t NAME) makes
# the broker auto-create it, with the default partition count.
kafka_topic_partitions() {
    have kcat || return 0
    kcat -b "$KAFKA_BOOTSTRAP" -L -m 3 2>/dev/null \
        | awk -v t="\"$1\"" '$1 == "topic" && $2 == t && $3 == "with" && $5 == "partitions:" && NF == 5 && $4 > 0 { print $4; exit }'
}

# True when TOPIC exists: asked of the broker with kcat, else remembered from create_topic
# (the marker lives next to the data directory and is cleared when storage is formatted).
kafka_topic_exists() {
    if have kcat; then
        [ -n "$(kafka_topic_partitions "$1")" ]
    else
        [ -f "$KAFKA_DIR/topics/$1" ] && [ -f "$KAFKA_DIR/data/meta.properties" ]
    fi
}

write_kafka_config() {
    mkdir -p "$KAFKA_DIR/data" "$KAFKA_DIR/logs"
    cat >"$KAFKA_DIR/server.properties" <<EOF
# Generated by scripts/infra.sh on every start; edit the script, not this file.
# Single-node KRaft: this process is both broker and controller.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DIR/data

# One broker: every internal topic has a single replica.
num.partitions=$KAFKA_TOPIC_PARTITIONS
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
# Fewer __consumer_offsets partitions than the default 50: quicker first group join, less
# overhead on a small shared machine.
offsets.topic.num.partitions=$KAFKA_TOPIC_PARTITIONS
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Tests join and leave consumer groups all the time: no artificial wait before a rebalance.
group.initial.rebalance.delay.ms=0
# After a crash (kafka-stop --kill) the restarted broker cannot register until the controller
# expires its previous session: 4 s instead of the default 9 s keeps outage tests short.
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=4000

# A development broker: keep a day of data at most, in modest segments.
log.retention.hours=24
log.segment.bytes=134217728
num.recovery.threads.per.data.dir=1

# Threads: see KAFKA_NETWORK_THREADS and KAFKA_IO_THREADS in scripts/infra.sh.
num.network.threads=$KAFKA_NETWORK_THREADS
num.io.threads=$KAFKA_IO_THREADS
EOF

    # Broker log: INFO for the lifecycle, WARN for the per-partition/per-request chatter that
    # would otherwise grow with every topic the tests create.
    cat >"$KAFKA_DIR/log4j2.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by scripts/infra.sh on every start. -->
<Configuration status="warn">
  <Appenders>
    <RollingFile name="server" fileName="$KAFKA_DIR/logs/server.log"
                 filePattern="$KAFKA_DIR/logs/server.log.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <SizeBasedTriggeringPolicy size="50 MB"/>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Root level="INFO"><AppenderRef ref="server"/></Root>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="kafka.network.RequestChannel\$" level="WARN"/>
    <Logger name="kafka.log" level="WARN"/>
    <Logger name="kafka.cluster" level="WARN"/>
    <Logger name="kafka.server.ReplicaFetcherManager" level="WARN"/>
    <Logger name="kafka.server.ReplicaAlterLogDirsManager" level="WARN"/>
    <Logger name="kafka.server.metadata" level="WARN"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Logger name="org.apache.kafka.storage" level="WARN"/>
    <Logger name="org.apache.kafka.controller" level="WARN"/>
    <Logger name="org.apache.kafka.image" level="WARN"/>
    <Logger name="org.apache.kafka.metadata" level="WARN"/>
    <Logger name="org.apache.kafka.raft" level="WARN"/>
    <Logger name="org.apache.kafka.coordinator" level="WARN"/>
    <Logger name="org.apache.kafka.common.config" level="WARN"/>
    <Logger name="org.apache.kafka.common.utils.AppInfoParser" level="WARN"/>
    <Logger name="org.apache.kafka.clients" level="WARN"/>
  </Loggers>
</Configuration>
EOF

    cat >"$KAFKA_DIR/tools-log4j2.xml" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by scripts/infra.sh: Kafka's command-line tools log warnings to stderr only. -->
<Configuration status="warn">
  <Appenders>
    <Console name="stderr" target="SYSTEM_ERR"><PatternLayout pattern="[%d] %p %m (%c)%n"/></Console>
  </Appenders>
  <Loggers>
    <Root level="WARN"><AppenderRef ref="stderr"/></Root>
  </Loggers>
</Configuration>
EOF
}

# Format the KRaft storage once (what bin/kafka-storage.sh format --standalone does).
format_kafka_storage() {
    [ -f "$KAFKA_DIR/data/meta.properties" ] && return 0
    local id
    id="$(kafka_tool "$KAFKA_STORAGE_TOOL" random-uuid)"
    say "formatting Kafka storage (cluster id $id)"
    rm -rf "$KAFKA_DIR/topics"
    kafka_tool "$KAFKA_STORAGE_TOOL" format -t "$id" -c "$KAFKA_DIR/server.properties" --standalone \
        >"$KAFKA_DIR/logs/format.log" 2>&1 \
        || { cat "$KAFKA_DIR/logs/format.log" >&2; die "formatting Kafka storage failed"; }
    echo "$id" >"$KAFKA_DIR/cluster.id"
}

kafka_log_tail() {
    echo "----- $KAFKA_DIR/logs/server.log (last 40 lines)" >&2
    tail -n 40 "$KAFKA_DIR/logs/server.log" >&2 2>/dev/null || true
    if [ -s "$KAFKA_DIR/kafka.out" ]; then
        echo "----- $KAFKA_DIR/kafka.out (JVM output, last 20 lines)" >&2
        tail -n 20 "$KAFKA_DIR/kafka.out" >&2
    fi
}

# Start the broker in the background (own session, so Ctrl-C in `make run` does not reach it)
# and wait until it answers clients.
start_kafka() {
    local pid
    if pid="$(kafka_our_pid)"; then
        wait_kafka "$pid"
        return 0
    fi
    if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
        warn "something not started by infra.sh listens on $KAFKA_BOOTSTRAP; using it as the broker"
        return 0
    fi
    port_open "$KAFKA_HOST" "$KAFKA_CONTROLLER_PORT" \
        && die "port $KAFKA_CONTROLLER_PORT (Kafka controller) is taken by another process"
    ensure_java
    ensure_kafka_jars
    write_kafka_config
    format_kafka_storage
    kafka_version >"$KAFKA_DIR/version"
    say "starting Kafka $(kafka_version) (KRaft broker+controller) on $KAFKA_BOOTSTRAP"
    rm -f "$KAFKA_PID_FILE"
    [ ! -s "$KAFKA_DIR/kafka.out" ] || mv -f "$KAFKA_DIR/kafka.out" "$KAFKA_DIR/kafka.out.1"
    # The wrapper records the JVM's pid (exec keeps it) and closes inherited descriptors such as
    # our lock (fd 9) or make's jobserver pipe, which the long-lived broker must not hold.
    # shellcheck disable=SC2016,SC2086 # $$ is the wrapper's; KAFKA_HEAP_OPTS is a list of flags
    setsid bash -c 'echo $$ >"$0"
        for fd in /proc/$$/fd/*; do fd=${fd##*/}; if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi; done
        exec "$@"' "$KAFKA_PID_FILE" \
        "$JAVA" $KAFKA_HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
        "-Xlog:gc*:file=$KAFKA_DIR/logs/gc.log:time,uptime,level,tags:filecount=5,filesize=20M" \
        -Djava.awt.headless=true -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.xml" \
        -Dkafka.logs.dir="$KAFKA_DIR/logs" -cp "$KAFKA_LIBS/*" \
        "$KAFKA_MAIN" "$KAFKA_DIR/server.properties" \
        </dev/null >"$KAFKA_DIR/kafka.out" 2>&1 9>&- &
    local _
    for _ in $(seq 50); do [ -s "$KAFKA_PID_FILE" ] && break; sleep 0.1; done
    pid="$(cat "$KAFKA_PID_FILE" 2>/dev/null || true)"
    [ -n "$pid" ] || die "Kafka did not start (no pid)"
    wait_kafka "$pid"
}

wait_kafka() {
    local pid="$1" deadline=$((SECONDS + WAIT_SECS)) started=$SECONDS
    until kafka_answers 1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            kafka_log_tail
            rm -f "$KAFKA_PID_FILE"
            die "Kafka (pid $pid) exited during start-up"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            kafka_log_tail
            die "Kafka (pid $pid, left running) did not accept clients on $KAFKA_BOOTSTRAP within ${WAIT_SECS}s"
        fi
        sleep 0.3
    done
    [ "$SECONDS" -le "$started" ] || say "Kafka accepts clients on $KAFKA_BOOTSTRAP (pid $pid, after $((SECONDS - started))s)"
    return 0
}

# Create TOPIC with PARTS partitions unless it exists (replication factor 1).
# What kafka_tool needs: Java, the jars, the tools' logging config and a log directory.
prepare_kafka_tools() {
    mkdir -p "$KAFKA_DIR/logs"
    find_java
    [ -n "$JAVA" ] || ensure_java
    ensure_kafka_jars
    [ -f "$KAFKA_DIR/tools-log4j2.xml" ] || write_kafka_config
}

create_topic() {
    local topic="$1" parts="$2" have_parts attempt
    mkdir -p "$KAFKA_DIR/logs"
    have_parts="$(kafka_topic_partitions "$topic")"
    if [ -n "$have_parts" ]; then
        [ "$have_parts" = "$parts" ] || warn "topic $topic exists with $have_parts partitions, not $parts"
        return 0
    fi
    prepare_kafka_tools
    # Right after start-up the controller may still be settling: retry a few times.
    for attempt in 1 2 3 4 5; do
        if kafka_tool "$KAFKA_TOPIC_COMMAND" --bootstrap-server "$KAFKA_BOOTSTRAP" --create --if-not-exists \
                --topic "$topic" --partitions "$parts" --replication-factor 1 >"$KAFKA_DIR/logs/topic.log" 2>&1; then
            mkdir -p "$KAFKA_DIR/topics"
            echo "$parts" >"$KAFKA_DIR/topics/$topic"
            say "topic $topic ready ($parts partitions)"
            return 0
        fi
        sleep "$attempt"
    done
    cat "$KAFKA_DIR/logs/topic.log" >&2
    die "could not create topic $topic"
}

kafka_up() {
    local pid=""
    pid="$(kafka_our_pid)" || pid=""
    if [ -n "$pid" ] && ! kafka_jars_fresh; then
        say "scripts/kafka/pom.xml changed: restarting the broker on the new jars"
        stop_kafka TERM
        pid=""
    fi
    # Fast path (no JVM started): the broker answers and the topic exists.
    if port_open "$KAFKA_HOST" "$KAFKA_PORT" && kafka_topic_exists "$KAFKA_TOPIC"; then
        say "kafka: already running on $KAFKA_BOOTSTRAP${pid:+ (pid $pid)}"
        return 0
    fi
    ensure_kcat
    start_kafka
    create_topic "$KAFKA_TOPIC" "$KAFKA_TOPIC_PARTITIONS"
}

# Stop the broker this script started; SIG is TERM (graceful) or KILL (crash).
stop_kafka() {
    local sig="${1:-TERM}" pid deadline
    if ! pid="$(kafka_our_pid)"; then
        if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
            say "kafka: not started by infra.sh, left running"
        else
            say "kafka: not running"
        fi
        return 0
    fi
    say "stopping Kafka (pid $pid, SIG$sig)"
    kill -s "$sig" "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 60))
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            warn "Kafka did not stop within 60s; killing it"
            kill -s KILL "$pid" 2>/dev/null || true
            deadline=$((SECONDS + 10))
        fi
        sleep 0.2
    done
    rm -f "$KAFKA_PID_FILE"
    say "kafka: stopped"
}

kafka_status() {
    local pid version
    version="$(cat "$KAFKA_DIR/version" 2>/dev/null || kafka_version)"
    if pid="$(kafka_our_pid)"; then
        if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
            printf '%-9s %-9s %-7s %-15s controller %s:%s, pid %s, started by infra.sh\n' \
                kafka running "$version" "$KAFKA_BOOTSTRAP" "$KAFKA_HOST" "$KAFKA_CONTROLLER_PORT" "$pid"
        else
            printf '%-9s %-9s %-7s %-15s pid %s, not accepting connections yet\n' \
                kafka starting "$version" "$KAFKA_BOOTSTRAP" "$pid"
        fi
    elif port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
        printf '%-9s %-9s %-7s %-15s not started by infra.sh\n' kafka running "?" "$KAFKA_BOOTSTRAP"
    else
        printf '%-9s %-9s %-7s %s\n' kafka stopped "$version" "$KAFKA_BOOTSTRAP"
    fi
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL (the Debian cluster, managed with pg_ctlcluster)

PG_VER=
PG_NAME=

# Pick the cluster that serves port 5432; create one when there is none.
pg_pick_cluster() {
    local line
    line="$(pg_lsclusters -h 2>/dev/null | awk -v p="$PG_PORT" '$3 == p { print $1, $2; exit }')"
    if [ -n "$line" ]; then
        read -r PG_VER PG_NAME <<<"$line"
        return 0
    fi
    PG_VER="$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | sort -V | tail -n 1)"
    [ -n "$PG_VER" ] || die "no PostgreSQL server version under /usr/lib/postgresql"
    if pg_lsclusters -h 2>/dev/null | awk -v v="$PG_VER" '$1 == v && $2 == "main" { f = 1 } END { exit !f }'; then
        PG_NAME=chat_analytics
    else
        PG_NAME=main
    fi
    say "creating PostgreSQL cluster $PG_VER/$PG_NAME on port $PG_PORT"
    as_root pg_createcluster "$PG_VER" "$PG_NAME" --port "$PG_PORT" >"$PG_DIR/createcluster.log" 2>&1 \
        || { cat "$PG_DIR/createcluster.log" >&2; die "pg_createcluster failed"; }
}

pg_cluster_online() {
    pg_lsclusters -h 2>/dev/null | awk -v v="$PG_VER" -v n="$PG_NAME" '$1 == v && $2 == n && $4 == "online" { f = 1 } END { exit !f }'
}

pg_ready() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 2 >/dev/null 2>&1; }

# `psql` as chat over TCP with the password: what the service and the tests do.
pg_chat_psql() {
    PGPASSWORD="$PG_PASSWORD" PGCONNECT_TIMEOUT=3 psql -X -q -A -t -v ON_ERROR_STOP=1 \
        -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d "$PG_DB" "$@"
}

pg_login_ok() { [ "$(pg_chat_psql -c 'select rolcreatedb and rolcreaterole from pg_roles where rolname = current_user' 2>/dev/null)" = t ]; }

wait_postgres() {
    local deadline=$((SECONDS + WAIT_SECS))
    until pg_ready; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            pg_log_tail
            die "PostgreSQL did not accept connections on $PG_HOST:$PG_PORT within ${WAIT_SECS}s"
        fi
        sleep 0.2
    done
}

pg_log_tail() {
    local log
    log="$(pg_lsclusters -h 2>/dev/null | awk -v v="$PG_VER" -v n="$PG_NAME" '$1 == v && $2 == n { print $7 }')"
    if [ -n "$log" ] && [ -r "$log" ]; then
        echo "----- $log (last 30 lines)" >&2
        tail -n 30 "$log" >&2
    fi
}

# Start the cluster if it is down; then it counts as ours (stopped by `down`) unless `up`
# found it running in the first place. One the postgresql package just started for us
# (its postinst does on machines with an init system) counts as ours too.
pg_start_cluster() {
    if pg_cluster_online; then
        if [ -n "$PG_INSTALLED_NOW" ]; then echo "$PG_VER $PG_NAME" >"$PG_OURS"
        elif [ ! -f "$PG_OURS" ]; then touch "$PG_FOUND"
        fi
        return 0
    fi
    say "starting PostgreSQL cluster $PG_VER/$PG_NAME on port $PG_PORT"
    as_root bash -c "$STD_FDS_ONLY" pg_ctlcluster pg_ctlcluster "$PG_VER" "$PG_NAME" start >"$PG_DIR/ctl.log" 2>&1 \
        || { cat "$PG_DIR/ctl.log" >&2; pg_log_tail; die "pg_ctlcluster $PG_VER $PG_NAME start failed"; }
    [ -f "$PG_FOUND" ] || echo "$PG_VER $PG_NAME" >"$PG_OURS"
}

# Role chat (LOGIN CREATEDB CREATEROLE: migrate creates the read-only chat_analyst role;
# password chat) and database chat_analytics owned by it.
pg_provision() {
    say "provisioning role $PG_USER and database $PG_DB"
    as_postgres psql -X -q -v ON_ERROR_STOP=1 -p "$PG_PORT" -d postgres >/dev/null <<EOF
SELECT 'CREATE ROLE $PG_USER' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER')\gexec
ALTER ROLE $PG_USER WITH LOGIN CREATEDB CREATEROLE PASSWORD '$PG_PASSWORD';
SELECT 'CREATE DATABASE $PG_DB OWNER $PG_USER' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$PG_DB')\gexec
ALTER DATABASE $PG_DB OWNER TO $PG_USER;
EOF
}

# Debian's pg_hba.conf already allows scram over 127.0.0.1; add a rule only if login fails.
pg_ensure_hba() {
    local hba rule="host all $PG_USER 127.0.0.1/32 scram-sha-256 # added by chat-analytics scripts/infra.sh"
    hba="$(as_postgres psql -X -A -t -p "$PG_PORT" -d postgres -c 'show hba_file')"
    if ! as_root grep -qF "$rule" "$hba"; then
        say "adding a password rule for $PG_USER over 127.0.0.1 to $hba"
        as_root sed -i "0,/^[[:space:]]*\(local\|host\)/s||$rule\n&|" "$hba"
        as_postgres psql -X -q -p "$PG_PORT" -d postgres -c 'select pg_reload_conf()' >/dev/null
    fi
}

# The server settings for the design volume (10,000 rows/s of batched inserts plus the rollup
# folds), in the cluster's conf.d, which Debian's postgresql.conf includes; Debian's defaults
# are sized for a small machine. shared_buffers: the day's partition, its indexes and the
# rollups stay in memory (default 128 MB). max_wal_size and checkpoint_timeout: with 1 GB of
# WAL, draining a backlog at 16,000 rows/s forced a checkpoint every 50 s, and the first change
# to each page after one writes a full-page image; wal_compression shrinks those. jit: off, the
# statements here run for milliseconds. docs/BENCHMARKS-HISTORY.md has what they changed.
PG_SETTINGS="# Written by chat-analytics scripts/infra.sh; edit there.
shared_buffers = '2GB'
max_wal_size = '4GB'
checkpoint_timeout = '15min'
wal_compression = 'lz4'
jit = off"

# Writes PG_SETTINGS to the cluster's conf.d when they differ; a cluster this script started
# is restarted for them to apply (shared_buffers needs it), one found running is left alone.
pg_configure() {
    local file="/etc/postgresql/$PG_VER/$PG_NAME/conf.d/chat-analytics.conf"
    if [ "$(cat "$file" 2>/dev/null)" = "$PG_SETTINGS" ]; then
        return 0
    fi
    if ! { as_root mkdir -p "$(dirname "$file")" \
        && printf '%s\n' "$PG_SETTINGS" | as_root tee "$file" >/dev/null; }; then
        say "postgres: could not write $file; running with the cluster's own settings"
        return 0
    fi
    pg_cluster_online || return 0
    # Ours: started by this script, or just now by the package's installation.
    if [ -f "$PG_OURS" ] || [ -n "$PG_INSTALLED_NOW" ]; then
        say "postgres: restarting cluster $PG_VER/$PG_NAME for the settings in $file"
        as_root bash -c "$STD_FDS_ONLY" pg_ctlcluster pg_ctlcluster "$PG_VER" "$PG_NAME" restart >"$PG_DIR/ctl.log" 2>&1 \
            || { cat "$PG_DIR/ctl.log" >&2; pg_log_tail; die "pg_ctlcluster $PG_VER $PG_NAME restart failed"; }
    else
        say "postgres: wrote $file; the cluster was running before, so they apply at its next restart"
    fi
}

postgres_up() {
    mkdir -p "$PG_DIR"
    if pg_ready && pg_login_ok; then
        if pg_load_cluster; then
            pg_configure
            wait_postgres
        fi
        say "postgres: already running on $PG_HOST:$PG_PORT"
        return 0
    fi
    ensure_postgres_installed
    pg_pick_cluster
    echo "$PG_VER $PG_NAME" >"$PG_DIR/cluster"
    pg_configure
    pg_start_cluster
    wait_postgres
    if ! pg_login_ok; then
        pg_provision
        pg_login_ok || pg_ensure_hba
    fi
    pg_login_ok || die "cannot log in as $PG_USER on $PG_HOST:$PG_PORT with its password (see $(pg_lsclusters -h | awk -v v="$PG_VER" -v n="$PG_NAME" '$1 == v && $2 == n { print $7 }'))"
    say "postgres: ready on $PG_HOST:$PG_PORT (cluster $PG_VER/$PG_NAME, database $PG_DB)"
}

pg_load_cluster() {
    if [ -f "$PG_DIR/cluster" ]; then
        read -r PG_VER PG_NAME <"$PG_DIR/cluster"
    elif have pg_lsclusters; then
        read -r PG_VER PG_NAME <<<"$(pg_lsclusters -h 2>/dev/null | awk -v p="$PG_PORT" '$3 == p { print $1, $2; exit }')" || true
    fi
    [ -n "$PG_VER" ] && [ -n "$PG_NAME" ]
}

# MODE: fast (disconnect clients, clean shutdown) or immediate (like a crash).
pg_stop_cluster() {
    local mode="${1:-fast}"
    pg_cluster_online || { say "postgres: not running"; return 0; }
    say "stopping PostgreSQL cluster $PG_VER/$PG_NAME (-m $mode)"
    as_root pg_ctlcluster "$PG_VER" "$PG_NAME" stop -m "$mode" >"$PG_DIR/ctl.log" 2>&1 \
        || { cat "$PG_DIR/ctl.log" >&2; die "pg_ctlcluster $PG_VER $PG_NAME stop failed"; }
}

postgres_down() {
    mkdir -p "$PG_DIR"
    if [ -f "$PG_OURS" ] && pg_load_cluster; then
        pg_stop_cluster fast
        rm -f "$PG_OURS"
        say "postgres: stopped"
    elif pg_ready; then
        say "postgres: not started by infra.sh, left running"
        rm -f "$PG_FOUND"
    else
        say "postgres: not running"
        rm -f "$PG_FOUND"
    fi
}

postgres_status() {
    local version="" owner="not started by infra.sh" cluster=""
    if pg_load_cluster; then
        version="$PG_VER"
        cluster="cluster $PG_VER/$PG_NAME, "
    fi
    [ -f "$PG_OURS" ] && owner="started by infra.sh"
    if pg_ready; then
        version="$(pg_chat_psql -c 'show server_version' 2>/dev/null | cut -d' ' -f1)" || true
        [ -n "$version" ] || version="${PG_VER:-?}"
        printf '%-9s %-9s %-7s %-15s %s%s\n' postgres running "$version" "$PG_HOST:$PG_PORT" "$cluster" "$owner"
    else
        printf '%-9s %-9s %-7s %s\n' postgres stopped "${version:-?}" "$PG_HOST:$PG_PORT"
    fi
}

# ---------------------------------------------------------------------------------------------
# Commands

components() { # [kafka|postgres] -> the components to act on
    case "${1:-all}" in
        all | "") echo kafka postgres ;;
        kafka | postgres) echo "$1" ;;
        *) die "unknown component '$1' (expected kafka or postgres)" ;;
    esac
}

cmd_up() {
    local c list started=$SECONDS
    list="$(components "${1:-}")"
    take_lock
    for c in $list; do "${c}_up"; done
    [ "$SECONDS" -le "$started" ] || say "up in $((SECONDS - started))s"
}

cmd_down() {
    local c list
    list="$(components "${1:-}")"
    take_lock
    for c in $list; do
        case "$c" in
            kafka) stop_kafka TERM ;;
            postgres) postgres_down ;;
        esac
    done
}

cmd_is_up() {
    local c list
    list="$(components "${1:-}")"
    for c in $list; do
        case "$c" in
            kafka) kafka_answers || return 1 ;;
            postgres) pg_ready && pg_login_ok || return 1 ;;
        esac
    done
}

cmd_install() {
    mkdir -p "$STATE_DIR"
    ensure_java
    kafka_jars_fresh || ensure_maven
    ensure_postgres_installed
    ensure_kcat
}

cmd_logs() {
    case "${1:-}" in
        kafka) tail -n 100 "$KAFKA_DIR/logs/server.log" ;;
        postgres) pg_load_cluster || die "no PostgreSQL cluster found"; pg_log_tail 2>&1 ;;
        *) die "usage: $0 logs kafka|postgres" ;;
    esac
}

cmd_clean() {
    cmd_down
    case "$STATE_DIR" in
        "" | / | "$HOME" | "$ROOT") die "refusing to delete state directory '$STATE_DIR'" ;;
    esac
    say "removing $STATE_DIR"
    rm -rf "$STATE_DIR"
}

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

delete_topic() {
    local topic="$1"
    prepare_kafka_tools
    if ! kafka_tool "$KAFKA_TOPIC_COMMAND" --bootstrap-server "$KAFKA_BOOTSTRAP" --delete --if-exists \
            --topic "$topic" >"$KAFKA_DIR/logs/topic.log" 2>&1; then
        cat "$KAFKA_DIR/logs/topic.log" >&2
        die "could not delete topic $topic"
    fi
    rm -f "$KAFKA_DIR/topics/$topic"
    say "topic $topic deleted"
}

main() {
    local cmd="${1:-}"
    [ $# -gt 0 ] && shift
    case "$cmd" in
        up) cmd_up "$@" ;;
        down) cmd_down "$@" ;;
        status) kafka_status; postgres_status ;;
        is-up) cmd_is_up "$@" ;;
        kafka-topic)
            if [ $# -ne 2 ] || ! [[ "$2" =~ ^[0-9]+$ ]]; then die "usage: $0 kafka-topic NAME PARTITIONS"; fi
            take_lock
            kafka_answers || die "Kafka does not answer on $KAFKA_BOOTSTRAP (run: $0 up kafka)"
            create_topic "$1" "$2"
            ;;
        kafka-topic-delete)
            [ $# -eq 1 ] || die "usage: $0 kafka-topic-delete NAME"
            take_lock
            kafka_answers || die "Kafka does not answer on $KAFKA_BOOTSTRAP (run: $0 up kafka)"
            delete_topic "$1"
            ;;
        kafka-stop)
            take_lock
            # An outage test must really take the broker down: refuse loudly when the one
            # listening belongs to another checkout (its state dir holds the pid).
            if ! kafka_our_pid >/dev/null && port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
                die "the broker on $KAFKA_BOOTSTRAP was not started from $STATE_DIR; stop it there (scripts/infra.sh down) and run 'scripts/infra.sh up' here"
            fi
            case "${1:-}" in
                "") stop_kafka TERM ;;
                --kill) stop_kafka KILL ;;
                *) die "usage: $0 kafka-stop [--kill]" ;;
            esac
            ;;
        kafka-start) take_lock; start_kafka ;;
        postgres-stop)
            take_lock
            mkdir -p "$PG_DIR"
            pg_load_cluster || die "no PostgreSQL cluster found (run: $0 up postgres)"
            case "${1:-}" in
                "") pg_stop_cluster fast ;;
                --immediate) pg_stop_cluster immediate ;;
                *) die "usage: $0 postgres-stop [--immediate]" ;;
            esac
            ;;
        postgres-start)
            take_lock
            mkdir -p "$PG_DIR"
            pg_load_cluster || die "no PostgreSQL cluster found (run: $0 up postgres)"
            pg_start_cluster
            wait_postgres
            ;;
        logs) cmd_logs "$@" ;;
        install) cmd_install ;;
        clean) cmd_clean ;;
        -h | --help | help) usage ;;
        *) usage >&2; exit 2 ;;
    esac
}

main "$@"
