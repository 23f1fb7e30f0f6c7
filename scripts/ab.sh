#!/usr/bin/env bash
# A/B experiment: builds a copy of the Worker with one patch applied and runs bench scenarios
# against it (the bench alternates the Room with the raw baseline on that server, so the ratio
# to raw compares across builds even when the machine's load drifts).
# Usage: scripts/ab.sh PATCH|base [bench options]
#   e.g. scripts/ab.sh examples/bench/ab/no-ack.patch --only single --sizes 10 --pairs 3
# The copy is a committed tree (git archive of AB_REF, default HEAD) in target/ab/<name>; the patches in
# examples/bench/ab/ remove or repeat one step of the Room's per-message path (BENCHMARKS.md,
# "Where the time goes"). Builds share target/worker-ab, so only the first one compiles the
# dependencies. Load goes to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
which=${1:?usage: scripts/ab.sh PATCH|base [bench options]}
shift
name=$(basename "$which" .patch)
tree=$root/target/ab/$name
rm -rf "$tree"
mkdir -p "$tree"
git archive "${AB_REF:-HEAD}" | tar -x -C "$tree"
if [ "$which" != base ]; then
  patch -s -p1 -d "$tree" < "$which"
fi
ln -s "$root/node_modules" "$tree/node_modules"
(cd "$tree" && ROOMKEEPER_WASM_TARGET_DIR="$root/target/worker-ab" bash scripts/build.sh) > "$tree.build.log" 2>&1 ||
  { tail -30 "$tree.build.log"; exit 1; }
echo "ab: built $name"
ROOMKEEPER_BENCH_TREE=$tree ROOMKEEPER_SKIP_BUILD=1 bash scripts/bench.sh "$@"
