#!/usr/bin/env bash
# Builds the coffer container image from the repository's Containerfile
# (the image examples/scheduling/ runs) with buildah, podman or docker,
# whichever is found first, and tags it coffer:local.
#
# usage: scripts/build-image.sh [BUILD_ARGS…]
#   IMAGE=registry.example/coffer:0.1 scripts/build-image.sh   # another tag
#   BUILDER=docker scripts/build-image.sh                     # pick the tool
# BUILD_ARGS go to the build command before the context (e.g. --pull).
# The image stays local: push it to your registry yourself.
#
# Exit 2 when no builder can run (none installed, or docker without its
# daemon); otherwise the builder's own exit status.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-coffer:local}
BUILDER=${BUILDER:-}

fail() {
  echo "scripts/build-image.sh: $*" >&2
  exit 2
}

if [ -z "$BUILDER" ]; then
  for tool in buildah podman docker; do
    if command -v "$tool" >/dev/null 2>&1; then
      BUILDER=$tool
      break
    fi
  done
  [ -n "$BUILDER" ] || fail "no image builder found: install buildah, podman or docker (e.g. apt-get install podman), then run this again; or build ./Containerfile with any OCI image builder"
fi
command -v "$BUILDER" >/dev/null 2>&1 || fail "BUILDER=$BUILDER is not installed"

case "$BUILDER" in
  buildah) build=(buildah bud) ;;
  podman) build=(podman build) ;;
  docker)
    # The docker CLI alone cannot build: it needs a running daemon.
    docker info >/dev/null 2>&1 ||
      fail "docker is installed but its daemon does not answer (is dockerd running, and may this user use its socket?); or install buildah or podman"
    build=(docker build)
    ;;
  *) fail "BUILDER must be buildah, podman or docker, not '$BUILDER'" ;;
esac

echo "building $IMAGE from ./Containerfile with $BUILDER (the release build takes about 12 minutes on 2 cores)" >&2
"${build[@]}" --file Containerfile --tag "$IMAGE" "$@" .
echo "built $IMAGE; run it with: $BUILDER run --rm $IMAGE --help" >&2
