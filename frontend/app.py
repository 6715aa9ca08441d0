"""Streamlit entry point: `streamlit run frontend/app.py` (see `frontend/entrypoint.sh`).

The UI reaches the backend over HTTP only (`frontend/client.py`); its address and every
other knob come from `utils.settings`.
"""

from __future__ import annotations

import logging

import streamlit as st

from frontend import ui
from frontend.client import BackendError

st.set_page_config(page_title="Rock · Paper · Scissors", page_icon="✊", layout="wide")


def configure_logging(level: str) -> None:
    """Log the UI's own messages (live stream stats) next to Streamlit's, once per process."""
    logger = logging.getLogger("frontend")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False


def backend_status() -> None:
    """A small badge in the sidebar: is the backend ready, and which model does it serve?"""
    try:
        ready = ui.client().ready(timeout=3.0)
    except BackendError as exc:
        st.markdown(":red[●] **Backend unavailable**")
        st.caption(exc.message.removeprefix("Backend unavailable: "))
        return
    st.markdown(":green[●] **Backend ready**")
    st.caption(f"Model `{ready['model_version']}`")


configure_logging(ui.settings().log_level)
pages = [
    st.Page("views/upload.py", title="Upload", icon=":material/upload_file:", default=True),
    st.Page("views/camera.py", title="Webcam capture", icon=":material/photo_camera:"),
    st.Page("views/live.py", title="Live", icon=":material/videocam:"),
    st.Page("views/system.py", title="System", icon=":material/monitoring:"),
    st.Page("views/review.py", title="Label review", icon=":material/fact_check:"),
]
page = st.navigation(pages)
with st.sidebar:
    st.markdown("### ✊ ✋ ✌️ Rock · Paper · Scissors")
    st.caption("A gesture classifier that learns from your corrections.")
    backend_status()
page.run()
