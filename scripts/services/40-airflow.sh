# Airflow 3 (airflow/entrypoint.sh): migrate the metadata database, then api-server, scheduler
# and dag-processor as separate processes. Waits until the api-server reports the scheduler and
# the dag-processor healthy, so a DAG run triggered next is picked up.
airflow_port="$("$PY" "$ROOT/scripts/env_export.py" airflow --get AIRFLOW__API__PORT)"
if ! is_running airflow-api-server; then
  say "migrating the Airflow metadata database (log: $RUN/airflow-init.log)"
  bash "$ROOT/airflow/entrypoint.sh" init >"$RUN/airflow-init.log" 2>&1 \
    || { tail -n 40 "$RUN/airflow-init.log" >&2; die "airflow init failed; see $RUN/airflow-init.log"; }
fi
start_service airflow-api-server "http://127.0.0.1:$airflow_port/api/v2/monitor/health" \
  bash airflow/entrypoint.sh api-server
start_service airflow-scheduler - bash airflow/entrypoint.sh scheduler
start_service airflow-dag-processor - bash airflow/entrypoint.sh dag-processor
say "waiting for the Airflow scheduler and dag-processor heartbeats"
"$PY" - "http://127.0.0.1:$airflow_port/api/v2/monitor/health" "${START_TIMEOUT:-120}" <<'PY' \
  || die "Airflow is not healthy; see $RUN/airflow-scheduler.log and $RUN/airflow-dag-processor.log"
import sys
import time

import httpx

url, timeout = sys.argv[1], float(sys.argv[2])
deadline = time.monotonic() + timeout
while True:
    health = httpx.get(url, timeout=5).json()
    if all((health.get(c) or {}).get("status") == "healthy" for c in ("metadatabase", "scheduler", "dag_processor")):
        break
    if time.monotonic() > deadline:
        sys.exit(f"unhealthy after {timeout:.0f}s: {health}")
    time.sleep(1)
PY
unset airflow_port
