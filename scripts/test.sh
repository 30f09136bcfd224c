#!/usr/bin/env bash
# Installs what the tests need and runs every test.
#
# Needs root: it installs Debian packages with apt (age, zstd,
# openssh-client, openssh-server, python3-venv, bc, kubernetes-client for
# kubectl), creates /run/sshd for the tests' private sshd, and the
# removable-media tests mount tmpfs file systems. It runs `cargo install
# cargo-nextest` when nextest is missing, and puts secantusdb, moto and
# wsgidav into venvs of the repo.
# It exports CI=true: a test whose tool or server is missing fails, never
# skips.
set -euo pipefail
cd "$(dirname "$0")/.."
# This script installs every server and tool the tests need, so a test
# that still cannot find one must fail, never skip.
export CI=true

if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh needs root (apt-get, /run/sshd, tmpfs mounts); run it with sudo" >&2
  exit 2
fi

need_apt=()
command -v age >/dev/null || need_apt+=(age)
command -v zstd >/dev/null || need_apt+=(zstd)
command -v ssh-keygen >/dev/null || need_apt+=(openssh-client)
command -v bc >/dev/null || need_apt+=(bc)
# A fresh Debian has python3 but not its venv module (ensurepip).
if ! command -v python3 >/dev/null; then
  need_apt+=(python3 python3-venv)
elif ! python3 -c 'import ensurepip' 2>/dev/null; then
  need_apt+=(python3-venv)
fi
# The SFTP sink tests start a private sshd (its own config, keys and port).
[ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
# The k8s source tests run the real kubectl against the stand-in API server.
command -v kubectl >/dev/null || need_apt+=(kubernetes-client)
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

# The S3 sink tests run against moto_server (PyPI `moto[server]`), in a
# venv of the repo; the sshd of the SFTP tests needs its privsep dir.
if [ -z "${COFFER_MOTO_SERVER:-}" ] && [ ! -x .venv-moto/bin/moto_server ]; then
  echo "installing moto[server] into .venv-moto"
  rm -rf .venv-moto
  python3 -m venv .venv-moto
  .venv-moto/bin/pip install -q 'moto[server]'
fi
mkdir -p /run/sshd

# The OpenDAL sink's webdav tests run against wsgidav (PyPI), in a venv.
if [ -z "${COFFER_WSGIDAV:-}" ] && [ ! -x .venv-wsgidav/bin/wsgidav ]; then
  echo "installing wsgidav into .venv-wsgidav"
  rm -rf .venv-wsgidav
  python3 -m venv .venv-wsgidav
  .venv-wsgidav/bin/pip install -q wsgidav cheroot
fi

# The end-to-end tests drive the real binary (with the plugins' test-only
# hooks, which no shipped build has).
cargo build -p coffer --features test-hooks
# The slim builds a plugin author makes (the CLI library without the
# bundled plugins, the application layer without HTTP) still compile.
cargo check -q -p coffer --no-default-features
cargo check -q -p coffer-app --no-default-features
cargo nextest run --workspace --all-features --no-fail-fast
# Doc tests (nextest does not run them).
cargo test --workspace --doc -q
