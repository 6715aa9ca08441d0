#!/usr/bin/env bash
# Shared helpers for the native stack: pid files and logs under .run/, idempotent starts.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN="$ROOT/.run"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
mkdir -p "$RUN"
export PATH="$VENV/bin:$PATH"
export DVC_NO_ANALYTICS=1

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

is_running() { # NAME
  local pidfile="$RUN/$1.pid"
  [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

# start_service NAME HEALTH_URL CMD...  (HEALTH_URL may be "-" for none)
start_service() {
  local name="$1" health="$2"; shift 2
  if is_running "$name"; then
    say "$name already running (pid $(cat "$RUN/$name.pid"))"
    return 0
  fi
  say "starting $name"
  # `exec`: the recorded pid is the service itself, leader of its own process group (setsid),
  # so stop_service's group kill reaches its children; without it bash forks first and the
  # pid file names a wrapper shell outside that group.
  (cd "$ROOT" && exec setsid "$@" >"$RUN/$name.log" 2>&1 & echo $! >"$RUN/$name.pid")
  if [[ "$health" != "-" ]]; then
    wait_http "$name" "$health" "${START_TIMEOUT:-120}"
  fi
}

wait_http() { # NAME URL TIMEOUT
  local name="$1" url="$2" timeout="$3" waited=0
  until curl -fsS -o /dev/null "$url" 2>/dev/null; do
    if ! is_running "$name"; then
      tail -n 40 "$RUN/$name.log" >&2 || true
      die "$name exited during start-up; its log is $RUN/$name.log"
    fi
    sleep 1; waited=$((waited + 1))
    (( waited < timeout )) || die "$name did not answer $url within ${timeout}s; see $RUN/$name.log"
  done
  say "$name is up at $url"
}

stop_service() { # NAME
  local pidfile="$RUN/$1.pid" pid
  [[ -f "$pidfile" ]] || return 0
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    say "stopping $1 (pid $pid)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}
