"""Live: the webcam stream over WebRTC, every frame annotated with the latest prediction."""

from __future__ import annotations

import streamlit as st
from streamlit_webrtc import WebRtcMode, webrtc_streamer

from frontend import ui
from frontend.client import BackendError
from frontend.live_stream import BackendPredictor, LiveAnnotator, LocalPredictor, encode_jpeg
from utils.settings import CLASS_NAMES

ANNOTATOR_KEY = "live-annotator"


@st.cache_resource(show_spinner="Loading the local model…")
def local_model(model_dir: str):
    """The TFLite model in this process, loaded once (only when LIVE_USE_LOCAL_MODEL is set)."""
    from inference.model_holder import load_model_dir

    return load_model_dir(model_dir, source=f"local:{model_dir}")


def annotator() -> LiveAnnotator | None:
    """This session's annotator, built on first use from the settings."""
    existing = st.session_state.get(ANNOTATOR_KEY)
    if existing is not None:
        return existing
    s = ui.settings()
    if s.live_use_local_model:
        from inference.model_holder import ModelLoadError

        try:
            predictor = LocalPredictor(local_model(str(s.model_dir)))
        except ModelLoadError as exc:
            st.error(f"The local model could not be loaded: {exc}", icon="🧠")
            return None
    else:
        predictor = BackendPredictor(ui.client())
    created = LiveAnnotator(predictor, s.live_max_predictions_per_second)
    st.session_state[ANNOTATOR_KEY] = created
    return created


def live_panel(live: LiveAnnotator) -> None:
    """What the model sees now, and how fast the stream runs (computed on the server)."""
    snap = live.snapshot()
    if snap["error"]:
        st.error(f"Predictions paused: {snap['error']}", icon="🔌")
    if snap["label"]:
        st.markdown(
            f"<div style='font-size:0.9rem;opacity:0.7'>The model sees</div>"
            f"<div data-testid='rps-live-label' style='font-size:2.2rem;font-weight:700;"
            f"color:{ui.CLASS_HEX[snap['label']]}'>{ui.class_title(snap['label'])} "
            f"<span style='font-size:1.2rem;opacity:0.75'>{snap['confidence']:.0%}</span></div>",
            unsafe_allow_html=True,
        )
    else:
        st.markdown("<div style='opacity:0.7'>Press <b>START</b> to stream your camera.</div>", unsafe_allow_html=True)
    a, b, c = st.columns(3)
    a.metric("Frames", f"{snap['frames']:,}", help="Frames annotated by the server since the page opened")
    b.metric("FPS", f"{snap['fps']:.1f}")
    c.metric("Predictions/s", f"{snap['predictions_per_s']:.1f}")
    frame_ms, pred_ms = snap["frame_ms_p50"], snap["prediction_ms_p50"]
    st.caption(
        f"Per frame (server, median): {frame_ms:.1f} ms · per prediction: {pred_ms:.1f} ms"
        if frame_ms is not None and pred_ms is not None
        else "Latency figures appear once frames arrive."
    )


def save_frame_form(live: LiveAnnotator) -> None:
    """Save the current raw frame with a human label (`POST /upload`)."""
    st.markdown("**Save the current frame as a labelled example**")
    label = st.segmented_control(
        "Gesture shown", CLASS_NAMES, format_func=ui.class_title, key="live-save-label", label_visibility="collapsed"
    )
    if not st.button("Save current frame", key="live-save", icon=":material/add_a_photo:", type="primary"):
        return
    frame = live.latest_frame()
    if frame is None:
        st.warning("There is no frame yet: press START and let the camera run first.", icon="📷")
        return
    if label is None:
        st.warning("Choose the gesture the frame shows, then save.", icon="✋")
        return
    try:
        out = ui.client().upload(encode_jpeg(frame, 95), label, filename="live-frame.jpg")
    except BackendError as exc:
        ui.show_error(exc)
        return
    st.success(f"Frame saved as **{ui.class_title(out['label'])}** (`{out['image_sha256'][:12]}`).", icon="📥")


st.title("Live")
s = ui.settings()
live = annotator()
if live is None:
    st.stop()
st.caption(
    f"Your camera streams to the server over WebRTC; every frame comes back annotated. "
    f"Predictions run at most {s.live_max_predictions_per_second:g} times a second on the "
    f"{live.predictor.description}."
)

video_col, side_col = st.columns([1.5, 1], gap="large")
with video_col:
    ctx = webrtc_streamer(
        key="live",
        mode=WebRtcMode.SENDRECV,
        rtc_configuration={"iceServers": s.webrtc_ice_servers},
        media_stream_constraints={"video": {"width": {"ideal": 640}, "height": {"ideal": 480}}, "audio": False},
        video_frame_callback=live.on_frame,
        async_processing=True,
    )
with side_col:
    playing = bool(ctx.state.playing)
    st.fragment(live_panel, run_every=1.0 if playing else None)(live)
    st.divider()
    save_frame_form(live)
