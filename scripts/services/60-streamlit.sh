# The Streamlit UI (talks to the backend over HTTP; BACKEND_URL from .env/settings).
start_service streamlit "http://127.0.0.1:${STREAMLIT_PORT:-8501}/_stcore/health" bash frontend/entrypoint.sh
