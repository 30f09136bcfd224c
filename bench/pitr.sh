#!/usr/bin/env bash
# Benchmark of point-in-time recovery (issue 22), against secantusd-py (the
# repo's .venv-secantus, created by scripts/test.sh). Prints:
#  (a) the follower under a steady write load of RATE writes/s (default
#      500, ~200-byte documents; with BENCH_MIX=mixed 70% inserts, 20% $set
#      updates, 10% deletes) for SECS seconds (default 120), slice-interval 10 s:
#      its lag (newest oplog write minus newest archived entry), sampled
#      every second, max and median; its CPU seconds and share of one core
#      (target: lag <= slice-interval + 5 s, CPU < 10%);
#  (b) `restore --to-time` of a small base plus the slices of the whole
#      load into a fresh server: archived entries replayed per second,
#      beside coffer's own bulk-insert rate for the same final documents
#      (a `restore --drop` of a snapshot holding them, into a fresh server),
#      with wall and CPU seconds (target: replay >= 0.8x the insert rate).
# The load (BENCH_MIX): `insert` (default: new documents only, what the
# bulk-insert rate compares with) or `mixed`.
# usage: bench/pitr.sh   env: BENCH_RATE, BENCH_SECS, BENCH_MIX, BENCH_DIR, BENCH_INTERVAL
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${BENCH_RATE:-500}
SECS=${BENCH_SECS:-120}
INTERVAL=${BENCH_INTERVAL:-10}
MIX=${BENCH_MIX:-insert}
case "$MIX" in insert|mixed) ;; *) echo "BENCH_MIX is insert or mixed" >&2; exit 2;; esac
WORK=${BENCH_DIR:-/tmp/coffer-bench-pitr}
VENV=${BENCH_VENV:-$PWD/.venv-secantus}
[ -x "$VENV/bin/secantusd-py" ] || { echo "no $VENV/bin/secantusd-py: run scripts/test.sh first" >&2; exit 1; }
"$VENV/bin/python" -c 'import pymongo' 2>/dev/null || "$VENV/bin/pip" install -q pymongo
cargo build --release -q -p coffer
BIN=$PWD/target/release/coffer
rm -rf "$WORK"; mkdir -p "$WORK"
cleanup() {
  [ -f "$WORK/pids" ] || return 0
  while read -r p; do kill "$p" 2>/dev/null || true; done < "$WORK/pids"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_server() {
  local port; port=$(free_port)
  "$VENV/bin/secantusd-py" --host 127.0.0.1 --port "$port" --storage-path :memory: \
    --oplog-max-entries 5000000 --noop-heartbeat-seconds 10 > "$WORK/server-$port.log" 2>&1 &
  echo "$!" >> "$WORK/pids"
  for _ in $(seq 300); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null && break
    sleep 0.1
  done
  echo "$port"
}
cpu_of() { awk '{ print ($14 + $15) / 100 }' "/proc/$1/stat"; }

SRC=$(start_server)
cd "$WORK"
"$BIN" keygen -o key.txt > recipient.txt 2>/dev/null
cat > coffer.toml <<EOF
recipients = ["$(cat recipient.txt)"]
metrics-file = "metrics.prom"

[source.db]
kind = "mongo"
uri = "mongodb://127.0.0.1:$SRC/app?directConnection=true"

[sink.bk]
kind = "local"
path = "bk"
create = true

[job.app]
sources = ["db"]
sinks = ["bk"]

[job.app.oplog]
slice-interval = $INTERVAL
on-gap = "stop"
EOF
cat > load.py <<'EOF'
import random, sys, time, pymongo
port, rate, secs, mix = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
inserts = 1.0 if mix == "insert" else 0.7
c = pymongo.MongoClient(f"mongodb://127.0.0.1:{port}/?directConnection=true")
coll = c.app.events
random.seed(7)
ids, next_id, done = [], 0, 0
start = time.time()
# Ten ordered bulk writes a second: each operation is one oplog entry.
while time.time() - start < secs:
    tick = time.time()
    ops = []
    # Catch up when the server was slow: the rate holds on average.
    due = int((tick - start) * rate) + rate // 10 - done
    for _ in range(max(0, min(due, 5 * rate))):
        r = random.random()
        if r < inserts or len(ids) < 10:
            ops.append(pymongo.InsertOne({"_id": next_id, "kind": "event", "payload": "x" * 160, "n": 0}))
            ids.append(next_id); next_id += 1
        elif r < 0.9:
            ops.append(pymongo.UpdateOne({"_id": random.choice(ids)}, {"$set": {"n": random.randint(0, 1 << 30)}}))
        else:
            ops.append(pymongo.DeleteOne({"_id": ids.pop(random.randrange(len(ids)))}))
    coll.bulk_write(ops, ordered=True)
    done += len(ops)
    left = 0.1 - (time.time() - tick)
    if left > 0:
        time.sleep(left)
print(done, f"{done / (time.time() - start):.0f}")
EOF
"$VENV/bin/python" - "$SRC" <<'EOF'
import sys, pymongo
c = pymongo.MongoClient(f"mongodb://127.0.0.1:{sys.argv[1]}/?directConnection=true")
c.app.events.insert_many([{"_id": -i - 1, "kind": "seed"} for i in range(100)])
EOF
"$BIN" --config coffer.toml oplog follow > follow.log 2>&1 &
FOLLOWER=$!
echo "$FOLLOWER" >> pids
sleep 2
"$BIN" -q --config coffer.toml backup app > /dev/null
CPU0=$(cpu_of "$FOLLOWER")
T0=$(date +%s.%N)
"$VENV/bin/python" load.py "$SRC" "$RATE" "$SECS" "$MIX" > load.out &
LOAD=$!
# Lag sampled each second: the server's newest oplog entry (`hello`'s
# lastWrite, which costs the server nothing; a query of the oplog sorted
# by $natural scans all of it on secantusd, and once it held ~600k
# entries such samples took the server's whole core) minus the newest
# archived one (the follower's metrics file, rewritten each slice).
cat > lag.py <<'EOF'
import sys, time, re, pymongo
port, pid = int(sys.argv[1]), int(sys.argv[2])
c = pymongo.MongoClient(f"mongodb://127.0.0.1:{port}/?directConnection=true")
out = open("lag.txt", "w")
def alive():
    try:
        return open(f"/proc/{pid}/stat").read().split(")")[1].split()[0] != "Z"
    except OSError:
        return False
while alive():
    time.sleep(1)
    newest = c.admin.command("hello")["lastWrite"]["opTime"]["ts"].time
    m = re.search(r"^coffer_oplog_last_archived_timestamp_seconds\S* (\S+)$", open("metrics.prom").read(), re.M)
    if m:
        out.write(f"{newest - float(m.group(1))}\n"); out.flush()
EOF
"$VENV/bin/python" lag.py "$SRC" "$LOAD" &
SAMPLER=$!
wait "$LOAD"
wait "$SAMPLER" || true
T1=$(date +%s.%N)
CPU1=$(cpu_of "$FOLLOWER")
read -r WRITES ACHIEVED < load.out
sleep $((INTERVAL + 3))
kill -TERM "$FOLLOWER"; wait "$FOLLOWER" || true
LAST=$("$BIN" --json --config coffer.toml oplog status | python3 -c 'import json,sys; v=json.load(sys.stdin)[0]; print(v["newest"]["t"], v["slices"], v["bytes"])')
read -r NEWEST SLICES BYTES <<< "$LAST"
python3 - "$CPU0" "$CPU1" "$T0" "$T1" "$WRITES" "$ACHIEVED" "$SLICES" "$BYTES" "$INTERVAL" "$MIX" <<'EOF'
import sys, statistics
cpu0, cpu1, t0, t1 = map(float, sys.argv[1:5])
writes, achieved, slices, nbytes, interval = sys.argv[5], sys.argv[6], sys.argv[7], int(sys.argv[8]), int(sys.argv[9])
lags = [float(l) for l in open("lag.txt").read().split() if l]
cpu, wall = cpu1 - cpu0, t1 - t0
print(f"load: {sys.argv[10]}")
print(f"(a) follower: {writes} writes in {wall:.0f} s ({achieved}/s achieved), {slices} slices, {nbytes / 2**20:.1f} MiB stored")
if lags:
    print(f"    lag: max {max(lags):.0f} s, median {statistics.median(lags):.0f} s (target <= {interval + 5} s = slice-interval + 5)")
print(f"    CPU {cpu:.2f} s over {wall:.0f} s wall = {100 * cpu / wall:.1f}% of one core (target < 10%)")
EOF

# (b) replay against coffer's own bulk insert of the same final documents.
"$BIN" -q --config coffer.toml backup app > /dev/null
DST=$(start_server)
/usr/bin/time -f "%e %U %S %M" -o restore.time "$BIN" --config coffer.toml restore latest --identity key.txt \
  --mongo-uri "mongodb://127.0.0.1:$DST/?directConnection=true" --drop --no-checks > restore.out
DOCS=$("$VENV/bin/python" -c "import pymongo; print(pymongo.MongoClient('mongodb://127.0.0.1:$DST/?directConnection=true').app.events.count_documents({}))")
DST2=$(start_server)
/usr/bin/time -f "%e %U %S %M" -o pitr.time "$BIN" --config coffer.toml restore --to-ts "$NEWEST:0" --identity key.txt \
  --mongo-uri "mongodb://127.0.0.1:$DST2/?directConnection=true" --drop --no-checks > pitr.out
REPLAYED=$(grep -o '[0-9]* archived entries' pitr.out | awk '{print $1}')
DOCS2=$("$VENV/bin/python" -c "import pymongo; print(pymongo.MongoClient('mongodb://127.0.0.1:$DST2/?directConnection=true').app.events.count_documents({}))")
python3 - "$DOCS" "$REPLAYED" "$DOCS2" <<'EOF'
import sys
docs, replayed, docs2 = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
e, u, s, m = open("restore.time").read().split()
pe, pu, ps, pm = open("pitr.time").read().split()
ins = docs / float(e)
rep = replayed / float(pe)
print(f"(b) bulk insert (restore --drop of {docs} documents): {float(e):.1f} s wall, {float(u) + float(s):.1f} s CPU, {ins:.0f} docs/s")
print(f"    restore --to-time: {replayed} archived entries replayed on a base of 100 documents: {float(pe):.1f} s wall, "
      f"{float(pu) + float(ps):.1f} s CPU, {rep:.0f} entries/s = {rep / ins:.2f}x the insert rate (target >= 0.8x); "
      f"{docs2} documents after (the live database had {docs})")
EOF
