"""The Streamlit UI: pages under `views/`, shared widgets in `ui`, the backend client in `client`."""
