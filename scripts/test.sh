#!/usr/bin/env bash
# Installs what the tests need (Debian packages) and runs every test.
# In CI (CI=true) a test whose tool or server is missing fails, never skips.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v age >/dev/null || need_apt+=(age)
command -v zstd >/dev/null || need_apt+=(zstd)
command -v ssh-keygen >/dev/null || need_apt+=(openssh-client)
command -v bc >/dev/null || need_apt+=(bc)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
command -v cargo-nextest >/dev/null || cargo install cargo-nextest --locked

# The MongoDB tests run against secantusd-py (PyPI `secantusdb`, a
# MongoDB-compatible server in Python), installed into a venv of the repo.
if [ -z "${COFFER_SECANTUSD:-}" ] && [ ! -x .venv-secantus/bin/secantusd-py ]; then
  echo "installing secantusdb into .venv-secantus"
  rm -rf .venv-secantus
  python3 -m venv .venv-secantus
  .venv-secantus/bin/pip install -q --pre secantusdb pymongo
fi

# The end-to-end tests drive the real binary.
cargo build -p coffer
cargo nextest run --workspace --all-features --no-fail-fast
# Doc tests (nextest does not run them).
cargo test --workspace --doc -q
