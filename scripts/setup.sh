#!/usr/bin/env bash
# Installs everything Roomkeeper needs to build, run and test, idempotently: the wasm32
# target, worker-build, the wasm-bindgen CLI matching Cargo.lock exactly, wrangler and the
# Pusher client libraries (npm ci), the Debian packages the tests use and a Python venv
# (.venv/) with the Python Pusher SDK. Each step is skipped when already at the right
# version, so a second run takes seconds. Nothing here downloads from outside the package
# registries (see docs/TOOLCHAIN.md).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*" >&2; }

# Version of a package as locked in Cargo.lock.
locked() {
  awk -v want="$1" '$1 == "name" && $3 == "\"" want "\"" { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock
}

CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$CARGO_BIN:$PATH"

# 1. The wasm32 target.
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  say "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

# 2. worker-build at the same version as the worker crate.
worker_version="$(locked worker)"
if [ "$("$CARGO_BIN/worker-build" --version 2>/dev/null | awk '{print $NF}')" != "$worker_version" ]; then
  say "installing worker-build $worker_version (a few minutes, once)"
  cargo install worker-build --version "=$worker_version"
fi

# 3. The wasm-bindgen CLI at exactly the library's version (no --locked: the registry here
#    lacks some locked transitive versions).
bindgen_version="$(locked wasm-bindgen)"
if [ "$("$CARGO_BIN/wasm-bindgen" --version 2>/dev/null | awk '{print $NF}')" != "$bindgen_version" ]; then
  say "installing wasm-bindgen-cli $bindgen_version (a few minutes, once)"
  cargo install wasm-bindgen-cli --version "=$bindgen_version"
fi

# 4. wrangler, workerd and the Node Pusher clients (pusher-js, laravel-echo, pusher), pinned by
#    package-lock.json. Re-run npm ci only when the lockfile
#    changed since the last install.
lock_sum="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ ! -x node_modules/.bin/wrangler ] || [ "$(cat node_modules/.roomkeeper-lock 2>/dev/null)" != "$lock_sum" ]; then
  say "installing wrangler (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_sum" > node_modules/.roomkeeper-lock
fi

# 5. Debian packages the tests use (listed in scripts/apt-packages.txt; none may be empty).
if [ -s scripts/apt-packages.txt ]; then
  missing=()
  while read -r pkg; do
    case "$pkg" in ''|\#*) continue ;; esac
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done < scripts/apt-packages.txt
  if [ "${#missing[@]}" -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
  fi
fi

# 6. The Python Pusher SDK for the Pusher-compatibility tests, in .venv/, pinned (with its
#    dependencies) by tests/pusher/requirements.txt. Rebuild the venv from scratch only when
#    that file changed since the last install, so removed pins do not linger.
req=tests/pusher/requirements.txt
req_sum="$(sha256sum "$req" | cut -d' ' -f1)"
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.roomkeeper-requirements 2>/dev/null)" != "$req_sum" ]; then
  say "creating .venv and installing $req (pip)"
  rm -rf .venv
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-input -r "$req"
  .venv/bin/python -m pip check
  echo "$req_sum" > .venv/.roomkeeper-requirements
fi
py_pusher="$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("pusher"))' 2>/dev/null || echo '?')"

say "ready (worker-build $worker_version, wasm-bindgen $bindgen_version, wrangler $(node_modules/.bin/wrangler --version 2>/dev/null | tail -n 1), python pusher $py_pusher)"
