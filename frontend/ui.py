"""Widgets the pages share: the backend client, error messages, the prediction card,
the confirm-or-correct buttons and the retrain counter."""

from __future__ import annotations

import hashlib
from typing import Any

import altair as alt
import cv2
import numpy as np
import pandas as pd
import streamlit as st

from frontend.client import BackendClient, BackendError, BackendRejected, BackendUnavailable
from utils.settings import CLASS_NAMES, Settings, get_settings

CLASS_EMOJI = {"rock": "✊", "paper": "✋", "scissors": "✌️"}
CLASS_HEX = {"rock": "#eb823c", "paper": "#32a0e1", "scissors": "#3cbe5a"}
CLIENT_KEY = "backend_client"
THUMB_SIDE = 160
OPERATOR_KEY = "operator_token"


def settings() -> Settings:
    return get_settings()


@st.cache_resource(show_spinner=False)
def _shared_client(base_url: str, timeout: float) -> BackendClient:
    return BackendClient(base_url, timeout=timeout)


def client() -> BackendClient:
    """The backend client for this browser session; a session may carry its own (tests put a
    fake one there). It forwards the visitor's address and, once given, the operator login."""
    own = st.session_state.get(CLIENT_KEY)
    if own is None:
        s = settings()
        own = _shared_client(s.backend_url, s.ui_request_timeout_s)
    return own.with_headers(session_headers())


def session_headers() -> dict[str, str]:
    headers = {}
    chain = visitor_chain()
    if chain:
        headers["X-Forwarded-For"] = chain
    token = st.session_state.get(OPERATOR_KEY)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def visitor_chain() -> str | None:
    """X-Forwarded-For as a proxy writes it: what the HTTPS proxy sent, then the address this
    server saw. The backend trusts the chain only from TRUSTED_PROXIES and reads it from the
    right, so a visitor's own entries never pick its rate-limit key."""
    try:
        received = st.context.headers.get("X-Forwarded-For")
        peer = st.context.ip_address
    except Exception:  # noqa: BLE001 - no browser session (AppTest, threads)
        return None
    received = received if isinstance(received, str) else ""
    peer = peer if isinstance(peer, str) else ""
    parts = [p.strip() for p in received.split(",") if p.strip()] + ([peer] if peer else [])
    return ", ".join(parts) or None


def operator() -> bool:
    return bool(st.session_state.get(OPERATOR_KEY))


def operator_login(key: str) -> bool:
    """The operators' login form (OPERATOR_TOKEN), checked against the backend; True once in."""
    if operator():
        if st.button("Log out", icon=":material/logout:", key=f"{key}-logout"):
            st.session_state.pop(OPERATOR_KEY, None)
            st.rerun()
        return True
    with st.form(f"{key}-login"):
        token = st.text_input("Operator token", type="password", help="OPERATOR_TOKEN of this deployment")
        if st.form_submit_button("Log in", icon=":material/login:") and token:
            try:
                client().with_headers({"Authorization": f"Bearer {token}"}).labels_for_review(limit=1)
            except BackendRejected:
                st.error("That operator token is wrong.", icon="🔒")
                return False
            except BackendError as exc:
                show_error(exc)
                return False
            st.session_state[OPERATOR_KEY] = token
            st.rerun()
    return False


def class_title(label: str) -> str:
    return f"{CLASS_EMOJI.get(label, '')} {label.title()}".strip()


def show_error(exc: BackendError) -> None:
    """One place that turns backend failures into a message (never a traceback)."""
    if isinstance(exc, BackendUnavailable):
        st.error(exc.message, icon="🔌")
    else:
        st.warning(f"The backend refused this: {exc.message}", icon="⚠️")


def classify_once(image: bytes, filename: str, slot: str) -> dict[str, Any] | None:
    """Predict an image once per distinct content: reruns reuse the stored answer.

    Returns the slot's state `{digest, result, feedback}` or None after showing an error.
    """
    digest = hashlib.sha256(image).hexdigest()
    state = st.session_state.get(slot)
    if state and state["digest"] == digest:
        return state
    try:
        with st.spinner("Classifying…"):
            result = client().predict(image, filename=filename)
    except BackendError as exc:
        st.session_state.pop(slot, None)
        show_error(exc)
        return None
    state = {"digest": digest, "result": result, "feedback": None, "feedback_error": None}
    st.session_state[slot] = state
    return state


def probability_chart(probabilities: dict[str, float], predicted: str) -> alt.Chart:
    df = pd.DataFrame(
        {
            "class": [class_title(c) for c in CLASS_NAMES],
            "name": list(CLASS_NAMES),
            "probability": [float(probabilities.get(c, 0.0)) for c in CLASS_NAMES],
        }
    )
    df["text"] = df["probability"].map(lambda p: f"{p:.1%}")
    base = alt.Chart(df).encode(
        y=alt.Y("class:N", sort=None, title=None, axis=alt.Axis(labelFontSize=14, ticks=False, domain=False)),
        x=alt.X("probability:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%", title=None)),
    )
    bars = base.mark_bar(cornerRadiusEnd=4, height=22).encode(
        color=alt.Color(
            "name:N",
            scale=alt.Scale(domain=list(CLASS_HEX), range=list(CLASS_HEX.values())),
            legend=None,
        ),
        opacity=alt.condition(alt.datum.name == predicted, alt.value(1.0), alt.value(0.45)),
        tooltip=[alt.Tooltip("class:N"), alt.Tooltip("probability:Q", format=".2%")],
    )
    labels = base.mark_text(align="left", dx=4, fontSize=13).encode(text="text:N")
    return (bars + labels).properties(height=130)


def with_hand(image: bytes, hand: dict, label: str):
    """The uploaded image (RGB array) with the backend's hand box and landmarks drawn on it."""
    import cv2
    import numpy as np

    from inference.overlay import CLASS_COLORS, draw_hand

    bgr = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        return image
    return cv2.cvtColor(draw_hand(bgr, hand, CLASS_COLORS.get(label, (160, 160, 160))), cv2.COLOR_BGR2RGB)


def prediction_card(state: dict[str, Any], slot: str, image: bytes | None = None) -> None:
    """Class, confidence and probabilities (next to the image when given); then feedback."""
    result = state["result"]
    label = result["label"]
    hand = result.get("hand")
    if image is not None:
        left, right = st.columns([1, 1.25], gap="large")
        left.image(with_hand(image, hand, label) if hand else image, width="stretch")
        if hand and not hand.get("found"):
            left.caption("No hand found: the whole image was classified.")
        elif hand:
            left.caption(f"Hand found ({hand['source']}, presence {hand['presence']:.0%}).")
    else:
        right = st.container()
    with right:
        st.markdown(
            f"<div style='font-size:0.9rem;opacity:0.7'>Prediction</div>"
            f"<div data-testid='rps-prediction' style='font-size:2.4rem;font-weight:700;"
            f"color:{CLASS_HEX.get(label, 'inherit')}'>{class_title(label)}</div>",
            unsafe_allow_html=True,
        )
        st.metric("Confidence", f"{result['confidence']:.1%}")
        st.altair_chart(probability_chart(result["probabilities"], label), width="stretch")
        st.caption(
            f"Model `{result['model_version']}` · {result['latency_ms']:.1f} ms · prediction #{result['prediction_id']}"
        )
    feedback_buttons(state, slot)
    retrain_progress(result["predictions_since_retrain"], result["retrain_threshold"], just_predicted=True)


def _send_feedback(slot: str, label: str) -> None:
    state = st.session_state.get(slot)
    if not state:
        return
    try:
        state["feedback"] = client().feedback(state["result"]["prediction_id"], label)
        state["feedback_error"] = None
    except BackendError as exc:
        state["feedback_error"] = exc


def feedback_buttons(state: dict[str, Any], slot: str) -> None:
    """Confirm the prediction or correct it in one click; the answer goes to `POST /feedback`."""
    predicted = state["result"]["label"]
    answered = state["feedback"]["label"] if state.get("feedback") else None
    st.markdown("**Is this right?** Your answer becomes a training label for the next model.")
    cols = st.columns(len(CLASS_NAMES))
    for col, name in zip(cols, CLASS_NAMES, strict=True):
        text = f"{CLASS_EMOJI[name]} Yes, {name}" if name == predicted else f"{CLASS_EMOJI[name]} No, it's {name}"
        col.button(
            text,
            key=f"{slot}-feedback-{name}",
            type="primary" if name == (answered or predicted) else "secondary",
            on_click=_send_feedback,
            args=(slot, name),
            width="stretch",
        )
    if state.get("feedback_error"):
        show_error(state["feedback_error"])
    elif state.get("feedback"):
        fb = state["feedback"]
        if fb["correct"]:
            st.success(f"Saved: confirmed as **{class_title(fb['label'])}**. Thank you!", icon="✅")
        else:
            st.success(
                f"Saved: corrected to **{class_title(fb['label'])}** (the model said {fb['predicted_label']}).",
                icon="✏️",
            )


def retrain_progress(since: int, threshold: int, *, just_predicted: bool = False) -> None:
    """How far the prediction count is from the next retrain."""
    threshold = max(int(threshold), 1)
    remaining = max(threshold - int(since), 0)
    if just_predicted and since == 0:
        st.info(
            f"This prediction completed a batch of {threshold}: a retrain has been requested. "
            "Follow it on the System page.",
            icon="🔁",
        )
        return
    noun = "prediction" if remaining == 1 else "predictions"
    st.progress(
        min(since / threshold, 1.0),
        text=f"{remaining} more {noun} until the next retrain ({since} of {threshold} since the last one)",
    )


def labelled_example_form(key: str) -> None:
    """Add a photo with a human label to the training data (`POST /upload`)."""
    with st.form(key, clear_on_submit=True, border=True):
        upload = st.file_uploader("Photo of one hand", type=["jpg", "jpeg", "png"], key=f"{key}-file")
        label = st.radio(
            "Gesture shown", CLASS_NAMES, format_func=class_title, horizontal=True, key=f"{key}-label", index=None
        )
        submitted = st.form_submit_button("Add to the training data", type="primary")
    if not submitted:
        return
    if upload is None:
        st.warning("Choose a photo first.", icon="📷")
        return
    if label is None:
        st.warning("Choose the gesture the photo shows.", icon="✋")
        return
    try:
        out = client().upload(upload.getvalue(), label, filename=upload.name)
    except BackendError as exc:
        show_error(exc)
        return
    what = "New image added" if out["new_image"] else "Image already known; its label was updated"
    st.success(f"{what}: **{class_title(out['label'])}** (`{out['image_sha256'][:12]}`).", icon="📥")


@st.cache_data(show_spinner=False, max_entries=500)
def thumbnail(sha256: str, login: str) -> bytes | None:
    """A small JPEG of a stored image; content-addressed, so caching by hash is right. The
    login is part of the key: a cached photo is only ever served to the login that fetched it."""
    try:
        data = client().image(sha256)
    except BackendError:
        return None
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        return None
    scale = THUMB_SIDE / max(img.shape[:2])
    if scale < 1:
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return buf.tobytes() if ok else None
