#!/usr/bin/env bash
# Builds the Shoal image from this checkout, and the Prometheus image deploy/compose uses
# (shoal-prometheus:latest, from Debian's package):
#
#   deploy/docker/build.sh [TAG]                  # default shoal:latest; compiles in Docker
#   deploy/docker/build.sh --binary PATH [TAG]    # packs a `shoal` built on this machine
#
# The first runs the whole Dockerfile (a release build in its build stage). The second skips
# that stage: it packs PATH into the Dockerfile's runtime stage as it stands (taken from the
# Dockerfile, so both images are the same apart from the binary). PATH must be built for Debian
# 12's glibc or older (this machine is Debian 12); CI packs the debug binary its tests built.
#
# Uses the Dockerfile's default bases (rust:1.95-slim-bookworm, debian:bookworm-slim) when they
# are present or can be pulled; otherwise (no registry reachable) makes local ones with base.sh
# and builds on those. RUST_IMAGE / BASE_IMAGE choose the bases explicitly.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
binary=""
if [[ "${1:-}" == "--binary" ]]; then
  binary="${2:?build.sh: --binary needs the path of a shoal binary}"
  [[ -x "$binary" ]] || { echo "build.sh: $binary is not an executable file" >&2; exit 2; }
  shift 2
fi
tag="${1:-shoal:latest}"

available() { docker image inspect "$1" >/dev/null 2>&1 || docker pull -q "$1" >/dev/null 2>&1; }

if [[ -n "$binary" ]]; then
  if [[ -z "${BASE_IMAGE:-}" ]]; then
    if available debian:bookworm-slim; then
      BASE_IMAGE=debian:bookworm-slim
    else
      echo "build.sh: no registry images; using a local base (deploy/docker/base.sh)" >&2
      "$here/base.sh" --debian-only
      BASE_IMAGE=shoal-base/debian:bookworm
    fi
  fi
  ctx="$(mktemp -d /var/tmp/shoal-image.XXXXXX)"
  trap 'rm -rf "$ctx"' EXIT
  install -m 0755 "$binary" "$ctx/shoal"
  # The runtime stage: from its FROM line to the end, the binary copied from the context.
  awk '/^FROM \$\{BASE_IMAGE\}/ { on = 1 } on' "$here/Dockerfile" \
    | sed 's#^COPY --from=build /out/shoal #COPY shoal #' >"$ctx/Dockerfile"
  grep -q '^COPY shoal /usr/local/bin/shoal' "$ctx/Dockerfile" \
    || { echo "build.sh: the Dockerfile's runtime stage no longer copies /out/shoal" >&2; exit 1; }
  { echo 'ARG BASE_IMAGE=debian:bookworm-slim'; cat "$ctx/Dockerfile"; } >"$ctx/Dockerfile.tmp"
  mv "$ctx/Dockerfile.tmp" "$ctx/Dockerfile"
  docker build --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$tag" "$ctx"
else
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
fi
docker build --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "${PROMETHEUS_TAG:-shoal-prometheus:latest}" \
  "$root/deploy/compose/prometheus"
docker image ls "$tag"
docker image ls "${PROMETHEUS_TAG:-shoal-prometheus:latest}"
