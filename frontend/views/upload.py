"""Upload: classify a photo, confirm or correct the answer, or add a labelled example."""

from __future__ import annotations

import streamlit as st

from frontend import ui

st.title("Upload a photo")
st.caption(
    "The model says which gesture a hand shows. Confirm or correct its answer: every "
    "label you give goes into the next model's training data."
)

classify_tab, example_tab = st.tabs(
    [":material/psychology: Classify a photo", ":material/add_photo_alternate: Add a labelled example"]
)

with classify_tab:
    photo = st.file_uploader(
        "Photo of one hand showing rock, paper or scissors",
        type=["jpg", "jpeg", "png"],
        key="upload-file",
        help=f"JPEG or PNG, up to {ui.settings().max_upload_bytes / 2**20:.0f} MiB.",
    )
    if photo is None:
        st.session_state.pop("upload-result", None)
        st.info("Drop a photo above, or use **Webcam capture** to take one.", icon="🖐️")
    else:
        data = photo.getvalue()
        state = ui.classify_once(data, photo.name, "upload-result")
        if state is not None:
            ui.prediction_card(state, "upload-result", image=data)

with example_tab:
    st.write(
        "Know the answer already? Add the photo with its label: it goes straight into the "
        "training data without a prediction."
    )
    ui.labelled_example_form("upload-example")
