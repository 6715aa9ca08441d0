"""The live frame path: every frame annotated, predictions throttled, failures drawn not raised."""

from __future__ import annotations

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

    def __call__(self, frame):
        self.calls += 1
        if self.fail:
            raise self.fail
        return LivePrediction(self.label, 0.8, {"rock": 0.1, "paper": 0.8, "scissors": 0.1}, latency_ms=5.0)


def frame(value: int = 80) -> np.ndarray:
    return np.full((240, 320, 3), value, np.uint8)


def test_predictions_are_throttled_but_every_frame_is_annotated():
    clock, predictor = Clock(), CountingPredictor()
    live = LiveAnnotator(predictor, max_per_second=2, clock=clock)
    for _ in range(90):  # three seconds of a 30 fps camera
        out = live.annotate(frame())
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
        live.annotate(frame())
        clock.now += 1 / 30
    # "an interval after the last call" fires every third frame: 30 calls, 10 a second
    assert 35 <= predictor.calls <= 37


def test_the_raw_frame_is_kept_for_saving():
    live = LiveAnnotator(CountingPredictor(), max_per_second=5, clock=Clock())
    assert live.latest_frame() is None
    live.annotate(frame(33))
    kept = live.latest_frame()
    assert kept is not None and (kept == 33).all(), "the saved frame has no annotation on it"


def test_backend_failures_are_drawn_and_retried_at_the_throttled_rate():
    clock, predictor = Clock(), CountingPredictor()
    predictor.fail = BackendUnavailable("Backend unavailable: cannot reach x")
    live = LiveAnnotator(predictor, max_per_second=1, clock=clock)
    for _ in range(20):
        live.annotate(frame())
        clock.now += 0.1
    snap = live.snapshot()
    assert snap["error"] == "backend unavailable"
    assert (snap["frames"], snap["errors"], predictor.calls) == (20, 2, 2)

    predictor.fail = None
    clock.now += 1
    live.annotate(frame())
    assert live.snapshot()["error"] == ""
    assert live.prediction.label == "paper"


def test_unexpected_predictor_errors_do_not_break_the_stream():
    predictor = CountingPredictor()
    predictor.fail = RuntimeError("boom")
    live = LiveAnnotator(predictor, max_per_second=1, clock=Clock())
    live.annotate(frame())
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
