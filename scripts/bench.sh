#!/usr/bin/env bash
# Runs the benchmark scenarios against real local workerd (examples/bench) and keeps the tables.
# Usage: scripts/bench.sh [bench options]   e.g. --full, --only fanout,batch, --via-proxy
# Builds the Worker first unless ROOMKEEPER_SKIP_BUILD=1. Results: target/bench/results-*.md.
# Load goes to 127.0.0.1 only; every scenario is bounded in count and time.
set -euo pipefail
cd "$(dirname "$0")/.."
export WRANGLER_SEND_METRICS=false
if [ "${ROOMKEEPER_SKIP_BUILD:-}" != 1 ]; then
  bash scripts/build.sh
fi
cargo build --release --example bench
mkdir -p target/bench
out="target/bench/results-$(date -u +%Y%m%dT%H%M%SZ).md"
{
  echo "# Roomkeeper benchmarks, $(date -u +'%Y-%m-%d %H:%M UTC')"
  echo
  echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB"
  echo "- workerd: $(node_modules/.bin/wrangler --version 2>/dev/null | head -1) (wrangler)"
  echo "- command: scripts/bench.sh $*"
} > "$out"
target/release/examples/bench --out "$out.tables" "$@"
cat "$out.tables" >> "$out" && rm -f "$out.tables"
echo "results: $out"
