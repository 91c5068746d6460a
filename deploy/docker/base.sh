#!/usr/bin/env bash
# Makes the base images of deploy/docker/Dockerfile locally, for machines that reach no image
# registry (the Dockerfile's defaults, rust:1.95-slim-bookworm and debian:bookworm-slim, come
# from Docker Hub):
#
#   shoal-base/debian:bookworm  Debian 12 minbase from debootstrap, trimmed like
#                               debian:bookworm-slim (no docs, man pages, locales, apt lists)
#   shoal-base/rust:bookworm    that, plus gcc and libc headers from Debian, this machine's
#                               Rust toolchain (the one `rustc` on PATH belongs to) and the
#                               certificate authorities it added (/usr/local/share/ca-certificates)
#
# Images that exist are kept; --force rebuilds them; --debian-only makes only the first (enough
# for an image from a prebuilt binary, build.sh --binary). Needs root (debootstrap), and reaches
# only Debian's package mirror (DEBIAN_MIRROR, default http://deb.debian.org/debian).
set -euo pipefail

DEBIAN_IMAGE=shoal-base/debian:bookworm
RUST_IMAGE=shoal-base/rust:bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
here="$(cd "$(dirname "$0")" && pwd)"
force=false
rust=true
for arg in "$@"; do
  case "$arg" in
    --force) force=true ;;
    --debian-only) rust=false ;;
    *) echo "base.sh: unknown option $arg (--force, --debian-only)" >&2; exit 2 ;;
  esac
done

exists() { docker image inspect "$1" >/dev/null 2>&1; }
log() { printf 'base.sh: %s\n' "$*" >&2; }

work="$(mktemp -d /var/tmp/shoal-base.XXXXXX)"
trap 'rm -rf "$work"' EXIT

if $force || ! exists "$DEBIAN_IMAGE"; then
  if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  fi
  log "debootstrap bookworm (minbase) from $MIRROR"
  debootstrap --variant=minbase bookworm "$work/rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
  # What debian:bookworm-slim leaves out.
  rm -rf "$work"/rootfs/var/lib/apt/lists/* "$work"/rootfs/var/cache/apt/*.bin \
    "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/log/*.log \
    "$work"/rootfs/usr/share/doc/* "$work"/rootfs/usr/share/man/* \
    "$work"/rootfs/usr/share/info/* "$work"/rootfs/usr/share/locale/*
  cat >"$work/rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
CFG
  printf 'APT::Install-Recommends "false";\n' >"$work/rootfs/etc/apt/apt.conf.d/docker-no-recommends"
  tar -C "$work/rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - "$DEBIAN_IMAGE" >/dev/null
  log "made $DEBIAN_IMAGE"
fi

if $rust && { $force || ! exists "$RUST_IMAGE"; }; then
  sysroot="$(rustc --print sysroot)"
  log "copying the Rust toolchain at $sysroot ($(rustc --version))"
  mkdir -p "$work/ctx/toolchain/bin"
  cp -a "$sysroot/bin/rustc" "$sysroot/bin/cargo" "$work/ctx/toolchain/bin/"
  cp -a "$sysroot/lib" "$work/ctx/toolchain/"
  mkdir -p "$work/ctx/ca"
  find /usr/local/share/ca-certificates -name '*.crt' -exec cp {} "$work/ctx/ca/" \; 2>/dev/null || true
  cp "$here/rust-base.Dockerfile" "$work/ctx/Dockerfile"
  docker build -q --build-arg "BASE_IMAGE=$DEBIAN_IMAGE" -t "$RUST_IMAGE" "$work/ctx" >/dev/null
  log "made $RUST_IMAGE"
fi
