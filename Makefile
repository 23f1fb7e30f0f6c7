# Roomkeeper — the two commands a newcomer needs:
#   make dev    set up everything, build, and run the service on http://127.0.0.1:8787
#   make test   set up everything and run every test (lint, unit, end-to-end on real workerd)

SHELL := /bin/bash
PORT ?= 8787
WRANGLER := node_modules/.bin/wrangler
export WRANGLER_SEND_METRICS := false
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: setup build dev test lint layout unit e2e browser deploy-check valuation-eval bench soak fuzz compare-sockudo clean

## setup: install the wasm target, worker-build, wasm-bindgen, wrangler and test packages (idempotent)
setup:
	@bash scripts/setup.sh

## build: compile the Worker to build/ (no downloads)
build: setup
	@bash scripts/build.sh

## dev: run the service locally with real workerd; local DO storage, D1, KV and Queues under .wrangler/state
dev: build
	bash scripts/db.sh
	$(WRANGLER) dev --ip 127.0.0.1 --port $(PORT) --show-interactive-dev-session=false

## test: everything CI runs — formatting, clippy (native and wasm32), unit, end-to-end and browser tests
test: setup lint
	cargo test --workspace --all-targets
	node --test tests/client/ tests/browser/ tests/pusher/

## browser: browser tests only (headless Debian Chromium via playwright-core)
browser: setup
	node --test tests/browser/

## lint: rustfmt and clippy on both targets, warnings denied, the layout rules, and the client
## package's type declarations checked by tsc
lint: setup layout
	node_modules/.bin/tsc -p tests/client/tsconfig.json
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --target wasm32-unknown-unknown --lib -- -D warnings

## layout: the layout rules (tests/layout.rs): the core never uses the Workers glue, no module
## import cycles, no file over 800 lines before its tests
layout:
	cargo test --test layout

## unit: native unit and property tests only (fast, no workerd)
unit:
	cargo test --workspace --lib

## e2e: end-to-end tests only (builds the Worker, starts workerd)
e2e: setup
	cargo test --test e2e

## deploy-check: check the deploy defaults (tests/deploy_config.rs), then build the deployable bundle for every environment offline
deploy-check: build
	cargo test --test deploy_config
	for env in "" staging production; do \
	  out=$$(mktemp -d); \
	  $(WRANGLER) deploy --dry-run --outdir $$out $${env:+--env $$env} || exit 1; \
	  rm -rf $$out; \
	done

## bench: the quick benchmark set on real local workerd, under 5 minutes (BENCH_ARGS=--full for all of it); see BENCHMARKS.md
bench: setup
	bash scripts/bench.sh $(BENCH_ARGS)

## soak: the 10-minute soak (rate, joins and leaves; no loss, no duplicates, flat memory); ROOMKEEPER_SOAK_SECS to change
soak: setup
	ROOMKEEPER_SOAK=1 cargo test --test e2e -- soak

## fuzz: the fuzz targets (frame decoders, tokens, CSV import, paths, batches) for FUZZ_CASES cases each (about 2 minutes)
FUZZ_CASES ?= 100000
fuzz:
	PROPTEST_CASES=$(FUZZ_CASES) cargo test --release --test fuzz

## compare-sockudo: the Pusher behaviour comparison with sockudo 5.2.0 (docs/PUSHER.md); builds sockudo into .tools/ once (30+ minutes; SOCKUDO=path to use a built one)
compare-sockudo: build
	bash scripts/sockudo.sh

## valuation-eval: print the valuation model's cross-validated error and interval coverage
valuation-eval:
	cargo run --release --example valuation_eval

clean:
	rm -rf build target/worker .wrangler
