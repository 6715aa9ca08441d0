#!/usr/bin/env bash
# Deploy one release on the host and roll back to the previous one when it does not become
# healthy. CI copies this script, the deploy Compose file and the new release file (image
# digests) to the host and runs it there; an operator can run it the same way.
#
#   scripts/deploy.sh NEW_RELEASE_ENV
#
# Run from the deploy directory (~/rps): it holds .env (the host's secrets), release.env (the
# release now running, if any) and the Compose file (DEPLOY_COMPOSE_FILE, default
# docker-compose.deploy.yml). The new release becomes release.env only once every service with
# a health check is healthy; otherwise the previous release.env is started again and the script
# exits 1 ("rolled back"), or 2 when there was nothing to roll back to.
#
# Settings (environment): DEPLOY_COMPOSE_FILE, DEPLOY_HEALTH_TIMEOUT (seconds, default 600), DEPLOY_POLL_S (5),
# DEPLOY_ENV_FILE (default .env; "-" for none), DOCKER_COMPOSE (default `docker compose`).
set -euo pipefail

new_release="${1:?usage: deploy.sh NEW_RELEASE_ENV}"
[[ -f "$new_release" ]] || { echo "error: release file $new_release does not exist" >&2; exit 2; }
compose_file="${DEPLOY_COMPOSE_FILE:-docker-compose.deploy.yml}"
timeout="${DEPLOY_HEALTH_TIMEOUT:-600}"
poll="${DEPLOY_POLL_S:-5}"
env_file="${DEPLOY_ENV_FILE:-.env}"

compose() { # RELEASE_FILE ARGS...
  local release="$1"
  shift
  local envs=()
  [[ "$env_file" == "-" ]] || envs+=(--env-file "$env_file")
  # shellcheck disable=SC2086 # DOCKER_COMPOSE is a command with its arguments
  ${DOCKER_COMPOSE:-docker compose} "${envs[@]}" --env-file "$release" -f "$compose_file" "$@"
}

# Every running service that has a health check reports healthy, and none has exited non-zero.
healthy() { # RELEASE_FILE
  local states
  states="$(compose "$1" ps --all --format '{{.Service}} {{.State}} {{.Health}} {{.ExitCode}}')" || return 1
  [[ -n "$states" ]] || return 1
  ! grep -Eq ' (starting|unhealthy)( |$)|^[^ ]+ (restarting|dead)|^[^ ]+ exited [^ ]* *[1-9]' <<<"$states"
}

start() { # RELEASE_FILE
  compose "$1" up -d --pull missing --remove-orphans
  local waited=0
  until healthy "$1"; do
    if ((waited >= timeout)); then
      compose "$1" ps --all >&2 || true
      return 1
    fi
    sleep "$poll"
    waited=$((waited + poll))
  done
  compose "$1" ps
}

release_name() { grep -E '^TAG=' "$1" | cut -d= -f2- || true; }

previous=""
if [[ -f release.env ]]; then
  previous="release.previous.env"
  cp release.env "$previous"
fi
if start "$new_release"; then
  [[ "$(realpath "$new_release")" == "$(realpath -m release.env)" ]] || cp "$new_release" release.env
  echo "deployed $(release_name release.env)"
  exit 0
fi
echo "error: release $(release_name "$new_release") did not become healthy within ${timeout}s" >&2
compose "$new_release" logs --tail 60 >&2 || true
if [[ -z "$previous" ]]; then
  echo "error: no previous release to roll back to" >&2
  exit 2
fi
echo "rolling back to $(release_name "$previous")" >&2
cp "$previous" release.env
if start release.env; then
  echo "rolled back to $(release_name release.env)" >&2
  exit 1
fi
echo "error: the previous release $(release_name release.env) is not healthy either" >&2
exit 3
