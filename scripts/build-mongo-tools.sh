#!/usr/bin/env bash
# Builds the real mongodump, mongorestore and bsondump from a checkout of
# github.com/mongodb/mongo-tools, offline, with Debian's Go (`apt-get
# install golang-go`, Go 1.19 on bookworm). MongoDB publishes no Debian
# or PyPI package of the tools, so this is how the benchmarks compare
# coffer with them on these machines (bench/mongo.sh uses them when they
# are on PATH). The tests never need them.
#
# The commit is the newest whose go.mod asks for Go 1.19 (2023-08, tools
# 100.8 line); it vendors every dependency, so `-mod=vendor` builds it
# without the network.
#
# usage: scripts/build-mongo-tools.sh CHECKOUT [DEST]   (DEST default /usr/local/bin)
set -euo pipefail
SRC=${1:?usage: scripts/build-mongo-tools.sh CHECKOUT [DEST]}
DEST=${2:-/usr/local/bin}
COMMIT=38ccf5db64eb015e204e8d0097b660898e61d494
command -v go >/dev/null || { echo "no go: apt-get install golang-go" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
git -C "$SRC" cat-file -e "$COMMIT^{commit}" 2>/dev/null || {
  echo "$SRC has no commit $COMMIT: give a full clone of mongodb/mongo-tools" >&2
  exit 1
}
git -C "$SRC" archive "$COMMIT" | tar -x -C "$WORK"
export GOFLAGS=-mod=vendor GOPATH="$WORK/gopath" GOCACHE="$WORK/gocache" GOTOOLCHAIN=local
for tool in mongodump mongorestore bsondump; do
  (cd "$WORK" && go build -o "$DEST/$tool" "./$tool/main")
  echo "built $DEST/$tool"
done
