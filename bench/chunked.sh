#!/usr/bin/env bash
# Chunked snapshots (issue 21) on the 768 MiB tree of bench/run.sh, side by
# side in one run, release build. Prints wall time, CPU seconds and peak RSS
# of each command, then the ratios against their targets:
#  1. first chunked backup vs a bundle backup of the same tree (<= 1.15x);
#  2. unchanged re-run vs `restic backup` of the unchanged tree (<= 1.0x),
#     and what it adds to the sink (<= 1 MiB);
#  3. re-run with 1% of the files appended to (64 KiB each) vs restic
#     (<= 1.0x), and what it adds against what restic adds (<= 1.2x);
#  4. restore of the latest chunked snapshot vs `age -d | zstd -d | tar x
#     && sync` of the same tree's bundle (<= 1.0x);
#  5. peak RSS (<= 96 MiB), the sink's object count and mean object size.
# usage: bench/chunked.sh [ROUNDS]   (needs restic, age, zstd, GNU tar, /usr/bin/time)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
. bench/tree.sh   # BIN, WORK, MIB, KEY
export RESTIC_PASSWORD=bench-only XDG_CONFIG_HOME="$WORK/config" XDG_CACHE_HOME="$WORK/cache"
echo "tree: $(du -sm "$WORK/tree" | cut -f1) MiB in $(find "$WORK/tree" -type f | wc -l) files; $(nproc) cores; $(restic version | cut -d' ' -f1-2)"

# measure NAME CMD… : runs CMD under /usr/bin/time, prints "NAME wall rss cpu"
measure() {
  local name=$1; shift
  sync
  /usr/bin/time -f "%e %M %U %S" -o "$WORK/time.out" "$@" > /dev/null
  read -r wall rss user sys < "$WORK/time.out"
  printf '%-34s %7.2f s  %7.1f MiB peak RSS  %6.2f s CPU\n' "$name" "$wall" "$(echo "$rss/1024" | bc -l)" \
    "$(echo "$user+$sys" | bc -l)"
  echo "$name $wall $rss" >> "$WORK/results.txt"
}
bytes() { du -sb "$1" | cut -f1; }
: > "$WORK/results.txt"
: > "$WORK/added.txt"
cp -a "$WORK/tree" "$WORK/ctree"   # the copy that changes in step 3
cat "$WORK"/ctree/*/*/* "$WORK"/ctree/blobs/* > /dev/null 2>&1 || true
# coffer_backup SINK FORMAT: the argv of a backup of the tree
coffer_backup() { echo "$BIN" -q --create-sink backup --source "file:$WORK/ctree" --sink "$1" --recipient "$KEY" --format "$2"; }

for i in $(seq "$ROUNDS"); do
  rm -rf "$WORK/sink-b" "$WORK/sink-c" "$WORK/restic" "$WORK/config" "$WORK/cache"
  measure "bundle backup" $(coffer_backup "$WORK/sink-b" bundle)
  measure "chunked backup (first)" $(coffer_backup "$WORK/sink-c" chunked)
  restic init -q -r "$WORK/restic"
  measure "restic backup (first)" restic -q -r "$WORK/restic" backup "$WORK/ctree"
  # 2. unchanged re-run
  c0=$(bytes "$WORK/sink-c"); r0=$(bytes "$WORK/restic")
  measure "chunked backup (unchanged)" $(coffer_backup "$WORK/sink-c" chunked)
  measure "restic backup (unchanged)" restic -q -r "$WORK/restic" backup "$WORK/ctree"
  c1=$(bytes "$WORK/sink-c"); r1=$(bytes "$WORK/restic")
  echo "unchanged $((c1 - c0)) $((r1 - r0))" >> "$WORK/added.txt"
  # 3. 1% of the files appended to with 64 KiB
  find "$WORK/ctree" -type f | sort | awk -v r="$i" 'NR % 100 == r' | while read -r f; do
    head -c 65536 /dev/urandom >> "$f"
  done
  measure "chunked backup (1% changed)" $(coffer_backup "$WORK/sink-c" chunked)
  measure "restic backup (1% changed)" restic -q -r "$WORK/restic" backup "$WORK/ctree"
  c2=$(bytes "$WORK/sink-c"); r2=$(bytes "$WORK/restic")
  echo "changed $((c2 - c1)) $((r2 - r1))" >> "$WORK/added.txt"
done
python3 bench/ratio.py "$WORK/results.txt" "first chunked backup vs bundle" "chunked backup (first)" "bundle backup" 1.15
python3 bench/ratio.py "$WORK/results.txt" "unchanged re-run vs restic" "chunked backup (unchanged)" "restic backup (unchanged)" 1.0
python3 bench/ratio.py "$WORK/results.txt" "1% changed re-run vs restic" "chunked backup (1% changed)" "restic backup (1% changed)" 1.0
awk '$1 == "unchanged" { printf "unchanged re-run adds %.2f MiB to the sink (restic: %.2f MiB; target <= 1 MiB)\n", $2/1048576, $3/1048576 }
     $1 == "changed" { printf "1%% changed re-run adds %.2f MiB (restic: %.2f MiB): %.2fx (target <= 1.2x)\n", $2/1048576, $3/1048576, $2/$3 }' "$WORK/added.txt"

# 4. restore of the latest chunked snapshot vs the bundle pipeline
tar -cf - -C "$WORK" ctree | zstd -3 -T0 -q | age -r "$KEY" > "$WORK/base.age"
for i in $(seq "$ROUNDS"); do
  rm -rf "$WORK/out-base" "$WORK/out-coffer"; mkdir -p "$WORK/out-base"
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  cat "$WORK/base.age" "$WORK"/sink-c/data/*/* > /dev/null
  measure "baseline age|zstd|tar x" bash -c "age -d -i '$WORK/key.txt' '$WORK/base.age' | zstd -d -q | tar -xf - -C '$WORK/out-base' && sync"
  measure "chunked restore" "$BIN" -q restore latest --sink "$WORK/sink-c" --identity "$WORK/key.txt" --target "$WORK/out-coffer"
done
python3 bench/ratio.py "$WORK/results.txt" "chunked restore vs age|zstd|tar x" "chunked restore" "baseline age|zstd|tar x" 1.0

# 5. the sink's objects
objs=$(find "$WORK/sink-c" -type f | wc -l)
packs=$(find "$WORK/sink-c/data" -type f | wc -l)
echo "chunked sink: $objs objects ($packs packs, mean pack $(( $(bytes "$WORK/sink-c/data") / packs / 1024 )) KiB), $(( $(bytes "$WORK/sink-c") / 1048576 )) MiB; restic repo $(( $(bytes "$WORK/restic") / 1048576 )) MiB"
rm -rf "$WORK/out-base" "$WORK/out-coffer" "$WORK/base.age" "$WORK/ctree" "$WORK/sink-b" "$WORK/sink-c" "$WORK/restic" "$WORK/cache" "$WORK/config"
