"""Label review: with LABEL_QUARANTINE on, anonymous labels wait here until an operator
approves them; only approved labels are trained on."""

from __future__ import annotations

import streamlit as st

from frontend import ui
from frontend.client import BackendError

st.title("Label review")
if not ui.operator_login("review"):
    st.info("Reviewing labels needs the operator login.", icon="🔒")
    st.stop()

try:
    pending = ui.client().labels_for_review(limit=60)
except BackendError as exc:
    ui.show_error(exc)
    st.stop()
if not pending:
    st.success("Nothing waits for review.", icon="✅")
    st.stop()

st.caption(f"{len(pending)} labels wait, oldest first. Approved labels are used by the next retrain.")
decisions: dict[str, str] = {}
per_row = 4
for start in range(0, len(pending), per_row):
    cols = st.columns(per_row)
    for col, item in zip(cols, pending[start : start + per_row], strict=False):
        sha = item["image_sha256"]
        with col.container(border=True):
            thumb = ui.thumbnail(sha, st.session_state.get(ui.OPERATOR_KEY, ""))
            if thumb:
                st.image(thumb, width="stretch")
            predicted = item.get("predicted_label")
            said = f" (model said {predicted})" if predicted and predicted != item["label"] else ""
            st.markdown(f"**{ui.class_title(item['label'])}**{said} · {item['source']}")
            choice = st.radio(
                "Decision",
                ["wait", "approve", "reject"],
                key=f"review-{sha}",
                horizontal=True,
                label_visibility="collapsed",
            )
            if choice != "wait":
                decisions[sha] = "approved" if choice == "approve" else "rejected"

if st.button(f"Apply {len(decisions)} decisions", type="primary", disabled=not decisions):
    try:
        for decision in ("approved", "rejected"):
            chosen = [sha for sha, d in decisions.items() if d == decision]
            if chosen:
                ui.client().review_labels(chosen, decision)
    except BackendError as exc:
        ui.show_error(exc)
    else:
        st.rerun()
