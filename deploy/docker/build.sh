#!/usr/bin/env bash
# Builds the Shoal image from this checkout: deploy/docker/build.sh [TAG] (default shoal:latest),
# and the Prometheus image deploy/compose uses (shoal-prometheus:latest, from Debian's package).
#
# Uses the Dockerfile's default bases (rust:1.95-slim-bookworm, debian:bookworm-slim) when they
# are present or can be pulled; otherwise (no registry reachable) makes local ones with base.sh
# and builds on those. RUST_IMAGE / BASE_IMAGE choose the bases explicitly.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tag="${1:-shoal:latest}"

available() { docker image inspect "$1" >/dev/null 2>&1 || docker pull -q "$1" >/dev/null 2>&1; }

if [[ -z "${RUST_IMAGE:-}" || -z "${BASE_IMAGE:-}" ]]; then
  if available rust:1.95-slim-bookworm && available debian:bookworm-slim; then
    RUST_IMAGE="${RUST_IMAGE:-rust:1.95-slim-bookworm}"
    BASE_IMAGE="${BASE_IMAGE:-debian:bookworm-slim}"
  else
    echo "build.sh: no registry images; using local bases (deploy/docker/base.sh)" >&2
    "$here/base.sh"
    RUST_IMAGE="${RUST_IMAGE:-shoal-base/rust:bookworm}"
    BASE_IMAGE="${BASE_IMAGE:-shoal-base/debian:bookworm}"
  fi
fi

docker build -f "$here/Dockerfile" --build-arg "RUST_IMAGE=$RUST_IMAGE" \
  --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$tag" "$root"
docker build --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "${PROMETHEUS_TAG:-shoal-prometheus:latest}" \
  "$root/deploy/compose/prometheus"
docker image ls "$tag"
docker image ls "${PROMETHEUS_TAG:-shoal-prometheus:latest}"
