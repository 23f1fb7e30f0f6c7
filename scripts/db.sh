#!/usr/bin/env bash
# Applies the D1 migrations to the local database and loads the demo sales, idempotently.
# Usage: scripts/db.sh [PERSIST_DIR]   (default: wrangler's .wrangler/state)
set -euo pipefail
cd "$(dirname "$0")/.."
export WRANGLER_SEND_METRICS=false CI=true
persist=()
[ $# -ge 1 ] && persist=(--persist-to "$1")
node_modules/.bin/wrangler d1 migrations apply DB --local "${persist[@]}" >/dev/null
node_modules/.bin/wrangler d1 execute DB --local "${persist[@]}" --file seeds/windsor-housing-1987.sql >/dev/null
