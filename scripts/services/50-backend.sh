# The FastAPI backend (migrates at start-up, loads the served model).
start_service backend "http://127.0.0.1:${BACKEND_PORT:-8000}/health" "$PY" main.py
