#!/usr/bin/env bash
# Benchmark of the MongoDB source (issue 3). Against secantusd-py (the
# repo's .venv-secantus, created by scripts/test.sh), with DOCS documents of
# ~1 KiB in 3 collections with one secondary index each (default 200k), prints wall time, throughput and
# peak RSS (/usr/bin/time) of:
#  (a) coffer backup --source mongo:URI  vs  a bare raw-batch read loop
#      (sources/mongo/examples/bare_loops.rs: `find` of RawDocumentBuf,
#      batch size 1000, the same driver);
#  (a') the same backup with `point-in-time = false` (a config file: no
#      oplog queries), with the default `parallel = 2` and with 1, vs the
#      same bare loop;
#  (b) coffer restore --only mongo --mongo-uri URI2 --drop  vs  a bare
#      unordered insert_many loop (batch 1000), each into a fresh server;
#  (c) coffer's peak RSS (target <= 96 MiB);
#  (d) where mongodump and mongorestore are on PATH (the real mongo-tools:
#      scripts/build-mongo-tools.sh builds them offline), `mongodump
#      --archive --gzip | age` and `age -d | mongorestore --drop --archive
#      --gzip` into a fresh server and over the restored one.
# usage: bench/mongo.sh [ROUNDS]   env: BENCH_DOCS, BENCH_DIR, BENCH_IN_FLIGHT
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-1}
[ "$ROUNDS" -ge 1 ] || { echo "usage: bench/mongo.sh [ROUNDS >= 1]" >&2; exit 2; }
DOCS=${BENCH_DOCS:-200000}
WORK=${BENCH_DIR:-/tmp/coffer-bench-mongo}
VENV=${BENCH_VENV:-$PWD/.venv-secantus}
[ -x "$VENV/bin/secantusd-py" ] || { echo "no $VENV/bin/secantusd-py: run scripts/test.sh first" >&2; exit 1; }
cargo build --release -q -p coffer
cargo build --release -q -p coffer-source-mongo --example bare_loops
BIN=$PWD/target/release/coffer
BARE=$PWD/target/release/examples/bare_loops
rm -rf "$WORK"; mkdir -p "$WORK"

# start_server runs in a command substitution (a subshell): the PIDs go
# to a file, read back on exit.
cleanup() {
  [ -f "$WORK/pids" ] || return 0
  while read -r _ p; do kill "$p" 2>/dev/null || true; done < "$WORK/pids"
}
# stop_server PORT: stops the server start_server started on PORT and
# waits (up to 10 s) for it to exit, so it takes no CPU from what is
# measured next.
stop_server() {
  local pid
  pid=$(awk -v p="$1" '$1 == p { print $2 }' "$WORK/pids")
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  awk -v p="$1" '$1 != p' "$WORK/pids" > "$WORK/pids.new" && mv "$WORK/pids.new" "$WORK/pids"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# start_server: starts secantusd-py in memory on a free port, polls until it
# listens, records its PID; prints the port.
start_server() {
  local port; port=$(free_port)
  "$VENV/bin/secantusd-py" --host 127.0.0.1 --port "$port" --storage-path :memory: > "$WORK/server-$port.log" 2>&1 &
  echo "$port $!" >> "$WORK/pids"
  for _ in $(seq 300); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null && break
    sleep 0.1
  done
  echo "$port"
}
P1=$(start_server)
URI1="mongodb://127.0.0.1:$P1/bench?directConnection=true"

echo "loading $DOCS documents of ~1 KiB into 3 collections of bench (port $P1)…"
t0=$(date +%s.%N)
"$VENV/bin/python" - "$URI1" "$DOCS" <<'PY'
import random, sys
from pymongo import MongoClient
uri, total = sys.argv[1], int(sys.argv[2])
db = MongoClient(uri).bench
rnd = random.Random(42)
words = ["issuer", "directory", "csaf", "publisher", "advisory", "vendor", "product", "tlp", "white",
         "green", "amber", "red", "https", "example", "org", "security", "notice", "version", "2.0",
         "distribution", "provider", "trusted", "aggregator", "lister", "metadata", "role", "feed"]
sizes = {"advisories": total // 2, "publishers": total * 3 // 10}
sizes["products"] = total - sum(sizes.values())
for name, n in sizes.items():
    c = db[name]
    c.drop()
    for start in range(0, n, 1000):
        batch = []
        for i in range(start, min(n, start + 1000)):
            body = " ".join(rnd.choice(words) for _ in range(120))[:880]
            batch.append({"_id": i, "name": f"{name}-{i}", "seq": i, "score": rnd.random(),
                          "tags": [rnd.choice(words) for _ in range(4)], "body": body})
        c.insert_many(batch, ordered=False)
    c.create_index("seq")   # one secondary index per collection, as issue 24 measured
print({k: db[k].estimated_document_count() for k in sizes})
PY
echo "loaded in $(echo "$(date +%s.%N) - $t0" | bc) s"

"$BIN" keygen -o "$WORK/key.txt" > "$WORK/recipient.txt" 2>/dev/null
KEY=$(cat "$WORK/recipient.txt")
mkdir -p "$WORK/bson"
"$BARE" read "$URI1" bench --out "$WORK/bson" > /dev/null   # input of the bare insert loop
BYTES=$(cat "$WORK"/bson/*.bson | wc -c)
echo "data: $DOCS documents, $((BYTES / 1048576)) MiB of BSON; $(nproc) cores"

# measure NAME CMD… : runs CMD under /usr/bin/time, prints and records
# "NAME wall_s rss_kib"
: > "$WORK/results.txt"
measure() {
  local name=$1; shift
  /usr/bin/time -f "%e %M %U %S" -o "$WORK/time.out" "$@" > "$WORK/out.txt" 2> "$WORK/err.txt" || {
    echo "$name failed:"; cat "$WORK/err.txt" "$WORK/out.txt"; exit 1; }
  read -r wall rss user sys < "$WORK/time.out"
  printf '%-26s %7.2f s  %8.0f docs/s  %7.1f MiB peak RSS  %5.2f s CPU (coffer side)\n' "$name" "$wall" \
    "$(echo "$DOCS/$wall" | bc -l)" "$(echo "$rss/1024" | bc -l)" "$(echo "$user+$sys" | bc -l)"
  echo "$name $wall $rss" >> "$WORK/results.txt"
}
IN_FLIGHT=${BENCH_IN_FLIGHT:-1}
# (a'): the source with the oplog capture off, from a config file.
cat > "$WORK/coffer.toml" <<TOML
[source.db]
kind = "mongo"
uri = "$URI1"
point-in-time = false

[source.db1]
kind = "mongo"
uri = "$URI1"
point-in-time = false
parallel = 1

[sink.nopit]
kind = "local"
path = "$WORK/sink-nopit"
create = true

[job.nopit]
sources = ["db"]
sinks = ["nopit"]

[job.nopit1]
sources = ["db1"]
sinks = ["nopit"]
TOML
for i in $(seq "$ROUNDS"); do
  rm -rf "$WORK/sink" "$WORK/sink-nopit"
  measure "bare read loop" "$BARE" read "$URI1" bench
  measure "coffer backup" "$BIN" -q --create-sink backup --source "mongo:$URI1" --sink "$WORK/sink" --recipient "$KEY"
  measure "coffer backup no-pit" "$BIN" -q --config "$WORK/coffer.toml" backup nopit --recipient "$KEY"
  measure "coffer backup no-pit p1" "$BIN" -q --config "$WORK/coffer.toml" backup nopit1 --recipient "$KEY"
  # Each restore loop gets a fresh server: secantusd-py's insert cost grows
  # once its oplog is full (it prunes every 1000 writes), so the second of
  # two loops on one server would pay for the first one's writes.
  [ -n "${P2:-}" ] && stop_server "$P2"
  P2=$(start_server); URI2="mongodb://127.0.0.1:$P2/?directConnection=true"
  measure "bare insert loop" "$BARE" insert "$URI2" bare "$WORK/bson" --in-flight "$IN_FLIGHT"
  stop_server "$P2"
  P2=$(start_server); URI2="mongodb://127.0.0.1:$P2/?directConnection=true"
  measure "coffer restore" "$BIN" -q restore latest --sink "$WORK/sink" --identity "$WORK/key.txt" \
    --only mongo --mongo-uri "$URI2" --drop
  "$VENV/bin/python" -c "
import sys; from pymongo import MongoClient
c = MongoClient('$URI2'); n = sum(c.bench[k].count_documents({}) for k in c.bench.list_collection_names())
assert n == $DOCS, n"
  # A/B: every collection through a staging copy and renameCollection (the
  # behaviour before new collections were loaded in place).
  stop_server "$P2"
  P3=$(start_server); URI3="mongodb://127.0.0.1:$P3/?directConnection=true"
  measure "coffer restore always-stage" "$BIN" -q restore latest --sink "$WORK/sink" --identity "$WORK/key.txt" \
    --only mongo --mongo-uri "$URI3" --drop --opt mongo.always-stage=true
  stop_server "$P3"
  # Over collections that exist: staged and swapped in (the never
  # half-restored promise), into the server the first restore filled.
  P2=$(start_server); URI2="mongodb://127.0.0.1:$P2/?directConnection=true"
  "$BIN" -q restore latest --sink "$WORK/sink" --identity "$WORK/key.txt" --only mongo --mongo-uri "$URI2" --drop
  measure "coffer restore over existing" "$BIN" -q restore latest --sink "$WORK/sink" --identity "$WORK/key.txt" \
    --only mongo --mongo-uri "$URI2" --drop
  P3=$(start_server); URI3="mongodb://127.0.0.1:$P3/?directConnection=true"
  measure "coffer restore in-place" "$BIN" -q restore latest --sink "$WORK/sink" --identity "$WORK/key.txt" \
    --only mongo --mongo-uri "$URI3" --drop --unsafe-in-place
  stop_server "$P3"
  # The real mongo-tools, where they are on PATH (scripts/build-mongo-tools.sh
  # builds them offline): the pipelines coffer replaces, encrypted the same way.
  if command -v mongodump >/dev/null && command -v mongorestore >/dev/null; then
    measure "mongodump|age" bash -c "set -o pipefail; mongodump --quiet --uri '$URI1' --archive --gzip | age -r '$KEY' > '$WORK/dump.age'"
    P3=$(start_server); URI3="mongodb://127.0.0.1:$P3/?directConnection=true"
    measure "age -d|mongorestore" bash -c "set -o pipefail; age -d -i '$WORK/key.txt' '$WORK/dump.age' \
      | mongorestore --quiet --uri '$URI3' --drop --archive --gzip"
    "$VENV/bin/python" -c "
import sys; from pymongo import MongoClient
c = MongoClient('$URI3'); n = sum(c.bench[k].count_documents({}) for k in c.bench.list_collection_names())
assert n == $DOCS, n"
    measure "age -d|mongorestore existing" bash -c "set -o pipefail; age -d -i '$WORK/key.txt' '$WORK/dump.age' \
      | mongorestore --quiet --uri '$URI3' --drop --archive --gzip"
    stop_server "$P3"
  fi
done
# What the server itself spends on the steps coffer adds to the bare loops
# (the point-in-time oplog queries, the count checks, the atomic swap).
"$VENV/bin/python" - "$URI1" "$URI2" "$WORK/server.txt" <<'PY'
import sys, time
from bson import Timestamp
from pymongo import MongoClient
src, dst = MongoClient(sys.argv[1]), MongoClient(sys.argv[2])
out = open(sys.argv[3], "w")
def t(name, f, key=None):
    t0 = time.time(); f(); dt = time.time() - t0
    print(f"server: {name:<56} {dt:6.2f} s")
    if key:
        out.write(f"{key} {dt}\n")
n_adv = dst.bench.advisories.estimated_document_count()
n_prod = dst.bench.products.estimated_document_count()
n_oplog = src.local["oplog.rs"].estimated_document_count()
t(f"estimated_document_count, {n_adv} docs", lambda: src.bench.advisories.estimated_document_count(),
  f"count_per_doc_x{n_adv}")
t(f"count_documents, {n_adv} docs", lambda: dst.bench.advisories.count_documents({}))
t(f"one local.oplog.rs query ({n_oplog} entries, empty result)",
  lambda: list(src.local["oplog.rs"].find({"ts": {"$lt": Timestamp(0, 0)}})), "oplog_query")
t(f"renameCollection of {n_prod} docs (and back: /2)", lambda: (
    dst.admin.command("renameCollection", "bench.products", to="bench.products_x"),
    dst.admin.command("renameCollection", "bench.products_x", to="bench.products")), f"rename2_per_doc_x{n_prod}")
PY
python3 - "$WORK/results.txt" "$WORK/server.txt" "$DOCS" <<'PY'
import sys, collections
t = collections.defaultdict(list)
for line in open(sys.argv[1]):
    *name, wall, rss = line.split()
    t[" ".join(name)].append((float(wall), int(rss)))
avg = lambda k: sum(w for w, _ in t[k]) / len(t[k])
rss = lambda k: max(r for _, r in t[k]) / 1024
d = avg("bare read loop") / avg("coffer backup")
r = avg("bare insert loop") / avg("coffer restore")
dn = avg("bare read loop") / avg("coffer backup no-pit")
dn1 = avg("bare read loop") / avg("coffer backup no-pit p1")
print(f"dump:    coffer throughput = {d:.0%} of the bare read loop (target >= 90%), peak RSS {rss('coffer backup'):.1f} MiB (target <= 96)")
print(f"dump':   coffer point-in-time = false: {dn:.0%} of the bare read loop, peak RSS {rss('coffer backup no-pit'):.1f} MiB")
print(f"dump':   the same with parallel = 1: {dn1:.0%} of the bare read loop, peak RSS {rss('coffer backup no-pit p1'):.1f} MiB")
print(f"restore: coffer throughput = {r:.0%} of the bare insert loop (target >= 90%), peak RSS {rss('coffer restore'):.1f} MiB (target <= 96)")
print(f"restore: new collections loaded in place {avg('coffer restore'):.2f} s, every one staged and renamed {avg('coffer restore always-stage'):.2f} s ({avg('coffer restore') / avg('coffer restore always-stage'):.2f}x)")
print(f"restore: over existing collections (staged, swapped) {avg('coffer restore over existing'):.2f} s = {avg('bare insert loop') / avg('coffer restore over existing'):.0%} of the bare insert loop")
print(f"restore: --unsafe-in-place into a fresh server {avg('coffer restore in-place'):.2f} s")
if t["age -d|mongorestore"]:
    mr, md = avg("age -d|mongorestore"), avg("mongodump|age")
    print(f"vs the real mongo-tools (with age): backup {avg('coffer backup'):.2f} s / mongodump {md:.2f} s = {avg('coffer backup') / md:.2f}x (target <= 1.0)")
    print(f"  restore --drop, fresh server: {avg('coffer restore'):.2f} s / mongorestore {mr:.2f} s = {avg('coffer restore') / mr:.2f}x (target <= 1.0, moonshot 0.75)")
    print(f"  restore --unsafe-in-place, fresh server: {avg('coffer restore in-place') / mr:.2f}x (target <= 0.75)")
    print(f"  restore --drop over existing: {avg('coffer restore over existing'):.2f} s / mongorestore {avg('age -d|mongorestore existing'):.2f} s = {avg('coffer restore over existing') / avg('age -d|mongorestore existing'):.2f}x")
# What is left once the server's own cost of the steps the design requires
# is added to the bare loops: two oplog queries for the point-in-time dump
# (O(log n) on mongod, a full oplog scan here), and per restored document a
# renameCollection (a metadata change on mongod, a copy here) and the
# metadata count after the swap (a scan here).
docs = int(sys.argv[3])
srv = {}
for line in open(sys.argv[2]):
    key, secs = line.split()
    name, _, n = key.partition("_x")
    srv[name] = float(secs) / int(n) if n else float(secs)
dump_floor = avg("bare read loop") + 2 * srv["oplog_query"]
restore_floor = avg("bare insert loop") + docs * (srv["rename2_per_doc"] / 2 + srv["count_per_doc"])
print(f"dump:    coffer = {dump_floor / avg('coffer backup'):.0%} of (bare loop + 2 oplog queries = {dump_floor:.1f} s)")
print(f"restore over existing: coffer = {restore_floor / avg('coffer restore over existing'):.0%} of (bare loop + rename + count of {docs} docs = {restore_floor:.1f} s)")
PY
