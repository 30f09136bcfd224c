#!/usr/bin/env bash
# How much of a MongoDB collection a chunked re-run stores again (issue
# 21): DOCS documents of ~1 KiB in one collection, a chunked backup, then
# (a) 1% of the documents inserted (new _ids at the end), backed up again;
# (b) 1% of the documents updated at random places, backed up again.
# Prints what each re-run added against the collection's BSON size, and
# the first backup's and a restore's wall and CPU time.
# usage: bench/mongo-dedup.sh   env: BENCH_DOCS (default 100000), BENCH_VENV
set -euo pipefail
cd "$(dirname "$0")/.."
DOCS=${BENCH_DOCS:-100000}
WORK=${BENCH_DIR:-/tmp/coffer-bench-mdedup}
VENV=${BENCH_VENV:-$PWD/.venv-secantus}
[ -x "$VENV/bin/secantusd-py" ] || { echo "no $VENV/bin/secantusd-py: run scripts/test.sh first" >&2; exit 1; }
cargo build --release -q -p coffer
BIN=$PWD/target/release/coffer
rm -rf "$WORK"; mkdir -p "$WORK"
export XDG_CONFIG_HOME="$WORK/config" XDG_CACHE_HOME="$WORK/cache"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$VENV/bin/secantusd-py" --host 127.0.0.1 --port "$PORT" --storage-path :memory: > "$WORK/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 300); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1',$PORT),0.2)" 2>/dev/null && break
  sleep 0.1
done
URI="mongodb://127.0.0.1:$PORT/bench?directConnection=true"
"$BIN" keygen -o "$WORK/key.txt" > "$WORK/recipient.txt" 2>/dev/null
KEY=$(cat "$WORK/recipient.txt")
py() { "$VENV/bin/python" - "$URI" "$DOCS" "$1" <<'PY'
import random, sys
from pymongo import MongoClient
uri, total, what = sys.argv[1], int(sys.argv[2]), sys.argv[3]
c = MongoClient(uri).bench.items
rnd = random.Random(what)
words = ["issuer", "directory", "csaf", "publisher", "advisory", "vendor", "product", "tlp", "white",
         "green", "amber", "red", "https", "example", "org", "security", "notice", "version"]
def doc(i):
    return {"_id": i, "name": f"item-{i}", "score": rnd.random(), "body": " ".join(rnd.choice(words) for _ in range(140))[:900]}
if what == "load":
    for start in range(0, total, 1000):
        c.insert_many([doc(i) for i in range(start, min(total, start + 1000))], ordered=False)
elif what == "insert":
    c.insert_many([doc(total + i) for i in range(total // 100)], ordered=False)
elif what == "update":
    for i in rnd.sample(range(total), total // 100):
        c.update_one({"_id": i}, {"$set": {"score": rnd.random()}})
PY
}
backup() {
  /usr/bin/time -f "%e %U %S" -o "$WORK/time.out" \
    "$BIN" -q --json backup --source "mongo:$URI" --sink "$WORK/sink" --recipient "$KEY" --format chunked --create-sink \
    > "$WORK/out.json"
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); c=r["chunks"]; print(c["new_bytes"], c["stored_bytes"], c["chunks"], c["new_chunks"])' "$WORK/out.json"
}
py load
read -r new0 stored0 n0 _ < <(backup)
read -r wall user sys < "$WORK/time.out"
BSON=$("$VENV/bin/python" -c "from pymongo import MongoClient; print(MongoClient('$URI').bench.command('collStats', 'items').get('size', 0))" 2>/dev/null || echo 0)
echo "collection: $DOCS documents ($((BSON / 1048576)) MiB of BSON); first backup stored $((new0 / 1048576)) MiB in $n0 chunks, $wall s wall, $(echo "$user + $sys" | bc) s CPU"
# The restore of the last snapshot into a fresh database of the same server.
restore_time() {
  /usr/bin/time -f "%e %U %S" -o "$WORK/time.out" "$BIN" -q restore latest --sink "$WORK/sink" --identity "$WORK/key.txt" \
    --mongo-uri "mongodb://127.0.0.1:$PORT/?directConnection=true" --ns-from 'bench.*' --ns-to "restored$1.*" > /dev/null
  read -r wall user sys < "$WORK/time.out"
  echo "restore of the latest snapshot: $wall s wall, $(echo "$user + $sys" | bc) s CPU"
}
restore_time 0
py insert
read -r new1 _ n1 k1 < <(backup)
echo "1% inserted: the re-run added $((new1 / 1024)) KiB, $k1 of $n1 chunks ($(echo "scale=1; 100 * $new1 / $stored0" | bc)% of the collection)"
py update
read -r new2 _ n2 k2 < <(backup)
echo "1% updated at random: the re-run added $((new2 / 1024)) KiB, $k2 of $n2 chunks ($(echo "scale=1; 100 * $new2 / $stored0" | bc)% of the collection)"
rm -rf "$WORK"
