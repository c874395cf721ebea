# chat-analytics: developer and CI entry points. `make help` lists the targets.
#
# The local infrastructure (Apache Kafka 4.x in KRaft mode and PostgreSQL, no Docker) is
# managed by scripts/infra.sh: it installs what is missing, keeps its state in var/infra/
# and its Kafka jars in .cache/ (both git-ignored), and is quick when everything is already up.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
INFRA := scripts/infra.sh
BIN := ./target/release/chat-analytics
K6 := .cache/bin/k6
# Integration tests share one broker and one Postgres (each test gets its own topic and
# database); 4 threads keep a 2-core machine busy without starving Kafka and Postgres.
TEST_THREADS ?= 4
# Extra arguments for `cargo test` before `--`, e.g. `make test TEST_ARGS='--test ingest'`.
TEST_ARGS ?=
# `make run NLP_SIM=0` runs against your own NLP API (set nlp.url) instead of nlp-sim.
NLP_SIM ?= 1
# Seconds per fuzz target for `make fuzz` (`make test` runs each for 20 s).
FUZZ_SECONDS ?= 300

.PHONY: help infra-up infra-down infra-status clean-infra build run test test-tools lint \
	bench bench-capacity bench-worker bench-analytics bench-compare chaos fuzz k6-install k6-steady k6-ramp k6-spike k6-soak k6-smoke

help: ## List the targets
	@awk 'BEGIN { FS = ":.*## " } /^[a-zA-Z0-9_.-]+:.*## / { printf "  %-14s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

infra-up: ## Install if missing, start and provision Kafka (127.0.0.1:9092) and Postgres (127.0.0.1:5432)
	$(INFRA) up

infra-down: ## Stop what infra-up started (anything that was already running is left alone)
	$(INFRA) down

infra-status: ## One line per component: running or stopped, version, address
	$(INFRA) status

clean-infra: ## infra-down, then delete var/infra (Kafka data and logs, infra state)
	$(INFRA) clean

build: ## Release build of ./target/release/chat-analytics
	$(CARGO) build --release

# nlp-sim runs in the background for as long as `serve` runs in the foreground; Ctrl-C
# stops serve gracefully and the EXIT trap stops nlp-sim. Kafka and Postgres keep running.
run: infra-up build ## Start infra, build, migrate, then nlp-sim (background) and serve (foreground)
	$(BIN) migrate
ifeq ($(NLP_SIM),1)
	nlp=; trap '[ -z "$$nlp" ] || { kill "$$nlp" 2>/dev/null; wait "$$nlp" 2>/dev/null || true; }' EXIT; \
	$(BIN) nlp-sim & nlp=$$!; \
	$(BIN) serve
else
	exec $(BIN) serve
endif

# Kafka and Postgres are left running after the tests: starting them costs seconds and the
# next `make test` or `make run` reuses them. Stop them with `make infra-down`.
# (.ci/run stops at the end whatever it had to start itself.)
# After cargo's tests: schemathesis against the running API, then a 20 s smoke of each fuzz
# target (its first build on a machine, with nightly, compiles every dependency again, into
# ~/.cache/chat-analytics/fuzz-target, which later runs and fresh clones reuse), then the
# bench tools' own tests (medians, capacity rule, plot, competing process; a few seconds),
# then the deploy files: promtool's unit tests of every alert rule, and every kustomization
# of deploy/k8s rendered and checked against the Kubernetes and KEDA schemas (offline).
# The logs of the processes the tests start, and their dead-letter directories, go to
# target/tmp/chat-analytics-tests/ (a failing test names its log); each run empties it first.
test: infra-up test-tools ## Every test: unit, integration (real Kafka, Postgres, Prometheus), API schema, fuzz smoke, bench tools, alert rules, k8s manifests
	rm -rf target/tmp/chat-analytics-tests
	$(CARGO) test --workspace --release $(TEST_ARGS) -- --test-threads=$(TEST_THREADS)
	scripts/check-api-schema.sh
	FUZZ_SECONDS=20 scripts/fuzz.sh
	python3 -m unittest scripts/test_bench_tools.py
	scripts/test-alerts.sh
	scripts/validate-k8s.sh

test-tools: ## Install nightly Rust, cargo-fuzz, schemathesis, kustomize, kubernetes-validate and KEDA's CRD (in .cache/) if missing
	scripts/install-test-tools.sh

# Not part of `make test`: speed and memory targets are measured here, never asserted in tests.
# Knobs pass through, e.g. `make bench RUNS=1` (a single run) or `make bench STEAL=0.5`
# (scripts/bench.sh lists them).
bench: ## Full stack + load generator: steady 10,000/s, 50,000 connections; medians of RUNS (3); STEAL (0) of a core busy; report in bench/results/
	scripts/bench.sh

# e.g. `make bench-capacity STEAL=0.5`, `make bench-capacity MAX_RATE=20000` or `RUNS=1` (scripts/bench_capacity.sh).
bench-capacity: ## The bench stack at 10,000, 12,500, 15,000 ... msg/s until a step fails, RUNS (3) times; median capacity and P99 plot in bench/results/capacity-*/
	scripts/bench_capacity.sh

# e.g. `make bench-worker MODES=down`, `make bench-worker RECORDS=200000`, or two worker configurations
# alternated: `make bench-worker MODES=down ROUNDS=3 A='CHAT_ANALYTICS__STORAGE__BATCH_MAX_ROWS=500' B=''`
# (scripts/bench_worker.sh).
bench-worker: ## One worker draining a 1,000,000-record backlog, NLP instant and NLP down; rows/s, CPU per record, peak memory, WAL and bytes per row
	scripts/bench_worker.sh

# e.g. `make bench-compare A='INGEST_PROCESSES=3' B='INGEST_PROCESSES=1'`, or A='' (as shipped) and
# B='CHAT_ANALYTICS__KAFKA__LINGER_MS=20'; RATE, PAIRS and STEAL pass through (scripts/bench_compare.sh).
bench-compare: ## Two configurations of the bench stack in turn at a steady rate (6,000/s), STEAL (0) of a core busy: CPU per message of each process, P99 ingest and end to end, the broker's GC pauses, medians and ratios
	scripts/bench_compare.sh "$(A)" "$(B)"

bench-analytics: build ## Analysts' queries on 100 million generated rows, rollups vs raw, cold and warm cache
	scripts/bench_analytics.sh

# Not part of `make test` either: it stops and starts Kafka and Postgres, so nothing else may
# use them meanwhile. Knobs pass through, e.g. `make chaos RATE=2000` or
# `make chaos SCENARIO=pg-outage RATE=10000 OUTAGE=60` (scripts/chaos.sh lists them).
chaos: ## Faults under load (kills, outages, rebalances), every message id accounted for; report in bench/results/
	scripts/chaos.sh

# Not part of `make test` at this length: a report of executions and crashes per target.
fuzz: test-tools ## Every fuzz target (fuzz/) for FUZZ_SECONDS each; report in bench/results/fuzz-*/
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh

lint: ## rustfmt check (fuzz/ too), clippy on every crate and target (warnings are errors), promtool on deploy/
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml -- --check
	$(CARGO) clippy --workspace --all-targets --release -- -D warnings
	scripts/check-deploy.sh

# k6 scenarios against a running service (`make run` in another terminal); knobs such as
# RATE, DURATION, VUS and BASE_URL pass through, e.g. `make k6-steady RATE=2000`.
k6-install: ## Build the pinned k6 (go install) into .cache/bin/k6
	scripts/install-k6.sh

k6-steady: k6-install ## k6: 10,000/s for 60 s against 127.0.0.1:8080
	$(K6) run loadtest/k6/steady.js

k6-ramp: k6-install ## k6: ramp 1,000 -> 30,000/s to find saturation
	$(K6) run loadtest/k6/ramp.js

k6-spike: k6-install ## k6: spike to 40,000/s; every 429 must carry Retry-After
	$(K6) run loadtest/k6/spike.js

k6-soak: k6-install ## k6: 5,000/s for 10 minutes
	$(K6) run loadtest/k6/soak.js

k6-smoke: k6-install ## k6: every script for a few seconds at 50/s
	RATE=50 DURATION=5s VUS=5 $(K6) run loadtest/k6/steady.js
	START_RATE=10 RATE=50 DURATION=5s HOLD=2s VUS=5 $(K6) run loadtest/k6/ramp.js
	BASE_RATE=10 RATE=80 WARMUP=3s DURATION=3s RECOVERY=4s VUS=5 $(K6) run loadtest/k6/spike.js
	RATE=50 DURATION=5s VUS=5 $(K6) run loadtest/k6/soak.js
