# Sourced by bench/run.sh, chunked.sh and history.sh (from the repository
# root): builds the release binary (BIN), writes the benchmark tree of
# BENCH_MIB MiB (default 768) under WORK (BENCH_DIR, default
# /tmp/coffer-bench) once, and a key there (KEY: its recipient).
WORK=${BENCH_DIR:-/tmp/coffer-bench}
MIB=${BENCH_MIB:-768}
cargo build --release -p coffer -q
BIN=$PWD/target/release/coffer
mkdir -p "$WORK"
if [ ! -f "$WORK/tree.done" ] || [ "$(cat "$WORK/tree.done")" != "$MIB" ]; then
  rm -rf "$WORK/tree"
  python3 bench/gen_tree.py "$WORK/tree" "$MIB"
  echo "$MIB" > "$WORK/tree.done"
fi
[ -f "$WORK/key.txt" ] || "$BIN" keygen -o "$WORK/key.txt" >/dev/null 2>&1
KEY=$(grep -o 'age1[a-z0-9]*' "$WORK/key.txt")
