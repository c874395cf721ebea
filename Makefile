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
# Integration tests share one broker and one Postgres (each test gets its own topic and
# database); 4 threads keep a 2-core machine busy without starving Kafka and Postgres.
TEST_THREADS ?= 4
# Extra arguments for `cargo test` before `--`, e.g. `make test TEST_ARGS='--test ingest'`.
TEST_ARGS ?=
# `make run NLP_SIM=0` runs against your own NLP API (set nlp.url) instead of nlp-sim.
NLP_SIM ?= 1

.PHONY: help infra-up infra-down infra-status clean-infra build run test lint

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
test: infra-up ## Every test, unit and integration (real Kafka and Postgres); leaves infra running
	$(CARGO) test --release $(TEST_ARGS) -- --test-threads=$(TEST_THREADS)

lint: ## rustfmt check, clippy on all targets (warnings are errors), promtool on deploy/
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --release -- -D warnings
	scripts/check-deploy.sh
