#!/usr/bin/env bash
# Behaviour comparison with sockudo 5.2.0 (tests/pusher/compare/sockudo.mjs): installs sockudo
# into .tools/sockudo once (the cargo build takes 30+ minutes), then runs the comparison, which
# prints a Markdown table and writes artifacts/sockudo-compare.md.
# SOCKUDO=/path/to/sockudo skips the install and uses that binary.
set -euo pipefail
# A relative SOCKUDO is the caller's, so resolve it before moving to the repo root.
[[ -n "${SOCKUDO:-}" ]] && SOCKUDO="$(realpath -m "$SOCKUDO")"
cd "$(dirname "$0")/.."

VERSION=5.2.0
ROOT=.tools/sockudo

install_sockudo() {
  if "$ROOT/bin/sockudo" --version 2>/dev/null | grep -q " $VERSION\$"; then
    return
  fi
  # sockudo's build compiles .proto files, and cargo cannot fetch protoc by itself.
  if ! command -v protoc >/dev/null; then
    sudo=(); [[ "$(id -u)" -ne 0 ]] && sudo=(sudo)
    "${sudo[@]}" apt-get update && "${sudo[@]}" apt-get install -y protobuf-compiler
  fi
  cargo install sockudo --version "$VERSION" --no-default-features --features local --root "$ROOT"
}

if [[ -n "${SOCKUDO:-}" && -x "$SOCKUDO" ]]; then
  echo "using SOCKUDO=$SOCKUDO"
else
  [[ -n "${SOCKUDO:-}" ]] && echo "SOCKUDO=$SOCKUDO is not an executable; installing into $ROOT" >&2
  install_sockudo
  export SOCKUDO="$ROOT/bin/sockudo"
fi
exec node tests/pusher/compare/sockudo.mjs
