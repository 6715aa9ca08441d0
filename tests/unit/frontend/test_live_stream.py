"""The live frame path: every frame annotated, predictions throttled and off the frame
thread, failures drawn not raised."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from frontend.client import BackendUnavailable
from frontend.live_stream import LiveAnnotator, LivePrediction, LocalPredictor


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class CountingPredictor:
    description = "test predictor"

    def __init__(self, label: str = "paper") -> None:
        self.calls = 0
        self.label = label
        self.fail: Exception | None = None
        self.gate: threading.Event | None = None  # set: the call blocks until the test releases it

    def __call__(self, frame):
        self.calls += 1
        if self.gate is not None:
            assert self.gate.wait(10), "the test never released the predictor"
        if self.fail:
            raise self.fail
        return LivePrediction(self.label, 0.8, {"rock": 0.1, "paper": 0.8, "scissors": 0.1}, latency_ms=5.0)


def frame(value: int = 80) -> np.ndarray:
    return np.full((240, 320, 3), value, np.uint8)


def annotate(live: LiveAnnotator, image: np.ndarray) -> np.ndarray:
    """One frame, then wait for the prediction it may have started (deterministic counts)."""
    out = live.annotate(image)
    assert live.wait_idle(), "the prediction thread did not finish"
    return out


def test_predictions_are_throttled_but_every_frame_is_annotated():
    clock, predictor = Clock(), CountingPredictor()
    live = LiveAnnotator(predictor, max_per_second=2, clock=clock)
    for _ in range(90):  # three seconds of a 30 fps camera
        out = annotate(live, frame())
        assert out.shape == (240, 320, 3)
        assert not np.array_equal(out, frame()), "every frame carries the banner"
        clock.now += 1 / 30
    assert predictor.calls == 6
    snap = live.snapshot()
    assert (snap["frames"], snap["predictions"], snap["label"]) == (90, 6, "paper")
    assert snap["fps"] == pytest.approx(30, rel=0.05)


def test_the_rate_is_kept_when_it_does_not_divide_the_frame_rate():
    clock, predictor = Clock(), CountingPredictor()
    live = LiveAnnotator(predictor, max_per_second=12, clock=clock)
    for _ in range(90):  # three seconds of a 30 fps camera
        annotate(live, frame())
        clock.now += 1 / 30
    # "an interval after the last call" fires every third frame: 30 calls, 10 a second
    assert 35 <= predictor.calls <= 37


def test_the_raw_frame_is_kept_for_saving():
    live = LiveAnnotator(CountingPredictor(), max_per_second=5, clock=Clock())
    assert live.latest_frame() is None
    annotate(live, frame(33))
    kept = live.latest_frame()
    assert kept is not None and (kept == 33).all(), "the saved frame has no annotation on it"


def test_backend_failures_are_drawn_and_retried_at_the_throttled_rate():
    clock, predictor = Clock(), CountingPredictor()
    predictor.fail = BackendUnavailable("Backend unavailable: cannot reach x")
    live = LiveAnnotator(predictor, max_per_second=1, clock=clock)
    for _ in range(20):
        annotate(live, frame())
        clock.now += 0.1
    snap = live.snapshot()
    assert snap["error"] == "backend unavailable"
    assert (snap["frames"], snap["errors"], predictor.calls) == (20, 2, 2)

    predictor.fail = None
    clock.now += 1
    annotate(live, frame())
    assert live.snapshot()["error"] == ""
    assert live.prediction.label == "paper"


def test_unexpected_predictor_errors_do_not_break_the_stream():
    predictor = CountingPredictor()
    predictor.fail = RuntimeError("boom")
    live = LiveAnnotator(predictor, max_per_second=1, clock=Clock())
    annotate(live, frame())
    assert live.snapshot()["error"] == "prediction failed"


def test_local_predictor_uses_the_model_holders_path():
    class Model:
        version = "v9"

        def prepare(self, bgr):
            return bgr.astype(np.float32)

        def predict_tensor(self, tensor):
            probs = {"rock": 0.7, "paper": 0.2, "scissors": 0.1}
            return SimpleNamespace(label="rock", confidence=0.7, probabilities=probs, hand=None)

    p = LocalPredictor(Model())(frame())
    assert (p.label, p.confidence) == ("rock", 0.7)
    assert LocalPredictor(Model()).description == "local model v9"


def test_a_non_positive_rate_is_refused():
    with pytest.raises(ValueError):
        LiveAnnotator(CountingPredictor(), max_per_second=0)


def test_a_slow_prediction_never_holds_up_the_video():
    """A frame with no findable hand takes ~0.5 s in the hand stage: the frames meanwhile are
    annotated at once (with the previous prediction), and no second call is queued."""
    predictor = CountingPredictor()
    predictor.gate = threading.Event()
    live = LiveAnnotator(predictor, max_per_second=10)  # the real clock
    start = time.monotonic()
    for _ in range(30):
        live.annotate(frame())
        time.sleep(0.005)
    elapsed = time.monotonic() - start
    assert elapsed < 2.0, f"30 frames took {elapsed:.2f} s while one prediction was stuck"
    assert predictor.calls == 1, "one call in flight at a time"
    snap = live.snapshot()
    assert (snap["frames"], snap["predictions"], snap["label"]) == (30, 0, None)

    predictor.gate.set()
    assert live.wait_idle()
    assert live.prediction.label == "paper"
    time.sleep(0.11)  # the schedule's interval
    annotate(live, frame())
    assert predictor.calls == 2, "the next due frame starts the next call"


def test_the_prediction_thread_ends_when_frames_stop_and_restarts_with_them():
    predictor = CountingPredictor()
    live = LiveAnnotator(predictor, max_per_second=100, idle_exit_s=0.05)
    annotate(live, frame())
    deadline = time.monotonic() + 5
    while live._worker is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert live._worker is None, "an idle annotator (a closed tab) keeps no thread"
    time.sleep(0.02)
    annotate(live, frame())
    assert predictor.calls == 2 and live.snapshot()["predictions"] == 2
