#!/usr/bin/env bash
# Restore of 5,000 empty files (50 directories) into a new --target, the
# per-file costs alone: `coffer restore` against `tar x` and `tar x && sync`
# of the same tree, alternating, 5 rounds; wall time and CPU seconds.
# (bench/run.sh measures the same against `tar x && sync` inside its run.)
# usage: bench/small.sh   (needs a release build: cargo build --release -p coffer)
set -euo pipefail
cd "$(dirname "$0")/.."
B=$PWD/target/release/coffer
[ -x "$B" ] || { echo "build first: cargo build --release -p coffer" >&2; exit 2; }
W=${BENCH_DIR:-/tmp/coffer-bench-small}
rm -rf "$W"; mkdir -p "$W/small"
trap 'rm -rf "$W"' EXIT
(cd "$W/small" && for d in $(seq 0 49); do mkdir "d$d"; (cd "d$d" && touch $(seq -f "f%g" 0 99)); done)
tar -cf "$W/small.tar" -C "$W" small
"$B" keygen -o "$W/key.txt" >/dev/null 2>&1
R=$(grep -o 'age1[a-z0-9]*' "$W/key.txt")
"$B" -q --create-sink backup --source "file:$W/small" --sink "$W/sink" --recipient "$R" >/dev/null
for i in 1 2 3 4 5; do
  mkdir -p "$W/t$i"; sync
  /usr/bin/time -f "tar x           %e s  %U+%S s CPU" tar -xf "$W/small.tar" -C "$W/t$i"
  mkdir -p "$W/s$i"; sync
  /usr/bin/time -f "tar x && sync   %e s" sh -c "tar -xf '$W/small.tar' -C '$W/s$i' && sync"
  sync
  /usr/bin/time -f "coffer restore  %e s  %U+%S s CPU" "$B" -q restore latest --sink "$W/sink" \
    --identity "$W/key.txt" --target "$W/c$i" >/dev/null
done 2>&1
