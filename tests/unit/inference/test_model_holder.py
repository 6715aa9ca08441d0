"""ModelHolder.predict, the one serving call: what it times and how it bounds concurrency."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from inference.model_holder import LoadedModel, ModelBusy, ModelHolder
from utils.images import DecodedImage

DECODE_S = 0.05


class SlowDecodeModel:
    """A model whose decode takes DECODE_S and whose inference is instant."""

    version = "v1"
    source = "test"
    class_names = ("rock", "paper", "scissors")
    predict_tensor = LoadedModel.predict_tensor

    def decode(self, data: bytes, **limits: int) -> DecodedImage:
        time.sleep(DECODE_S)
        return DecodedImage(np.zeros((4, 4, 3), np.uint8), "png", 4, 4, "0" * 64)

    def prepare(self, bgr: np.ndarray) -> np.ndarray:
        return np.zeros((8, 8, 3), np.float32)

    def run_inputs(self, inputs: list) -> np.ndarray:
        return np.array([[0.2, 0.7, 0.1]], np.float32)


def test_latency_covers_decode_preprocessing_and_inference() -> None:
    holder = ModelHolder()
    holder.swap(SlowDecodeModel())  # type: ignore[arg-type]
    result = holder.predict(b"bytes")
    assert result.label == "paper" and result.image is not None and result.image.format == "png"
    assert result.latency_ms >= DECODE_S * 1000


def test_a_request_waits_for_a_slot_then_gets_busy() -> None:
    holder = ModelHolder(max_concurrent=1, queue_s=0.2)
    holder.swap(SlowDecodeModel())  # type: ignore[arg-type]
    outcome: dict[str, object] = {}

    def second_request() -> None:
        start = time.perf_counter()
        try:
            holder.predict(b"bytes")
        except ModelBusy as exc:
            outcome["error"] = exc
        outcome["waited"] = time.perf_counter() - start

    with holder.slot():  # the only slot is taken by a long request
        t = threading.Thread(target=second_request)
        t.start()
        t.join(5)
    assert isinstance(outcome.get("error"), ModelBusy)
    assert 0.2 <= outcome["waited"] < 1.0  # type: ignore[operator]
    assert holder.predict(b"bytes").label == "paper"  # the slot is free again


def test_a_waiting_request_gets_the_slot_when_it_frees() -> None:
    holder = ModelHolder(max_concurrent=1, queue_s=2.0)
    holder.swap(SlowDecodeModel())  # type: ignore[arg-type]
    results: list[str] = []
    with holder.slot():
        t = threading.Thread(target=lambda: results.append(holder.predict(b"x").label))
        t.start()
        time.sleep(0.1)
    t.join(5)
    assert results == ["paper"]


@pytest.mark.parametrize("bad", [0, -1])
def test_concurrency_must_be_positive(bad: int) -> None:
    with pytest.raises(ValueError):
        ModelHolder(max_concurrent=bad)


def test_a_model_from_another_hand_stage_is_served_with_a_warning(caplog) -> None:
    """Its metadata records the stage it was trained with (src.model.Architecture.as_dict);
    serving says so when the running code's stage differs, and still serves."""
    from inference.model_holder import _hand_detector
    from src.model import Architecture
    from utils.hands import HAND_STAGE_VERSION, HandDetector

    arch = Architecture("mobilenet", 0.25, 224, "imagenet", "mobilenet+hand", 1).as_dict()
    assert arch["hand_stage_version"] == HAND_STAGE_VERSION
    with caplog.at_level("WARNING", logger="inference.model_holder"):
        assert isinstance(_hand_detector(arch), HandDetector)
    assert not caplog.records, "same stage: nothing to say"
    with caplog.at_level("WARNING", logger="inference.model_holder"):
        assert isinstance(_hand_detector({**arch, "hand_stage_version": HAND_STAGE_VERSION - 1}), HandDetector)
    assert f"hand stage v{HAND_STAGE_VERSION - 1}" in caplog.text
