#!/usr/bin/env bash
# Builds the Worker into build/ with worker-build, using the locally installed wasm-bindgen
# and esbuild so nothing is downloaded, and skipping wasm-opt (--no-opt), which would be.
# The wasm build has its own target directory so it never waits on a concurrent native
# `cargo test` holding target/.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$CARGO_BIN:$PATH"
export WASM_BINDGEN_BIN="$CARGO_BIN/wasm-bindgen"
export ESBUILD_BIN="$PWD/node_modules/.bin/esbuild"
export CARGO_TARGET_DIR="${ROOMKEEPER_WASM_TARGET_DIR:-$PWD/target/worker}"
exec worker-build --release --no-opt
