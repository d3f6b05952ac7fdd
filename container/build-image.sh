#!/usr/bin/env bash
# Build the ikepki image from the repository's Dockerfile, cached by content.
#
#   container/build-image.sh            # prints the image reference (last line of stdout)
#   container/build-image.sh --postgres # the tests' PostgreSQL image (container/postgres/)
#
# Engine: docker when a Docker daemon answers, otherwise podman (ENGINE=… overrides).
# Base:   PYTHON_IMAGE when set; else python:3.11-slim-bookworm when present locally or
#         pullable; else a Debian bookworm base made here with mmdebstrap (no registry needed).
# Cache:  the image is tagged $IMAGE:src-<sha256 of the build inputs>; when that tag exists the
#         build is skipped.  Otherwise the engine's layer cache keeps dependency wheels as long
#         as pyproject.toml is unchanged.  Also tagged $IMAGE:latest.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-localhost/ikepki}
OFFICIAL=docker.io/library/python:3.11-slim-bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
log() { echo "build-image: $*" >&2; }

if [ -z "${ENGINE:-}" ]; then
  if command -v docker >/dev/null && timeout 10 docker info >/dev/null 2>&1; then ENGINE=docker; else ENGINE=podman; fi
fi
command -v "$ENGINE" >/dev/null || { echo "build-image: $ENGINE not installed (Debian package podman): run make setup" >&2; exit 1; }

exists() { "$ENGINE" image inspect "$1" >/dev/null 2>&1; }

# -- the base image -------------------------------------------------------------------------
# Debian's python3 packages stand in for the official python image: python3-venv for the
# runtime venv; the build stage adds python3-dev itself when the base lacks Python's headers.
BASE_PACKAGES=python3,python3-venv,python-is-python3,ca-certificates
local_base() {
  local key tag tmp
  key=$(printf '%s\n' bookworm "$BASE_PACKAGES" "$MIRROR" "$SECURITY" v1 | sha256sum | cut -c1-12)
  tag=localhost/ikepki-base:bookworm-$key
  if exists "$tag"; then echo "$tag"; return; fi
  command -v mmdebstrap >/dev/null || { echo "build-image: mmdebstrap not installed (Debian package mmdebstrap): run make setup" >&2; exit 1; }
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
  log "making the base $tag with mmdebstrap"
  mmdebstrap --quiet --variant=minbase --include="$BASE_PACKAGES" \
    --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    bookworm "$tmp/base.tar" \
    "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" "deb $SECURITY bookworm-security main" >&2
  "$ENGINE" import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' "$tmp/base.tar" "$tag" >/dev/null
  echo "$tag"
}

if [ -z "${PYTHON_IMAGE:-}" ]; then
  if exists "$OFFICIAL"; then PYTHON_IMAGE=$OFFICIAL
  elif timeout 30 "$ENGINE" pull -q "$OFFICIAL" >/dev/null 2>&1; then PYTHON_IMAGE=$OFFICIAL
  else log "no registry reachable: using a local mmdebstrap base"; PYTHON_IMAGE=$(local_base); fi
fi

base_id=$("$ENGINE" image inspect --format '{{.Id}}' "$PYTHON_IMAGE" 2>/dev/null || echo "$PYTHON_IMAGE")

if [ "${1:-}" = --postgres ]; then
  key=$( { cat container/postgres/*; echo "base $base_id"; } | sha256sum | cut -c1-16)
  tag=localhost/ikepki-postgres:15-$key
  if ! exists "$tag"; then
    log "building $tag"
    net=(); [ "$ENGINE" = podman ] && net=(--network host --pull=never)
    "$ENGINE" build "${net[@]}" --tag "$tag" --build-arg "BASE=$PYTHON_IMAGE" container/postgres >&2
  fi
  echo "$tag"; exit 0
fi

# -- the content key ------------------------------------------------------------------------
# Everything the Dockerfile copies (minus what .dockerignore drops) plus the Dockerfile, this
# script and the base image's id.
inputs() {
  find ca enrollment ocsp gateway hsm-config -type f \
    ! -path '*/__pycache__/*' ! -name '*.py[cod]' ! -name '*.pem' ! -name '*.key' ! -name '*.pin' -print
  ls pyproject.toml README* LICENSE* Dockerfile .dockerignore container/build-image.sh 2>/dev/null
}
key=$( { inputs | LC_ALL=C sort | xargs -d '\n' sha256sum; echo "base $base_id"; } | sha256sum | cut -c1-16)
tag=$IMAGE:src-$key
if exists "$tag"; then
  "$ENGINE" tag "$tag" "$IMAGE:latest"
  log "up to date: $tag"
  echo "$tag"; exit 0
fi

# -- build ----------------------------------------------------------------------------------
args=(build --tag "$tag" --tag "$IMAGE:latest" --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE"
      --build-arg "IKEPKI_SOURCE_KEY=$key" --file Dockerfile)
if [ "$ENGINE" = podman ]; then
  # apt/pip inside the build reach the mirrors as the host does (host network, host CA bundle:
  # on machines behind a TLS-intercepting proxy PyPI is only trusted through it).
  args+=(--network host --layers --pull=never
         --volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/host-ca-bundle.crt:ro
         --build-arg PIP_CERT=/etc/ssl/certs/host-ca-bundle.crt)
else
  export DOCKER_BUILDKIT=1
fi
log "$ENGINE ${args[*]} ."
start=$(date +%s)
"$ENGINE" "${args[@]}" . >&2
log "built $tag in $(( $(date +%s) - start )) s"
# earlier source keys are superseded: drop their tags once a day old (the layer cache stays); younger
# ones may belong to another checkout's test run on this machine, which would lose its image mid-run
for old in $("$ENGINE" images --filter until=24h --filter "reference=$IMAGE" --format '{{.Repository}}:{{.Tag}}' 2>/dev/null | grep ":src-" | grep -vx "$tag"); do
  "$ENGINE" rmi "$old" >/dev/null 2>&1 || true
done
echo "$tag"
