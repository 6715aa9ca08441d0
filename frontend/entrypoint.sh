#!/usr/bin/env bash
# Start the Streamlit UI. Host/port from STREAMLIT_HOST/STREAMLIT_PORT (localhost:8501 by
# default); HTTPS when STREAMLIT_SSL_CERT_FILE and STREAMLIT_SSL_KEY_FILE are set (browsers
# only grant camera access to pages served over HTTPS or from localhost).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY="python"; fi
fi

# Refuse in the browser what the backend would refuse anyway (MAX_UPLOAD_BYTES, in whole MiB).
max_upload_mb="$("$PY" -c 'from utils.settings import get_settings; print(max(1, -(-get_settings().max_upload_bytes // 2**20)))')"

args=(
  --server.address "${STREAMLIT_HOST:-127.0.0.1}"
  --server.port "${STREAMLIT_PORT:-8501}"
  --server.headless true
  --server.fileWatcherType none
  --server.maxUploadSize "$max_upload_mb"
  --browser.gatherUsageStats false
  --client.toolbarMode minimal
  --theme.primaryColor "#e4572e"
)
cert="${STREAMLIT_SSL_CERT_FILE:-}" key="${STREAMLIT_SSL_KEY_FILE:-}"
if [[ -n "$cert" || -n "$key" ]]; then
  [[ -f "$cert" && -f "$key" ]] || { echo "error: STREAMLIT_SSL_CERT_FILE and STREAMLIT_SSL_KEY_FILE must both name existing files" >&2; exit 2; }
  args+=(--server.sslCertFile "$cert" --server.sslKeyFile "$key")
fi
exec "$PY" -m streamlit run frontend/app.py "${args[@]}" "$@"
