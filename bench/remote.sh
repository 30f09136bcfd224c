#!/usr/bin/env bash
# Benchmarks of the remote sinks (issue 4). Starts its own moto_server (S3)
# and private sshd (SFTP) on 127.0.0.1, stops them on exit, and prints wall
# time and peak RSS of:
#  1. backup of the ~768 MiB tree (bench/gen_tree.py, as bench/run.sh) to
#     local, S3 and SFTP alone, then to local + S3 + SFTP at once;
#     target: fan-out <= 1.3x the slowest single sink;
#  2. backup of a 2 GiB random file to S3 alone at default settings;
#     target: peak RSS <= 128 MiB.
# usage: bench/remote.sh [ROUNDS]
#   needs /usr/bin/time, python3, curl, ssh-keygen, /usr/sbin/sshd and
#   moto_server ($COFFER_MOTO_SERVER or .venv-moto/bin/moto_server, which
#   scripts/test.sh creates).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${1:-1}
WORK=${BENCH_DIR:-/tmp/coffer-bench}
MIB=${BENCH_MIB:-768}
MOTO=${COFFER_MOTO_SERVER:-$ROOT/.venv-moto/bin/moto_server}
BUCKET=coffer-bench
[ -x "$MOTO" ] || { echo "moto_server not found at $MOTO: run scripts/test.sh or set COFFER_MOTO_SERVER" >&2; exit 2; }
[ -x /usr/sbin/sshd ] || { echo "/usr/sbin/sshd not found: apt-get install openssh-server" >&2; exit 2; }

cargo build --release -p coffer -q
BIN=$ROOT/target/release/coffer
mkdir -p "$WORK"
if [ ! -f "$WORK/tree.done" ] || [ "$(cat "$WORK/tree.done")" != "$MIB" ]; then
  rm -rf "$WORK/tree"
  python3 bench/gen_tree.py "$WORK/tree" "$MIB"
  echo "$MIB" > "$WORK/tree.done"
fi
[ -f "$WORK/big.bin" ] || head -c 2G /dev/urandom > "$WORK/big.bin"
[ -f "$WORK/key.txt" ] || "$BIN" keygen -o "$WORK/key.txt" >/dev/null 2>&1
KEY=$(grep -o 'age1[a-z0-9]*' "$WORK/key.txt")
R=$(mktemp -d "$WORK/remote.XXXXXX")

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

MOTO_PID=""
SSHD_PID=""
# Stops what this script started, by PID only. sshd's session processes
# call setsid(), so they are found as descendants of our sshd in /proc.
descendants() {
  local p
  for p in $(pgrep -P "$1" 2>/dev/null || true); do
    descendants "$p"
    echo "$p"
  done
}
cleanup() {
  if [ -n "$SSHD_PID" ]; then
    for p in $(descendants "$SSHD_PID"); do kill "$p" 2>/dev/null || true; done
    kill "$SSHD_PID" 2>/dev/null || true
    wait "$SSHD_PID" 2>/dev/null || true
  fi
  if [ -n "$MOTO_PID" ]; then
    kill "$MOTO_PID" 2>/dev/null || true
    wait "$MOTO_PID" 2>/dev/null || true
  fi
  rm -rf "$R"
}
trap cleanup EXIT

# moto_server: state in RAM.
MOTO_PORT=$(free_port)
"$MOTO" -H 127.0.0.1 -p "$MOTO_PORT" > "$R/moto.log" 2>&1 &
MOTO_PID=$!
for _ in $(seq 300); do curl -s -o /dev/null "http://127.0.0.1:$MOTO_PORT/" && break; sleep 0.1; done
curl -sf -o /dev/null "http://127.0.0.1:$MOTO_PORT/" || { echo "moto_server did not start" >&2; exit 1; }
s3_reset() {
  curl -sf -X POST -o /dev/null "http://127.0.0.1:$MOTO_PORT/moto-api/reset"
  curl -sf -X PUT -o /dev/null "http://127.0.0.1:$MOTO_PORT/$BUCKET"
}
s3_reset

# A private sshd with its own host key, client key and config.
mkdir -p /run/sshd "$R/sshd" "$R/sftp-data"
for k in host_key client_key; do ssh-keygen -q -t ed25519 -N '' -C "$k" -f "$R/sshd/$k"; done
cp "$R/sshd/client_key.pub" "$R/sshd/authorized_keys"
SSH_PORT=$(free_port)
cat > "$R/sshd/sshd_config" <<EOF
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $R/sshd/host_key
PidFile $R/sshd/sshd.pid
AuthorizedKeysFile $R/sshd/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
EOF
echo "[127.0.0.1]:$SSH_PORT $(cat "$R/sshd/host_key.pub")" > "$R/sshd/known_hosts"
/usr/sbin/sshd -f "$R/sshd/sshd_config" -D -E "$R/sshd/sshd.log" &
SSHD_PID=$!
python3 - "$SSH_PORT" <<'PY' || { echo "sshd did not start: $(cat "$R/sshd/sshd.log")" >&2; exit 1; }
import socket, sys, time
deadline = time.time() + 20
while time.time() < deadline:
    try:
        with socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1) as s:
            if s.recv(4) == b"SSH-":
                sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit(1)
PY

export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret
unset AWS_ENDPOINT_URL AWS_PROFILE || true
S3="s3://$BUCKET/tree?endpoint=http://127.0.0.1:$MOTO_PORT&region=us-east-1"
SFTP="sftp://$(id -un)@127.0.0.1:$SSH_PORT/$R/sftp-data/tree?key=$R/sshd/client_key&known-hosts=$R/sshd/known_hosts"
LOCAL=$R/local

echo "tree: $(du -sm "$WORK/tree" | cut -f1) MiB in $(find "$WORK/tree" -type f | wc -l) files; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"

# measure NAME CMD… : runs CMD under /usr/bin/time, prints "NAME wall_s rss_mib"
: > "$R/results.txt"
measure() {
  local name=$1; shift
  cat "$WORK"/tree/*/*/* "$WORK"/tree/blobs/* > /dev/null 2>&1 || true  # page cache warm for every run
  if ! /usr/bin/time -f "%e %M" -o "$R/time.out" "$@" > "$R/out.txt" 2> "$R/err.txt"; then
    echo "$name FAILED:" >&2; cat "$R/out.txt" "$R/err.txt" >&2; exit 1
  fi
  read -r wall rss < "$R/time.out"
  printf '%-34s %7.2f s  %7.1f MiB peak RSS\n' "$name" "$wall" "$(echo "$rss/1024" | bc -l)"
  echo "$name|$wall|$rss" >> "$R/results.txt"
}
clean_sinks() { rm -rf "$LOCAL" "$R/sftp-data/tree"; s3_reset; }
BACKUP=("$BIN" -q --create-sink backup --source "file:$WORK/tree" --recipient "$KEY")

for i in $(seq "$ROUNDS"); do
  clean_sinks; measure "local alone" "${BACKUP[@]}" --sink "$LOCAL"
  clean_sinks; measure "s3 alone" "${BACKUP[@]}" --sink "$S3"
  clean_sinks; measure "sftp alone" "${BACKUP[@]}" --sink "$SFTP"
  clean_sinks; measure "local+s3+sftp" "${BACKUP[@]}" --sink "$LOCAL" --sink "$S3" --sink "$SFTP"
  # The three objects are identical (moto wants some Authorization header
  # on a GET, and checks no signature).
  obj=$(basename "$LOCAL"/*.coffer)
  a=$(sha256sum "$LOCAL/$obj" | cut -d' ' -f1)
  b=$(sha256sum "$R/sftp-data/tree/$obj" | cut -d' ' -f1)
  c=$(curl -sf -H 'Authorization: AWS4-HMAC-SHA256 Credential=bench/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0' \
      "http://127.0.0.1:$MOTO_PORT/$BUCKET/tree/$obj" | sha256sum | cut -d' ' -f1)
  [ "$a" = "$b" ] && [ "$a" = "$c" ] || { echo "the three objects differ: $a $b $c" >&2; exit 1; }
  echo "  three identical objects: sha256 $a"
done
clean_sinks
python3 - "$R/results.txt" <<'PY'
import sys, collections
t = collections.defaultdict(list)
for line in open(sys.argv[1]):
    name, wall, rss = line.strip().split("|")
    t[name].append(float(wall))
avg = {k: sum(v) / len(v) for k, v in t.items()}
single = {k: avg[k] for k in ("local alone", "s3 alone", "sftp alone")}
slowest = max(single, key=single.get)
print(f"fan-out local+s3+sftp / slowest single ({slowest}): {avg['local+s3+sftp'] / single[slowest]:.2f}x (target <= 1.30x)")
PY

# A 2 GiB bundle to S3 alone at default settings: peak RSS.
s3_reset
measure "2 GiB file to s3 alone" "$BIN" -q --create-sink backup --source "file:$WORK/big.bin" --compression none \
  --sink "s3://$BUCKET/big?endpoint=http://127.0.0.1:$MOTO_PORT&region=us-east-1" --recipient "$KEY"
rss=$(tail -1 "$R/results.txt" | cut -d'|' -f3)
printf 'S3 2 GiB peak RSS: %.1f MiB (target <= 128; S3 part buffers: part-size x (concurrency + 1) = 8 MiB x 5 = 40 MiB)\n' "$(echo "$rss/1024" | bc -l)"
s3_reset
