# The MLflow tracking server and registry (mlflow/entrypoint.sh; PostgreSQL database `mlflow`).
start_service mlflow "http://127.0.0.1:$("$PY" "$ROOT/scripts/env_export.py" mlflow --get MLFLOW_PORT)/health" \
  bash mlflow/entrypoint.sh
