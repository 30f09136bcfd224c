#!/usr/bin/env bash
# Benchmarks of the foundation issue. Prints wall time and peak RSS of:
#  1. backup of a ~768 MiB tree (2/3 JSON-like text, 1/3 random, ~500 files)
#     to a local sink, alternating with `tar | zstd -3 -T0 | age -r KEY`;
#  2. backup of a single 2 GiB file (peak RSS);
#  3. restore of the tree vs `age -d | zstd -d | tar x && sync` (the same
#     durability as coffer's restore);
#  4. restore of 5,000 empty files vs `tar x && sync`.
# Targets (issue 11): backup <= 1.0x the pipeline; restore <= 1.0x; 5,000
# small files <= 3x; peak RSS <= 64 MiB.
# usage: bench/run.sh [ROUNDS]   (needs age, zstd, GNU tar, /usr/bin/time)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
. bench/tree.sh   # BIN, WORK, MIB, KEY
echo "tree: $(du -sm "$WORK/tree" | cut -f1) MiB in $(find "$WORK/tree" -type f | wc -l) files; $(nproc) cores"

# measure NAME CMD… : runs CMD under /usr/bin/time, prints "NAME wall_s rss_mib"
measure() {
  local name=$1; shift
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  cat "$WORK"/tree/*/*/* "$WORK"/tree/blobs/* > /dev/null 2>&1 || true  # warm: both sides read from page cache
  /usr/bin/time -f "%e %M %U %S" -o "$WORK/time.out" "$@" > /dev/null
  read -r wall rss user sys < "$WORK/time.out"
  printf '%-28s %7.2f s  %7.1f MiB peak RSS  %6.2f s CPU\n' "$name" "$wall" "$(echo "$rss/1024" | bc -l)" \
    "$(echo "$user+$sys" | bc -l)"
  echo "$name $wall $rss" >> "$WORK/results.txt"
}
: > "$WORK/results.txt"
for i in $(seq "$ROUNDS"); do
  rm -rf "$WORK/sink" "$WORK/base.age"
  measure "baseline tar|zstd|age" bash -c "tar -cf - -C '$WORK' tree | zstd -3 -T0 -q | age -r $KEY > '$WORK/base.age'"
  measure "coffer backup" "$BIN" -q --create-sink backup --source "file:$WORK/tree" --sink "$WORK/sink" --recipient "$KEY"
  # The same pipeline doing the integrity work coffer must do (DESIGN.md:
  # SHA-256 of the plaintext for SHA256SUMS and of the ciphertext for the
  # index), with OpenSSL's SHA-256 (SHA-NI, as fast as coffer's) and fsync.
  rm -f "$WORK/p1" "$WORK/p2"; mkfifo "$WORK/p1" "$WORK/p2"
  measure "baseline + sha256 + fsync" bash -c "
    openssl dgst -sha256 < '$WORK/p1' > /dev/null & a=\$!
    openssl dgst -sha256 < '$WORK/p2' > /dev/null & b=\$!
    tar -cf - -C '$WORK' tree | tee '$WORK/p1' | zstd -3 -T0 -q | age -r $KEY | tee '$WORK/p2' > '$WORK/base.age'
    wait \$a \$b; sync -d '$WORK/base.age'"
done
python3 bench/ratio.py "$WORK/results.txt" backup "coffer backup" "baseline tar|zstd|age" 1.0
# The same pipeline doing coffer's integrity work (two SHA-256 and fsync).
python3 bench/ratio.py "$WORK/results.txt" "backup vs baseline + sha256 + fsync" "coffer backup" "baseline + sha256 + fsync" 1.0

# Restore of the same tree.
OBJ=$(ls "$WORK"/sink/*.coffer | head -1)
for i in $(seq "$ROUNDS"); do
  rm -rf "$WORK/out-base" "$WORK/out-coffer"; mkdir -p "$WORK/out-base"
  measure "baseline age|zstd|tar x" bash -c "age -d -i '$WORK/key.txt' '$WORK/base.age' | zstd -d -q | tar -xf - -C '$WORK/out-base' && sync"
  measure "coffer restore" "$BIN" -q restore latest --sink "$WORK/sink" --identity "$WORK/key.txt" --target "$WORK/out-coffer"
done
python3 bench/ratio.py "$WORK/results.txt" restore "coffer restore" "baseline age|zstd|tar x" 1.0
rm -rf "$WORK/out-base" "$WORK/out-coffer" "$WORK/base.age"

# 5,000 empty files: per-file costs (fsync above all) dominate.
rm -rf "$WORK/small" "$WORK/sink-small" "$WORK/small.tar"; mkdir -p "$WORK/small"
(cd "$WORK/small" && for d in $(seq 0 49); do mkdir "d$d"; (cd "d$d" && touch $(seq -f "f%g" 0 99)); done)
tar -cf "$WORK/small.tar" -C "$WORK" small
"$BIN" -q --create-sink backup --source "file:$WORK/small" --sink "$WORK/sink-small" --recipient "$KEY"
for i in $(seq "$ROUNDS"); do
  rm -rf "$WORK/out-base" "$WORK/out-coffer"; mkdir -p "$WORK/out-base"
  measure "baseline tar x 5000 files" bash -c "tar -xf '$WORK/small.tar' -C '$WORK/out-base' && sync"
  measure "coffer restore 5000 files" "$BIN" -q restore latest --sink "$WORK/sink-small" --identity "$WORK/key.txt" --target "$WORK/out-coffer"
done
python3 bench/ratio.py "$WORK/results.txt" "5000 small files restore" "coffer restore 5000 files" "baseline tar x 5000 files" 3
rm -rf "$WORK/out-base" "$WORK/out-coffer" "$WORK/small" "$WORK/small.tar" "$WORK/sink-small"

# A single 2 GiB file: peak RSS.
if [ ! -f "$WORK/big.bin" ]; then head -c 2G /dev/urandom > "$WORK/big.bin"; fi
rm -rf "$WORK/sink-big"
measure "coffer backup 2 GiB file" "$BIN" -q --create-sink backup --source "file:$WORK/big.bin" --sink "$WORK/sink-big" --recipient "$KEY"
rm -rf "$WORK/sink-big" "$WORK/sink"
