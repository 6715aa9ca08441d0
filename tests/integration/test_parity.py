"""No training/serving skew: the tensors the backend serves are the tensors the trainer saw."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inference.model_holder import ModelHolder
from src.features import training_inputs
from utils.images import decode_image


@pytest.fixture(scope="module")
def other_feature_set_model(model_dir, data_dir, tmp_path_factory) -> Path:
    """A quick model of the feature set the session's model does not use, so both are covered."""
    from tests.conftest import model_env, train_cli

    used = json.loads((model_dir / "metadata.json").read_text())["architecture"].get("feature_set", "mobilenet")
    other = "mobilenet" if used == "mobilenet+hand" else "mobilenet+hand"
    artifacts = tmp_path_factory.mktemp("other-artifacts")
    args = ["--no-publish", "--max-per-dataset", "30", "--aug-copies", "0", "--epochs", "2", "--feature-set", other]
    return Path(train_cli(model_env(data_dir, artifacts), *args)["model_dir"])


@pytest.mark.parametrize("which", ["session", "other"])
def test_served_inputs_equal_training_inputs(which, model_dir, other_feature_set_model, sample_images) -> None:
    holder = ModelHolder()
    model = holder.load_and_swap(model_dir if which == "session" else other_feature_set_model)
    for path in (sample_images["rock"][0], sample_images["scissors"][-1], sample_images["paper"][5]):
        data = path.read_bytes()
        served = model.prepare(decode_image(data).bgr)  # what POST /predict feeds the model
        image, hand_features = training_inputs(data, model.input_size, model.backbone, model.hands)
        np.testing.assert_array_equal(served.image, image)
        if model.feature_set == "mobilenet+hand":
            assert served.hand is not None and hand_features is not None
            np.testing.assert_array_equal(served.hand_features, hand_features)
        else:
            assert served.hand_features is None and hand_features is None


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


def test_a_hand_model_without_the_mediapipe_models_says_how_to_get_them(
    model_dir, other_feature_set_model, tmp_path, monkeypatch
) -> None:
    from inference.model_holder import ModelLoadError, load_model_dir
    from utils.settings import get_settings

    hand_model = next(
        d
        for d in (model_dir, other_feature_set_model)
        if json.loads((d / "metadata.json").read_text())["architecture"].get("feature_set") == "mobilenet+hand"
    )
    monkeypatch.setenv("HAND_MODELS_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        with pytest.raises(ModelLoadError, match=r"python -m utils\.hand_models fetch"):
            load_model_dir(hand_model)
    finally:
        get_settings.cache_clear()
