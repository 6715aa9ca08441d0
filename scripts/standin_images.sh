#!/usr/bin/env bash
# Base images for machines that cannot pull from any image registry (the development machines
# and CI here): for each third-party image the Dockerfiles and the Compose test need, use the
# upstream image when the engine has it or can pull it, else build a local stand-in from Debian
# packages (debootstrap + apt), once; later calls reuse it.
#
#   scripts/standin_images.sh [ENV_FILE]
#
# Prints (and writes to ENV_FILE when given) the image to use for each, as build arguments /
# Compose variables: PYTHON_IMAGE, POSTGRES_IMAGE, PROMETHEUS_IMAGE, CADDY_IMAGE, REDIS_IMAGE. The
# stand-ins trust the host's CA bundle, so apt and pip inside builds reach the package registries through
# the same TLS interception the host sees. docs/deploy.md lists which images are stand-ins.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
eval "$(bash "$ROOT/scripts/docker_engine.sh" env)"
export DOCKER_HOST

DEBIAN=localhost/rps-standin-debian:bookworm
HOST_CA=/etc/ssl/certs/ca-certificates.crt
WORK="${RPS_DOCKER_DIR:-/tmp/rps-docker}/standin"

have() { docker image inspect "$1" >/dev/null 2>&1; }

# A pull that fails at once here (no registry) but succeeds where Docker Hub answers.
pullable() { timeout 60 docker pull --quiet "$1" >/dev/null 2>&1; }

build_debian() {
  have "$DEBIAN" && return 0
  [[ -s "$HOST_CA" ]] || { echo "error: no CA bundle at $HOST_CA" >&2; exit 1; }
  echo "building $DEBIAN with debootstrap (about a minute)" >&2
  rm -rf "$WORK/rootfs"
  mkdir -p "$WORK"
  debootstrap --variant=minbase --include=ca-certificates bookworm "$WORK/rootfs" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 \
    || { tail -n 20 "$WORK/debootstrap.log" >&2; exit 1; }
  # The host's bundle twice: as the bundle itself, and where update-ca-certificates (run by a
  # later apt install) picks it up again when it regenerates the bundle.
  install -m 0644 "$HOST_CA" "$WORK/rootfs/usr/local/share/ca-certificates/host-bundle.crt"
  install -m 0644 "$HOST_CA" "$WORK/rootfs/etc/ssl/certs/ca-certificates.crt"
  rm -rf "$WORK/rootfs/var/cache/apt/archives/"*.deb "$WORK/rootfs/var/lib/apt/lists/"*
  tar -C "$WORK/rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["bash"]' - "$DEBIAN" >/dev/null
  rm -rf "$WORK/rootfs"
}

# choose VAR UPSTREAM STANDIN DOCKERFILE
choose() {
  local var="$1" upstream="$2" standin="$3" dockerfile="$4" image
  if have "$upstream" || pullable "$upstream"; then
    image="$upstream"
  else
    if ! have "$standin"; then
      build_debian
      echo "building stand-in $standin for $upstream" >&2
      docker build --quiet --build-arg "STANDIN_DEBIAN=$DEBIAN" -t "$standin" \
        -f "$ROOT/scripts/standin/$dockerfile" "$ROOT/scripts/standin" >/dev/null
    fi
    image="$standin"
  fi
  echo "$var=$image"
}

out="$(
  choose PYTHON_IMAGE python:3.11.7-slim-bookworm localhost/rps-standin-python:3.11-bookworm Dockerfile.python
  choose POSTGRES_IMAGE postgres:16.4-bookworm localhost/rps-standin-postgres:15-bookworm Dockerfile.postgres
  choose PROMETHEUS_IMAGE prom/prometheus:v3.5.0 localhost/rps-standin-prometheus:bookworm Dockerfile.prometheus
  choose CADDY_IMAGE caddy:2.10.2-alpine localhost/rps-standin-caddy:bookworm Dockerfile.caddy
  choose REDIS_IMAGE redis:7.4-bookworm localhost/rps-standin-redis:bookworm Dockerfile.redis
)"
echo "$out"
if [[ -n "${1:-}" ]]; then
  echo "$out" >"$1"
fi
