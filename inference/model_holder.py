"""The serving model: loaded once, warmed up, swapped atomically, called without Keras.

Predictions run through a TFLite (LiteRT) interpreter — a compiled graph that is
5–20x faster than `model.predict` on these CPUs — so the backend never imports
TensorFlow. A swap builds and warms the new model completely before one reference
assignment makes it current; requests already holding the old model finish on it.

`ModelHolder.predict` is the one serving call: decode -> preprocess -> inference, timed
together, with at most `max_concurrent` of them at once so memory stays bounded.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from utils.images import DecodedImage, ImageInfo, decode_image, preprocess_image
from utils.settings import CLASS_NAMES

log = logging.getLogger(__name__)
TFLITE_FILE = "model.tflite"
METADATA_FILE = "metadata.json"


class ModelNotLoaded(RuntimeError):
    """No model is being served yet."""


class ModelLoadError(RuntimeError):
    """A model directory or artifact could not be loaded; the previous model keeps serving."""


class ModelBusy(RuntimeError):
    """Every prediction slot stayed taken for the whole queue wait: try again shortly."""


def _runtime_name() -> str:
    from importlib.metadata import version

    return f"tflite (ai-edge-litert {version('ai-edge-litert')})"


@dataclass
class Prediction:
    label: str
    confidence: float
    probabilities: dict[str, float]
    model_version: str
    latency_ms: float
    image: ImageInfo | None = None
    hand: dict[str, Any] | None = None  # box + landmarks (image pixels) for hand-aware models


@dataclass(frozen=True)
class ModelInput:
    """What one image becomes for a model: the image tensor and, for `mobilenet+hand`, the
    landmark features and the hand they describe."""

    image: np.ndarray
    hand_features: np.ndarray | None = None
    hand: Any = None  # utils.hands.Hand


@dataclass
class LoadedModel:
    """One immutable model instance with its own interpreter and lock."""

    path: Path
    metadata: dict[str, Any]
    source: str
    interpreter: Any = field(repr=False)
    hands: Any = field(default=None, repr=False)  # utils.hands.HandDetector for mobilenet+hand
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def version(self) -> str:
        return str(self.metadata["version"])

    @property
    def input_size(self) -> int:
        return int(self.metadata["architecture"]["input_size"])

    @property
    def backbone(self) -> str:
        return str(self.metadata["architecture"]["backbone"])

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.metadata.get("class_names", CLASS_NAMES))

    @property
    def feature_set(self) -> str:
        return str(self.metadata["architecture"].get("feature_set", "mobilenet"))

    def decode(self, data: bytes, **limits: int) -> DecodedImage:
        """Validate and decode an upload at no more resolution than this model needs: the hand
        stage crops a hand out of the frame, so hand-aware models keep 4x the input side."""
        from utils.hands import DECODE_FACTOR

        side = self.input_size * (DECODE_FACTOR if self.hands is not None else 1)
        return decode_image(data, target_side=side, **limits)

    def prepare(self, source: bytes | np.ndarray, **limits: int) -> ModelInput:
        """Bytes or a BGR frame → this model's inputs, via the shared preprocessing (plus the
        hand stage of `utils.hands` for hand-aware models)."""
        if self.hands is None:
            return ModelInput(preprocess_image(source, self.input_size, self.backbone, **limits))
        from utils.hands import hand_inputs

        bgr = self.decode(bytes(source), **limits).bgr if isinstance(source, bytes | bytearray) else source
        found = hand_inputs(bgr, self.hands, self.input_size, self.backbone)
        return ModelInput(found.image, found.features, found.hand)

    def run(self, batch: np.ndarray, hand_features: np.ndarray | None = None) -> np.ndarray:
        """Probabilities for a (N, H, W, 3) batch (+ (N, F) landmark features for hand-aware
        models). The interpreter is not thread-safe: lock it."""
        interp = self.interpreter
        feeds = [(batch, next(d for d in interp.get_input_details() if len(d["shape"]) == 4))]
        if hand_features is not None:
            feeds.append((hand_features, next(d for d in interp.get_input_details() if len(d["shape"]) == 2)))
        out = interp.get_output_details()[0]
        with self._lock:
            if any(tuple(d["shape"]) != x.shape for x, d in feeds):
                for x, d in feeds:
                    interp.resize_tensor_input(d["index"], x.shape, strict=False)
                interp.allocate_tensors()
            for x, d in feeds:
                interp.set_tensor(d["index"], x.astype(np.float32, copy=False))
            interp.invoke()
            return np.array(interp.get_tensor(out["index"]))

    def run_inputs(self, inputs: list[ModelInput]) -> np.ndarray:
        """Probabilities for prepared inputs, as one batch."""
        images = np.stack([i.image for i in inputs])
        if self.hands is None:
            return self.run(images)
        return self.run(images, np.stack([i.hand_features for i in inputs]))

    def predict_tensor(self, inputs: ModelInput | np.ndarray, started: float | None = None) -> Prediction:
        """Classify one prepared input; latency counts from `started` (default: now)."""
        if isinstance(inputs, np.ndarray):
            inputs = ModelInput(inputs)
        start = time.perf_counter() if started is None else started
        probs = self.run_inputs([inputs])[0]
        latency_ms = (time.perf_counter() - start) * 1000
        idx = int(np.argmax(probs))
        return Prediction(
            label=self.class_names[idx],
            confidence=float(probs[idx]),
            probabilities={name: float(p) for name, p in zip(self.class_names, probs, strict=True)},
            model_version=self.version,
            latency_ms=latency_ms,
            hand=inputs.hand.as_json() if inputs.hand is not None else None,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "source": self.source,
            "path": str(self.path),
            "loaded_at": self.loaded_at.isoformat(),
            "created_at": self.metadata.get("created_at"),
            "architecture": self.metadata["architecture"],
            "feature_set": self.feature_set,
            "runtime": _runtime_name(),
            "class_names": list(self.class_names),
            "metrics": self.metadata.get("metrics", {}),
            "data_version": self.metadata.get("data_version"),
            "training_id": self.metadata.get("training_id"),
        }


def _hand_detector(architecture: dict[str, Any]):
    """The MediaPipe hand stage a `mobilenet+hand` model needs, from HAND_MODELS_DIR."""
    if architecture.get("feature_set", "mobilenet") == "mobilenet":
        return None
    if architecture["feature_set"] != "mobilenet+hand":
        raise ModelLoadError(f"unknown feature set {architecture['feature_set']!r} in the model's metadata")
    from utils.hand_models import HandModelsMissing
    from utils.hands import HAND_STAGE_VERSION, HandDetector
    from utils.settings import get_settings

    trained = architecture.get("hand_stage_version")
    if trained is not None and int(trained) != HAND_STAGE_VERSION:
        # Served anyway: the stages differ only in fallbacks for some frames, and refusing would
        # take the service down on an upgrade. The next retrain (the gate scores both models
        # through this code) replaces it.
        log.warning(
            "this model was trained with hand stage v%s but this code runs v%s: some frames get"
            " inputs it never saw in training until the next retrain",
            trained,
            HAND_STAGE_VERSION,
        )
    try:
        return HandDetector.from_dir(get_settings().hand_models_dir, int(architecture.get("hand_model_complexity", 1)))
    except HandModelsMissing as exc:
        raise ModelLoadError(f"the model needs the MediaPipe hand models: {exc}") from exc


def load_model_dir(path: Path, source: str | None = None, version: str | None = None) -> LoadedModel:
    """Load `model.tflite` + `metadata.json`, then warm up (first invoke allocates).

    `version` names the model as the registry does (e.g. `v3`); the training id stays in
    the metadata as `training_id`.
    """
    from ai_edge_litert.interpreter import Interpreter

    path = Path(path)
    tflite, meta_file = path / TFLITE_FILE, path / METADATA_FILE
    if not tflite.is_file() or not meta_file.is_file():
        raise ModelLoadError(f"{path} has no {TFLITE_FILE} and {METADATA_FILE}; train a model first")
    try:
        metadata = json.loads(meta_file.read_text())
        metadata.setdefault("training_id", metadata.get("version"))
        if version:
            metadata["version"] = version
        interpreter = Interpreter(model_path=str(tflite), num_threads=1)
        interpreter.allocate_tensors()
        hands = _hand_detector(metadata["architecture"])
        model = LoadedModel(
            path=path.resolve(), metadata=metadata, source=source or str(path), interpreter=interpreter, hands=hands
        )
        size = model.input_size
        extra = np.zeros((1, metadata["architecture"]["hand_features"]), np.float32) if hands else None
        probs = model.run(np.zeros((1, size, size, 3), np.float32), extra)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"model at {path} failed to load: {exc}") from exc
    if probs.shape != (1, len(model.class_names)) or not np.isclose(probs.sum(), 1.0, atol=1e-3):
        raise ModelLoadError(f"model at {path} gives outputs of shape {probs.shape}, not class probabilities")
    return model


class ModelHolder:
    """Holds the current model; `swap` is atomic and a failed load leaves the old one serving."""

    def __init__(self, max_concurrent: int = 4, queue_s: float = 2.0) -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, not {max_concurrent}")
        self._current: LoadedModel | None = None
        self._swap_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self.max_concurrent = max_concurrent
        self.queue_s = queue_s
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None

    @property
    def loaded(self) -> bool:
        return self._current is not None

    def peek(self) -> LoadedModel | None:
        """The current model or None, without raising."""
        return self._current

    def note_failure(self, error: str) -> None:
        self.last_error, self.last_error_at = error, datetime.now(UTC)

    @property
    def current(self) -> LoadedModel:
        model = self._current
        if model is None:
            raise ModelNotLoaded("no model is loaded yet; train one with `python -m src.train`")
        return model

    def swap(self, model: LoadedModel) -> LoadedModel | None:
        """Make `model` current (already loaded and warmed); returns the previous model."""
        with self._swap_lock:
            previous, self._current = self._current, model
            self.last_error = None
        log.info("serving model %s from %s", model.version, model.source)
        return previous

    def load_and_swap(self, path: Path, source: str | None = None) -> LoadedModel:
        try:
            model = load_model_dir(path, source)
        except ModelLoadError as exc:
            self.note_failure(str(exc))
            raise
        self.swap(model)
        return model

    def predict(self, data: bytes, **limits: int) -> Prediction:
        """The serving call: decode -> preprocess -> inference; `latency_ms` covers all three.

        Raises ModelNotLoaded, ImageRejected (bad input) or ModelBusy (no slot within
        `queue_s`). The result carries the decoded image's format, size and hash for storage.
        """
        model = self.current  # one read: the whole request uses this model even if a swap happens
        with self.slot():
            started = time.perf_counter()
            image = model.decode(data, **limits)
            result = model.predict_tensor(model.prepare(image.bgr), started=started)
        result.image = image.info
        return result

    @contextmanager
    def slot(self) -> Iterator[None]:
        """One of the `max_concurrent` decode/inference slots, waiting at most `queue_s`."""
        if not self._slots.acquire(timeout=self.queue_s):
            raise ModelBusy(f"all {self.max_concurrent} prediction slots stayed busy for {self.queue_s:g} s")
        try:
            yield
        finally:
            self._slots.release()
