#!/usr/bin/env bash
# Airflow 3, natively (scripts/services/40-airflow.sh, tests/support/stack.py) and in its image:
#   airflow/entrypoint.sh init|api-server|scheduler|dag-processor|celery-worker QUEUES|COMMAND [ARGS...]
# Configuration comes from utils/settings.py through scripts/env_export.py; an AIRFLOW__*
# variable already set in the environment (Compose) wins. `init` creates the metadata database
# if needed and migrates it; run it once before the three long-running components.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

exports="$(python "$ROOT/scripts/env_export.py" airflow)"
eval "$exports"
mkdir -p "$AIRFLOW_HOME" "$AIRFLOW__LOGGING__BASE_LOG_FOLDER"

# The simple auth manager's user → password file, from AIRFLOW_ADMIN_PASSWORD and
# AIRFLOW_PASSWORD; replaced atomically because a running api-server may be reading it.
write_passwords_file() {
  local file="$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"
  (umask 077 && python "$ROOT/scripts/env_export.py" airflow --passwords-json >"$file.tmp")
  mv -f "$file.tmp" "$file"
}

case "${1:-}" in
  init)
    python "$ROOT/scripts/ensure_service_db.py" "$AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"
    write_passwords_file
    exec airflow db migrate
    ;;
  api-server)
    # Written here too: in Compose, init runs in another container.
    write_passwords_file
    exec airflow api-server -H "$AIRFLOW__API__HOST" -p "$AIRFLOW__API__PORT"
    ;;
  scheduler)
    # --skip-serve-logs: the log server binds every interface on a fixed port (8793); task
    # logs are files under AIRFLOW__LOGGING__BASE_LOG_FOLDER, read by the api-server directly.
    exec airflow scheduler --skip-serve-logs
    ;;
  dag-processor)
    exec airflow dag-processor
    ;;
  celery-worker)
    # CeleryExecutor only (docker-compose.celery.yml): QUEUES is a comma-separated list, e.g.
    # `default` or `training`; the same log-server reason as the scheduler's.
    [[ "$AIRFLOW__CORE__EXECUTOR" == "CeleryExecutor" ]] \
      || { echo "celery-worker needs AIRFLOW_EXECUTOR=CeleryExecutor (it is $AIRFLOW__CORE__EXECUTOR)" >&2; exit 2; }
    exec airflow celery worker --skip-serve-logs --queues "${2:?usage: $0 celery-worker QUEUES}"
    ;;
  "")
    echo "usage: $0 init|api-server|scheduler|dag-processor|celery-worker QUEUES|COMMAND [ARGS...]" >&2
    exit 2
    ;;
  *)
    # Any other command runs with the same derived configuration: the KubernetesExecutor
    # starts each task pod with its own command, the Helm chart its init containers with theirs
    # (deploy/k8s/airflow/values.yaml).
    exec "$@"
    ;;
esac
