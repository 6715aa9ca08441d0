"""The MobileNet transfer-learning model: backbone, head, and their assembly.

TensorFlow is imported here only, so modules that merely describe the model (the
DAG file, the UI, CLI --help) stay fast to import.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from utils.settings import CLASS_NAMES, Settings


@dataclass(frozen=True)
class Architecture:
    backbone: str
    alpha: float
    input_size: int
    weights: str
    feature_set: str = "mobilenet"
    hand_model_complexity: int = 1

    @classmethod
    def from_settings(cls, settings: Settings, feature_set: str | None = None) -> Architecture:
        weights = settings.local_weights_file
        return cls(
            backbone=settings.backbone,
            alpha=settings.backbone_alpha,
            input_size=settings.image_size,
            weights=str(weights) if weights else "imagenet",
            feature_set=feature_set or settings.feature_set,
            hand_model_complexity=settings.hand_model_complexity,
        )

    @property
    def uses_hands(self) -> bool:
        return self.feature_set == "mobilenet+hand"

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["weights"] = Path(self.weights).name if self.weights != "imagenet" else "imagenet"
        if self.uses_hands:
            from utils.hands import HAND_FEATURES, HAND_STAGE_VERSION

            data["hand_features"] = HAND_FEATURES
            data["hand_stage_version"] = HAND_STAGE_VERSION  # serving warns when its own differs
            data["mirror_view"] = True  # `assemble` averages the view and its mirror view
        else:
            data.pop("hand_model_complexity")
        return data

    @property
    def tag(self) -> str:
        """Identifies the frozen feature extractor; feature caches are keyed by it."""
        tag = f"{self.backbone}-{self.alpha:g}-{self.input_size}-{Path(self.weights).stem}"
        if not self.uses_hands:
            return tag
        from utils.hands import HAND_STAGE_VERSION

        return f"{tag}+hand{self.hand_model_complexity}v{HAND_STAGE_VERSION}"


def build_backbone(arch: Architecture):
    """The frozen, average-pooled backbone. Local weight files need offline machines too."""
    import keras

    if arch.weights != "imagenet" and not Path(arch.weights).is_file():
        raise FileNotFoundError(f"backbone weights file {arch.weights} does not exist (BACKBONE_WEIGHTS)")
    factory = {
        "mobilenet": keras.applications.MobileNet,
        "mobilenet_v2": keras.applications.MobileNetV2,
    }[arch.backbone]
    base = factory(
        input_shape=(arch.input_size, arch.input_size, 3),
        alpha=arch.alpha,
        include_top=False,
        weights=arch.weights,
        pooling="avg",
    )
    base.trainable = False
    return base


def feature_normalizer(x):
    """Per-column mean and variance of training features, for the fused head's first layer
    (landmark coordinates, distances and angles live on other scales than MobileNet's)."""
    return x.mean(0), np.maximum(x.var(0), 1e-6)


def build_head(n_features: int, dropout: float = 0.3, units: int = 128, normalizer=None):
    """Dense classifier trained on cached backbone (+ landmark) features."""
    import keras

    inputs = keras.Input((n_features,), name="features")
    x = inputs
    if normalizer is not None:
        mean, variance = normalizer
        x = keras.layers.Normalization(mean=mean, variance=variance, name="standardise")(x)
    x = keras.layers.Dropout(dropout)(x)
    x = keras.layers.Dense(units, activation="relu")(x)
    x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(len(CLASS_NAMES), activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="head")


def ensemble(heads: list):
    """One head averaging the probabilities of several trained with different seeds: a retrain
    then differs from its champion by its data more than by the luck of one initialisation."""
    import keras

    if len(heads) == 1:
        return heads[0]
    for i, h in enumerate(heads):
        h.name = f"head_{i}"
    inputs = keras.Input(heads[0].input_shape[1:], name="features")
    outputs = keras.layers.Average(name="probabilities")([h(inputs) for h in heads])
    return keras.Model(inputs, outputs, name="head")


def assemble(backbone, head, hand_features: int = 0):
    """Backbone + head as one model taking preprocessed images (and, for `mobilenet+hand`,
    the landmark features, concatenated after the backbone's pooled features).

    A hand-aware model also scores the mirror view of its input, the image flipped left-right
    with its landmark features reflected (`utils.hands.mirrored_features`), and averages the
    two: a left and a right hand showing the same gesture get one answer, for one more
    backbone pass (~1 ms) and no second hand stage. Serving feeds the same two inputs."""
    import keras

    inputs = keras.Input(backbone.input_shape[1:], name="image")
    features = backbone(inputs, training=False)
    if not hand_features:
        return keras.Model(inputs, head(features), name="rps_classifier")
    from utils.hands import MIRROR_SIGNS

    hand = keras.Input((hand_features,), name="hand_features")
    view = head(keras.layers.Concatenate(name="fused")([features, hand]))
    flipped = backbone(keras.ops.flip(inputs, axis=2), training=False)
    mirror = head(keras.layers.Concatenate(name="fused_mirror")([flipped, hand * MIRROR_SIGNS]))
    outputs = keras.layers.Average(name="view_and_mirror")([view, mirror])
    return keras.Model([inputs, hand], outputs, name="rps_classifier_hand")


def view_probabilities(head, rows: np.ndarray) -> np.ndarray:
    """(N, V, D) cached rows of N images, V views each (the view and, for hand-aware features,
    its mirror view) -> (N, classes): the head's mean over the views, as `assemble`'s model
    computes it from the image."""
    probs = head.predict(rows.reshape(-1, rows.shape[-1]), batch_size=256, verbose=0)
    return probs.reshape(rows.shape[0], rows.shape[1], -1).mean(1)


def unfreeze_top(backbone, n_layers: int) -> None:
    """Make the last `n_layers` trainable, keeping BatchNorm frozen (its statistics would drift
    on a few hundred images)."""
    import keras

    backbone.trainable = True
    for layer in backbone.layers[:-n_layers]:
        layer.trainable = False
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def export_tflite(model, path: Path) -> Path:
    """Convert to a TFLite flatbuffer: 5–20x faster than any Keras call path on these CPUs."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    path.write_bytes(converter.convert())
    return path
