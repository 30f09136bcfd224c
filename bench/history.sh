#!/usr/bin/env bash
# A simulated 40-day history of the 768 MiB bench tree (issue 21): each day
# 1% of the files get 64 KiB appended, 0.5% new text files of ~1.4 MB
# appear and 0.2% of the files are removed; it is backed up daily (snapshot
# times one day apart, the last one today) by a chunked coffer sink and by
# restic, then both are pruned with 30 daily + 12 monthly. Prints the sink
# and repository sizes (target: coffer <= 1.2x restic), the snapshots
# kept, the objects and the time spent.
# usage: bench/history.sh [DAYS]   (needs restic; release build)
set -euo pipefail
cd "$(dirname "$0")/.."
DAYS=${1:-40}
. bench/tree.sh   # BIN, WORK, MIB, KEY
export RESTIC_PASSWORD=bench-only XDG_CONFIG_HOME="$WORK/hconfig" XDG_CACHE_HOME="$WORK/hcache"
H=$WORK/history
rm -rf "$H" "$XDG_CONFIG_HOME" "$XDG_CACHE_HOME"; mkdir -p "$H"
cp -a "$WORK/tree" "$H/tree"
restic init -q -r "$H/restic"
coffer_s=0; restic_s=0
for day in $(seq 1 "$DAYS"); do
  when=$(date -u -d "-$((DAYS - day)) days" +%Y-%m-%dT12:00:00Z)
  if [ "$day" -gt 1 ]; then
    python3 - "$H/tree" "$day" <<'EOF'
import os, random, sys
root, day = sys.argv[1], int(sys.argv[2])
rng = random.Random(day)
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
n = len(files)
for f in rng.sample(files, max(1, n // 100)):            # 1% appended with 64 KiB
    with open(f, "ab") as out:
        out.write(os.urandom(65536))
for i in range(max(1, n // 200)):                        # 0.5% new ~1.4 MB text files
    d = os.path.join(root, "docs", f"new{day:02d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"n{i}.json"), "w") as out:
        words = ["issuer", "tenant", "trust", "csaf", "vendor", "product", "fixed", "score"]
        size = 0
        while size < 1_400_000:
            line = '{"id": "%024x", "w": "%s", "n": %d}\n' % (rng.getrandbits(96), " ".join(rng.choice(words) for _ in range(4)), rng.randint(0, 10**9))
            out.write(line)
            size += len(line)
for f in rng.sample(files, max(1, n // 500)):            # 0.2% removed
    os.remove(f)
EOF
  fi
  s=$(date +%s.%N)
  "$BIN" -q --create-sink backup --source "file:$H/tree" --sink "$H/coffer" --recipient "$KEY" --format chunked --time "$when" > /dev/null
  m=$(date +%s.%N); coffer_s=$(echo "$coffer_s + $m - $s" | bc)
  restic -q -r "$H/restic" backup --time "$(date -u -d "$when" '+%Y-%m-%d %H:%M:%S')" "$H/tree" > /dev/null
  e=$(date +%s.%N); restic_s=$(echo "$restic_s + $e - $m" | bc)
done
echo "tree after $DAYS days: $(du -sm "$H/tree" | cut -f1) MiB in $(find "$H/tree" -type f | wc -l) files"
echo "before prune: coffer sink $(du -sm "$H/coffer" | cut -f1) MiB, restic repository $(du -sm "$H/restic" | cut -f1) MiB"
printf 'backups: coffer %.1f s in total, restic %.1f s\n' "$coffer_s" "$restic_s"
s=$(date +%s.%N)
"$BIN" -q prune --sink "$H/coffer" --keep-daily 30 --keep-monthly 12 > /dev/null
m=$(date +%s.%N)
restic -q -r "$H/restic" forget --keep-daily 30 --keep-monthly 12 --prune > /dev/null
e=$(date +%s.%N)
c=$(du -sb "$H/coffer" | cut -f1); r=$(du -sb "$H/restic" | cut -f1)
printf 'prune: coffer %.1f s, restic forget --prune %.1f s\n' "$(echo "$m - $s" | bc)" "$(echo "$e - $m" | bc)"
echo "after prune: coffer $((c / 1048576)) MiB with $(ls "$H/coffer"/*.json | grep -vc coffer-sink) snapshots, $(find "$H/coffer" -type f | wc -l) objects; restic $((r / 1048576)) MiB with $(restic -q -r "$H/restic" snapshots --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))') snapshots"
echo "ratio: $(echo "scale=2; $c / $r" | bc)x restic (target <= 1.2x)"
"$BIN" -q --json prune --sink "$H/coffer" --keep-daily 30 --keep-monthly 12 --dry-run \
  | python3 -c 'import json,sys; c=json.load(sys.stdin)[0]["chunks"]; print("coffer: %d packs, %.1f MiB of them no snapshot uses (kept: packs are removed whole)" % (c["kept_packs"], c["unused_bytes"]/1048576))'
rm -rf "$H" "$XDG_CONFIG_HOME" "$XDG_CACHE_HOME"
