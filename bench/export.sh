#!/usr/bin/env bash
# Export benchmark of the removable-media issue: wall time of
#   coffer export --from SINK --to media:TMPFS     (copy, SHA-256 on the way,
#                                                   fsync, read-back, kit)
# against the same object done by hand:
#   cp OBJECT TMPFS/ && sync && sha256sum TMPFS/OBJECT
# for a 1 GiB snapshot (random data, --compression none), on a tmpfs
# medium, alternating runs. Target: coffer ≤ 1.2 × cp + sha256sum.
# usage: bench/export.sh [ROUNDS]   (as root: mounts a tmpfs; /usr/bin/time)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
WORK=${BENCH_DIR:-/tmp/coffer-bench-export}
MIB=${BENCH_MIB:-1024}
cargo build --release -p coffer -q
BIN=$PWD/target/release/coffer
mkdir -p "$WORK/src" "$WORK/medium"
MNT="$WORK/medium"
cleanup() { umount "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true; }
trap cleanup EXIT
cleanup
mount -t tmpfs -o "size=$((MIB * 2 + 256))m" tmpfs "$MNT"

if [ ! -f "$WORK/snap.done" ] || [ "$(cat "$WORK/snap.done")" != "$MIB" ]; then
  rm -rf "$WORK/src" "$WORK/sink" && mkdir -p "$WORK/src"
  head -c "$((MIB << 20))" /dev/urandom > "$WORK/src/blob.bin"
  [ -f "$WORK/key.txt" ] || "$BIN" keygen -o "$WORK/key.txt" >/dev/null 2>&1
  KEY=$(grep -o 'age1[a-z0-9]*' "$WORK/key.txt")
  "$BIN" -q --create-sink backup --source "file:$WORK/src" --sink "$WORK/sink" --recipient "$KEY" --compression none >/dev/null
  echo "$MIB" > "$WORK/snap.done"
fi
OBJ=$(ls "$WORK"/sink/*.coffer)
echo "object: $(du -m "$OBJ" | cut -f1) MiB; $(nproc) cores; medium: tmpfs"

measure() {
  local name=$1; shift
  cat "$OBJ" > /dev/null  # both sides read the source from page cache
  /usr/bin/time -f "%e %M" -o "$WORK/time.out" "$@" > /dev/null
  read -r wall rss < "$WORK/time.out"
  printf '%-26s %7.2f s  %7.1f MiB peak RSS\n' "$name" "$wall" "$(echo "$rss/1024" | bc -l)"
  echo "$name $wall" >> "$WORK/results.txt"
}
: > "$WORK/results.txt"
for i in $(seq "$ROUNDS"); do
  find "$MNT" -mindepth 1 -delete
  measure "cp + sync + sha256sum" bash -c "cp '$OBJ' '$MNT/' && sync '$MNT/$(basename "$OBJ")' && sha256sum '$MNT/$(basename "$OBJ")'"
  find "$MNT" -mindepth 1 -delete
  "$BIN" -q media init "$MNT" --label BENCH >/dev/null
  measure "coffer export" "$BIN" -q export --from "$WORK/sink" --to "media:$MNT?labels=BENCH"
done
awk '
  /^cp/ {b += $NF; nb++}
  /^coffer/ {c += $NF; nc++}
  END { printf "mean: cp+sha256sum %.2f s, coffer export %.2f s, ratio %.2f (target <= 1.2)\n", b/nb, c/nc, (c/nc)/(b/nb) }
' "$WORK/results.txt"
