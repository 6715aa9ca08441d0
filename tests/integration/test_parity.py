"""No training/serving skew: the tensor the backend serves is the tensor the trainer saw."""

from __future__ import annotations

import numpy as np

from inference.model_holder import ModelHolder
from src.features import training_tensor
from utils.images import decode_image


def test_served_tensor_equals_training_tensor(model_dir, sample_images) -> None:
    holder = ModelHolder()
    model = holder.load_and_swap(model_dir)
    for path in (sample_images["rock"][0], sample_images["scissors"][-1]):
        data = path.read_bytes()
        served = model.prepare(decode_image(data).bgr)  # what POST /predict feeds the model
        trained = training_tensor(data, model.input_size, model.backbone)
        np.testing.assert_array_equal(served, trained)


def test_failed_load_keeps_old_model_and_swap_is_atomic(model_dir, tmp_path, sample_images) -> None:
    import shutil

    holder = ModelHolder()
    first = holder.load_and_swap(model_dir)
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "model.tflite").write_bytes(b"not a flatbuffer")
    try:
        holder.load_and_swap(broken)
    except Exception as exc:  # noqa: BLE001
        assert "failed to load" in str(exc)
    else:
        raise AssertionError("a corrupt model must not load")
    assert holder.current is first and holder.last_error
    data = sample_images["paper"][0].read_bytes()
    in_flight = holder.current  # a request that started before the swap
    second = holder.load_and_swap(model_dir)
    assert holder.current is second and in_flight is first
    assert in_flight.predict_tensor(in_flight.prepare(data)).label == "paper"
