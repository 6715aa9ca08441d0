#!/usr/bin/env bash
# The MLflow tracking server and model registry, natively (scripts/services/30-mlflow.sh,
# tests/support/stack.py) and in its image. Backend store: PostgreSQL (MLFLOW_DATABASE_URL;
# the schema migrates itself on first start). Artifacts: proxied through the server to
# MLFLOW_ARTIFACTS_DESTINATION, a folder or s3://bucket/prefix (then MLFLOW_S3_ENDPOINT_URL
# is S3_ENDPOINT_URL). MLflow's own variables already set in the environment (Compose) win.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

exports="$(python "$ROOT/scripts/env_export.py" mlflow)"
eval "$exports"

python "$ROOT/scripts/ensure_service_db.py" "$MLFLOW_BACKEND_STORE_URI"
if [[ "$MLFLOW_ARTIFACTS_DESTINATION" != *://* ]]; then
  mkdir -p "$MLFLOW_ARTIFACTS_DESTINATION"
fi

# MLFLOW_AUTH=true: MLflow's basic-auth app, its users provisioned from the settings first.
app=()
if [[ "$MLFLOW_BASIC_AUTH_APP" == "1" ]]; then
  python "$ROOT/mlflow/provision_auth.py" "$MLFLOW_AUTH_CONFIG_PATH"
  app=(--app-name basic-auth)
fi

# One worker and no job consumers: ~0.5 GB instead of ~3.6 GB. --allowed-hosts lists the Host
# headers served (others get 403 on the API while /health still answers).
exec mlflow server \
  --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
  --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" \
  --host "$MLFLOW_HOST" \
  --port "$MLFLOW_PORT" \
  --workers "$MLFLOW_WORKERS" \
  --allowed-hosts "$MLFLOW_SERVER_ALLOWED_HOSTS" \
  "${app[@]}"
