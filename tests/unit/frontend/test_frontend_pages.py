"""Page logic in `streamlit.testing.v1.AppTest` against a fake backend (no browser, no server)."""

from __future__ import annotations

from types import SimpleNamespace

import av
import numpy as np
import pytest

from frontend.ui import OPERATOR_KEY

pytestmark = pytest.mark.filterwarnings("ignore")


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def button(at, text: str):
    return next(b for b in at.button if text in b.label)


def assert_no_exception(at) -> None:
    assert not at.exception, [e.value for e in at.exception]


def test_upload_predicts_once_and_sends_the_correction(page, fake_backend, photo):
    at = page("views/upload.py").run()
    assert_no_exception(at)
    assert "Drop a photo" in texts(at.info)

    at.file_uploader(key="upload-file").set_value(("hand.jpg", photo, "image/jpeg"))
    at.run()
    assert_no_exception(at)
    assert "Rock" in texts(at.markdown)
    assert at.metric[0].value == "90.0%"
    assert "2 more predictions until the next retrain" in at.progress[0].proto.text

    button(at, "No, it's paper").click()
    at.run()
    assert fake_backend.feedback == [{"prediction_id": 1, "label": "paper"}]
    assert "corrected to" in texts(at.success)
    assert fake_backend.predictions == 1, "a rerun must not classify the same image again"


def test_upload_draws_the_hand_or_says_none_was_found(page, fake_backend, photo):
    fake_backend.hand = {"found": False, "source": "none", "presence": 0.01, "box": [], "landmarks": []}
    at = page("views/upload.py").run()
    at.file_uploader(key="upload-file").set_value(("hand.jpg", photo, "image/jpeg"))
    at.run()
    assert_no_exception(at)
    assert "No hand found" in texts(at.caption)


def test_upload_draws_the_found_hand(page, fake_backend, photo):
    fake_backend.hand = {
        "found": True,
        "source": "palm",
        "presence": 0.97,
        "box": [[8, 8], [56, 8], [56, 56], [8, 56]],
        "landmarks": [[20 + i, 20 + i] for i in range(21)],
    }
    at = page("views/upload.py").run()
    at.file_uploader(key="upload-file").set_value(("hand.jpg", photo, "image/jpeg"))
    at.run()
    assert_no_exception(at)
    assert "Hand found (palm, presence 97%)" in texts(at.caption)


def test_confirming_the_prediction(page, fake_backend, photo):
    at = page("views/upload.py").run()
    at.file_uploader(key="upload-file").set_value(("hand.jpg", photo, "image/jpeg"))
    at.run()
    button(at, "Yes, rock").click()
    at.run()
    assert fake_backend.feedback == [{"prediction_id": 1, "label": "rock"}]
    assert "confirmed as" in texts(at.success)


def test_the_prediction_that_completes_a_batch_announces_the_retrain(page, fake_backend, photo):
    fake_backend.predictions = 2  # the next one is the third of three
    at = page("views/upload.py").run()
    at.file_uploader(key="upload-file").set_value(("hand.jpg", photo, "image/jpeg"))
    at.run()
    assert "a retrain has been requested" in texts(at.info)


def test_backend_down_shows_backend_unavailable(page, fake_backend, photo):
    fake_backend.down = True
    at = page("views/upload.py").run()
    at.file_uploader(key="upload-file").set_value(("hand.jpg", photo, "image/jpeg"))
    at.run()
    assert_no_exception(at)
    assert "Backend unavailable" in texts(at.error)


def test_a_rejected_upload_shows_the_backends_sentence(page, fake_backend, photo):
    fake_backend.reject_predict = (415, "unsupported_format", "GIF images are not supported; send a JPEG or PNG photo.")
    at = page("views/upload.py").run()
    at.file_uploader(key="upload-file").set_value(("hand.png", b"GIF89a....", "image/png"))
    at.run()
    assert_no_exception(at)
    assert "GIF images are not supported" in texts(at.warning)


def test_add_a_labelled_example(page, fake_backend, photo):
    at = page("views/upload.py").run()
    at.file_uploader(key="upload-example-file").set_value(("hand.jpg", photo, "image/jpeg"))
    at.radio(key="upload-example-label").set_value("scissors")
    at.button(key="FormSubmitter:upload-example-Add to the training data").click()
    at.run()
    assert_no_exception(at)
    assert [u["label"] for u in fake_backend.uploads] == ["scissors"]
    assert "New image added" in texts(at.success)


def test_labelled_example_needs_a_label(page, fake_backend, photo):
    at = page("views/upload.py").run()
    at.file_uploader(key="upload-example-file").set_value(("hand.jpg", photo, "image/jpeg"))
    at.button(key="FormSubmitter:upload-example-Add to the training data").click()
    at.run()
    assert fake_backend.uploads == []
    assert "Choose the gesture" in texts(at.warning)


def test_camera_snapshot_is_classified(page, fake_backend, photo):
    fake_backend.label = "scissors"
    at = page("views/camera.py").run()
    assert "Take Photo" in texts(at.info)
    at.camera_input(key="camera-photo").set_value(("photo.jpg", photo, "image/jpeg"))
    at.run()
    assert_no_exception(at)
    assert "Scissors" in texts(at.markdown)
    button(at, "Yes, scissors").click()
    at.run()
    assert fake_backend.feedback == [{"prediction_id": 1, "label": "scissors"}]


def test_system_page_lists_retrain_requests(page, fake_backend):
    fake_backend.retrains = [
        {
            "id": 2,
            "state": "running",
            "requested_at": "2026-11-26T08:00:00Z",
            "dag_run_id": "rps-2",
            "prediction_count": 3,
            "model_version_before": "v1",
            "model_version_after": None,
        },
        {
            "id": 1,
            "state": "succeeded",
            "requested_at": "2026-11-26T07:00:00Z",
            "finished_at": "2026-11-26T07:05:00Z",
            "dag_run_id": "rps-1",
            "data_version": "abc",
            "model_version_before": "v0",
            "model_version_after": "v1",
            "gate_decision": "promoted",
        },
    ]
    at = page("views/system.py")
    at.session_state[OPERATOR_KEY] = "operator-login"
    at.run()
    assert_no_exception(at)
    shown = texts(at.markdown)
    assert shown.index("Request #2") < shown.index("Request #1")
    assert "⚙️ running" in shown and "✅ succeeded" in shown
    assert "model `v0` → `v1`" in shown and "gate: **promoted**" in shown and "DAG run `rps-2`" in shown
    assert "v-test" in texts(at.markdown)
    assert at.metric[0].value == "91.0%"
    assert "2 more predictions until the next retrain" in at.progress[0].proto.text
    assert {b.label for b in at.get("link_button")} >= {"MLflow", "Airflow", "Prometheus", "Grafana"}
    assert ("GET", "/images/" + f"{0:064d}") in fake_backend.calls


def test_system_page_shows_visitors_aggregates_only(page, fake_backend):
    at = page("views/system.py").run()
    assert_no_exception(at)
    assert at.metric[0].value == "91.0%"
    assert "log in as an operator" in texts(at.info)
    assert not [c for c in fake_backend.calls if c[1] == "/predictions" or c[1].startswith("/images/")]
    assert at.text_input[0].label == "Operator token"


def test_system_page_folds_long_retrain_histories(page, fake_backend):
    fake_backend.retrains = [{"id": i, "state": "failed", "last_error": "boom"} for i in range(9, 0, -1)]
    at = page("views/system.py").run()
    assert_no_exception(at)
    assert "Request #5" in texts(at.markdown) and "Request #4" not in texts(at.markdown)
    assert list(at.dataframe[-1].value["Request"]) == list(range(9, 0, -1))
    assert "Last error: boom" in texts(at.caption)


def test_system_page_says_why_a_retrain_was_skipped(page, fake_backend):
    reason = "the training set is identical to champion v3's (digest 0123456789ab)"
    fake_backend.retrains = [{"id": 4, "state": "skipped", "skip_reason": reason, "data_version": "abc"}]
    at = page("views/system.py").run()
    assert_no_exception(at)
    assert "⏭️ skipped (no new training data)" in texts(at.markdown)
    assert f"Skipped: {reason}" in texts(at.caption)


def test_system_page_tolerates_a_backend_without_retrains(page, fake_backend):
    fake_backend.retrains = None
    at = page("views/system.py").run()
    assert_no_exception(at)
    assert "does not list retrain requests" in texts(at.info)


def test_system_page_with_backend_down_shows_one_message(page, fake_backend):
    fake_backend.down = True
    at = page("views/system.py").run()
    assert_no_exception(at)
    assert len(at.error) == 1 and "Backend unavailable" in at.error[0].value


class FakeStreamer:
    """Stands in for `webrtc_streamer`: records its arguments, reports a playing stream."""

    def __init__(self) -> None:
        self.kwargs: dict = {}

    def __call__(self, **kwargs):
        self.kwargs = kwargs
        return SimpleNamespace(state=SimpleNamespace(playing=True))


def test_live_page_annotates_frames_and_saves_one(page, fake_backend, monkeypatch):
    from utils.settings import get_settings

    streamer = FakeStreamer()
    monkeypatch.setattr("streamlit_webrtc.webrtc_streamer", streamer)
    monkeypatch.setenv("LIVE_MAX_PREDICTIONS_PER_SECOND", "2")  # a burst of frames well inside 0.5 s
    get_settings.cache_clear()
    try:
        at = page("views/live.py").run()
    finally:
        get_settings.cache_clear()
    assert_no_exception(at)
    assert streamer.kwargs["rtc_configuration"] == {"iceServers": []}
    assert streamer.kwargs["async_processing"] is True

    callback = streamer.kwargs["video_frame_callback"]
    frame = av.VideoFrame.from_ndarray(np.full((240, 320, 3), 90, np.uint8), format="bgr24")
    out = [callback(frame) for _ in range(5)]
    assert all(o.width == 320 and o.height == 240 for o in out)
    assert not np.array_equal(out[-1].to_ndarray(format="bgr24"), frame.to_ndarray(format="bgr24"))
    assert fake_backend.predictions == 1, "five frames in a burst give one throttled prediction"

    at.segmented_control(key="live-save-label").set_value("paper")
    at.button(key="live-save").click()
    at.run()
    assert_no_exception(at)
    assert [u["label"] for u in fake_backend.uploads] == ["paper"]
    assert "Frame saved" in texts(at.success)


def test_live_page_refuses_to_save_before_any_frame(page, fake_backend, monkeypatch):
    monkeypatch.setattr("streamlit_webrtc.webrtc_streamer", FakeStreamer())
    at = page("views/live.py").run()
    at.segmented_control(key="live-save-label").set_value("rock")
    at.button(key="live-save").click()
    at.run()
    assert fake_backend.uploads == []
    assert "no frame yet" in texts(at.warning)


def test_live_page_ice_servers_come_from_settings(page, monkeypatch):
    from utils.settings import get_settings

    streamer = FakeStreamer()
    monkeypatch.setattr("streamlit_webrtc.webrtc_streamer", streamer)
    ice = '[{"urls": ["turn:turn.example.org:3478"], "username": "u", "credential": "p"}]'
    monkeypatch.setenv("WEBRTC_ICE_SERVERS", ice)
    get_settings.cache_clear()
    try:
        page("views/live.py").run()
    finally:
        get_settings.cache_clear()
    assert streamer.kwargs["rtc_configuration"]["iceServers"][0]["urls"] == ["turn:turn.example.org:3478"]


def test_app_navigation_and_backend_badge(page, fake_backend):
    at = page("app.py").run()
    assert_no_exception(at)
    assert "Backend ready" in texts(at.sidebar.markdown)
    assert at.title[0].value == "Upload a photo"
    at.switch_page("views/system.py").run()
    assert_no_exception(at)
    assert at.title[0].value == "System"

    fake_backend.down = True
    at.run()
    assert "Backend unavailable" in texts(at.sidebar.markdown)


def test_live_page_with_a_missing_local_model_says_so(page, monkeypatch, tmp_path):
    from utils.settings import get_settings

    monkeypatch.setattr("streamlit_webrtc.webrtc_streamer", FakeStreamer())
    monkeypatch.setenv("LIVE_USE_LOCAL_MODEL", "true")
    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "no-model"))
    get_settings.cache_clear()
    try:
        at = page("views/live.py").run()
    finally:
        get_settings.cache_clear()
    assert_no_exception(at)
    assert "local model could not be loaded" in texts(at.error)
