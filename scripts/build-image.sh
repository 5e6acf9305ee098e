#!/usr/bin/env bash
# Build the engine's container image without any container registry (what `make test` does):
#   1. the base image (ARG BASE of the Dockerfile): `debootstrap --variant=minbase bookworm` from the Debian
#      mirror apt uses on this machine, imported as localhost/engine-base:bookworm; built once per machine
#      (podman's image store is the cache; ENGINE_REBUILD_BASE=1 rebuilds it);
#   2. the image: `podman build --isolation chroot --network host --format docker` (docker format keeps the
#      HEALTHCHECK); Python dependencies come from PyPI during the build; podman's layer cache makes a rebuild
#      with unchanged sources take seconds.
# Usage: scripts/build-image.sh [TAG]   (default localhost/imaging-report-engine:dev)
# Prints "base <seconds> <cached|built>" and "image <seconds>" on stdout. Needs root (or a rootless podman
# set-up with subuids), podman, buildah and debootstrap (scripts/install-system-deps.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
TAG="${1:-localhost/imaging-report-engine:dev}"
BASE="${ENGINE_BASE_IMAGE:-localhost/engine-base:bookworm}"
SUITE="${ENGINE_BASE_SUITE:-bookworm}"

# The Debian mirror apt is configured with (deb822 `URIs:` or one-line `deb URL SUITE ...`), not -security.
debian_mirror() {
  local files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
  local url
  url=$(cat "${files[@]}" 2>/dev/null | awk -v suite="$SUITE" '
    /^[[:space:]]*#/ { next }
    /^URIs:/ { uri = $2; next }
    /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite && uri !~ /security/) { print uri; exit } next }
    /^deb[[:space:]]/ { for (i = 2; i <= NF; i++) if ($i !~ /^\[/) { u = $i; s = $(i + 1); break }
                        if (s == suite && u !~ /security/) { print u; exit } }
  ')
  echo "${url:-http://deb.debian.org/debian}"
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

t0=$(now)
if [ "${ENGINE_REBUILD_BASE:-0}" != 1 ] && podman image exists "$BASE"; then
  echo "base $(elapsed "$t0") cached $BASE"
else
  root=$(mktemp -d "${TMPDIR:-/tmp}/engine-base.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  mirror=$(debian_mirror)
  # python3-venv brings ensurepip (pip for the venv); ca-certificates for HTTPS to PyPI.
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$root/rootfs" "$mirror" >"$root/debootstrap.log" 2>&1 \
    || { tail -20 "$root/debootstrap.log" >&2; echo "debootstrap from $mirror failed" >&2; exit 1; }
  rm -rf "$root/rootfs/var/cache/apt/archives/"*.deb "$root/rootfs/var/lib/apt/lists/"*
  tar -C "$root/rootfs" -c . | podman import --quiet - "$BASE" >/dev/null
  rm -rf "$root"
  trap - EXIT
  echo "base $(elapsed "$t0") built $BASE from $mirror"
fi

t1=$(now)
# A CA bundle pip should trust (a TLS-intercepting proxy's), passed as a build secret, never kept in a layer.
secret=()
ca="${PIP_CERT:-${SSL_CERT_FILE:-}}"
[ -n "$ca" ] && [ -s "$ca" ] && secret=(--secret "id=pip_ca,src=$ca")
podman build --quiet --isolation chroot --network host --format docker "${secret[@]}" \
  --build-arg "BASE=$BASE" -t "$TAG" . >/dev/null
echo "image $(elapsed "$t1") $TAG"
