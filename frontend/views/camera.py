"""Webcam capture: take a snapshot, classify it, confirm or correct the answer."""

from __future__ import annotations

import streamlit as st

from frontend import ui

st.title("Webcam capture")
st.caption("Take a photo of one hand with your camera; the model classifies the snapshot.")

camera_col, result_col = st.columns([1, 1], gap="large")
with camera_col:
    photo = st.camera_input("Show one hand to the camera, then take a photo", key="camera-photo")
with result_col:
    if photo is None:
        st.session_state.pop("camera-result", None)
        st.info(
            "Allow the browser to use your camera, hold up rock, paper or scissors against a plain "
            "background and press **Take Photo**.",
            icon="📷",
        )
    else:
        state = ui.classify_once(photo.getvalue(), "webcam-photo.jpg", "camera-result")
        if state is not None:
            ui.prediction_card(state, "camera-result")
