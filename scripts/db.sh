#!/usr/bin/env bash
# Applies the D1 migrations to the local database and loads the demo sales, idempotently.
# Usage: scripts/db.sh [PERSIST_DIR]   (default: wrangler's .wrangler/state)
set -euo pipefail
cd "$(dirname "$0")/.."
export WRANGLER_SEND_METRICS=false CI=true
persist=()
[ $# -ge 1 ] && persist=(--persist-to "$1")

# Each wrangler command below starts a workerd of its own. Once, under a loaded test run (CI,
# stop 23, restarting after a kill -9), `d1 migrations apply` failed with nothing but
# workerd's `false == true`; the cause is not known. Both commands are idempotent, so each gets
# three tries, and a failed try's output is shown.
try3() {
  local n out
  for n in 1 2 3; do
    if out="$("$@" 2>&1)"; then
      [ "$n" -gt 1 ] && echo "db.sh: succeeded on try $n: $*" >&2
      return 0
    fi
    printf 'db.sh: try %s of 3 failed: %s\n%s\n' "$n" "$*" "$out" >&2
    sleep "$n"
  done
  return 1
}

try3 node_modules/.bin/wrangler d1 migrations apply DB --local "${persist[@]}"
try3 node_modules/.bin/wrangler d1 execute DB --local "${persist[@]}" --file seeds/windsor-housing-1987.sql
