#!/usr/bin/env bash
# The one Docker Engine the project's Compose tests (and `docker compose` by hand) use on a
# machine without a system daemon: Debian's dockerd with overlay2, everything under one fixed
# directory so every worktree, test run and CI run on this machine shares one daemon and its
# image cache.
#
#   scripts/docker_engine.sh start   # install docker.io if missing, start dockerd unless it runs; prints DOCKER_HOST=...
#   scripts/docker_engine.sh env     # prints DOCKER_HOST=... (exit 1 when the daemon does not answer)
#   scripts/docker_engine.sh status  # exit 0 when the daemon answers
#   scripts/docker_engine.sh stop    # stop the daemon this script started
#
# `eval "$(scripts/docker_engine.sh start)"` points the docker CLI and Compose at it.
# RPS_DOCKER_DIR moves the directory (default /tmp/rps-docker); never start a second daemon
# beside it: both would fight over the docker0 bridge and iptables chains. Where an Engine
# already runs (a CI runner's), RPS_DOCKER_HOST names it and this script only checks it answers.
set -euo pipefail

DIR="${RPS_DOCKER_DIR:-/tmp/rps-docker}"
SOCK="$DIR/docker.sock"
export DOCKER_HOST="${RPS_DOCKER_HOST:-unix://$SOCK}"

answers() { timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

install_engine() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  ((${#missing[@]})) || return 0
  echo "installing Debian packages: ${missing[*]}" >&2
  local sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

start() {
  if answers; then
    echo "DOCKER_HOST=$DOCKER_HOST"
    return 0
  fi
  if [[ -n "${RPS_DOCKER_HOST:-}" ]]; then
    echo "error: no Docker Engine answers at RPS_DOCKER_HOST=$RPS_DOCKER_HOST" >&2
    exit 1
  fi
  install_engine
  mkdir -p "$DIR"
  # A stale pid file from a killed daemon makes dockerd refuse to start.
  if [[ -f "$DIR/pid" ]] && ! kill -0 "$(cat "$DIR/pid")" 2>/dev/null; then
    rm -f "$DIR/pid" "$SOCK"
  fi
  if [[ ! -f "$DIR/pid" ]]; then
    # setsid: the daemon outlives the shell (and the pytest run) that started it.
    setsid dockerd \
      --storage-driver=overlay2 \
      --data-root "$DIR/root" \
      --exec-root "$DIR/exec" \
      --pidfile "$DIR/pid" \
      -H "$DOCKER_HOST" \
      >>"$DIR/dockerd.log" 2>&1 </dev/null &
  fi
  for _ in $(seq 1 60); do
    if answers; then
      echo "DOCKER_HOST=$DOCKER_HOST"
      return 0
    fi
    sleep 1
  done
  tail -n 30 "$DIR/dockerd.log" >&2 || true
  echo "error: dockerd did not answer at $DOCKER_HOST within 60 s; its log is $DIR/dockerd.log" >&2
  exit 1
}

stop() {
  [[ -z "${RPS_DOCKER_HOST:-}" ]] || return 0 # not ours to stop
  [[ -f "$DIR/pid" ]] || return 0
  local pid
  pid="$(cat "$DIR/pid")"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 30); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
  done
  rm -f "$DIR/pid"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  env)
    answers || { echo "error: no Docker Engine answers at $DOCKER_HOST; run scripts/docker_engine.sh start" >&2; exit 1; }
    echo "DOCKER_HOST=$DOCKER_HOST"
    ;;
  status) answers ;;
  *)
    echo "usage: $0 start|stop|env|status" >&2
    exit 2
    ;;
esac
