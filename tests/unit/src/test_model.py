"""The assembled hand-aware model scores exactly what the trainer scores from cached rows:
the view and its mirror view, averaged (no skew between `assemble` and the feature cache)."""

from __future__ import annotations

import numpy as np

from utils.images import sha256_hex


def _tiny_backbone():
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((224, 224, 3))
    x = keras.layers.Conv2D(8, 5, strides=4, activation="relu")(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


def test_assembled_model_averages_the_view_and_its_cached_mirror_view(sample_images, tmp_path) -> None:
    from src.features import FeatureExtractor, training_inputs
    from src.model import assemble, build_head, view_probabilities
    from utils.hand_models import model_paths
    from utils.hands import HAND_FEATURES, HandDetector
    from utils.settings import get_settings

    hands = HandDetector(*model_paths(get_settings().hand_models_dir, 1))
    backbone = _tiny_backbone()
    extractor = FeatureExtractor(backbone, 224, "mobilenet", tmp_path, hands=hands)
    paths = [sample_images["rock"][0], sample_images["paper"][5], sample_images["scissors"][-1]]
    blocks = extractor.features(((sha256_hex(p.read_bytes()), p.read_bytes) for p in paths), 0)
    rows = np.stack([blocks[sha256_hex(p.read_bytes())] for p in paths])
    assert rows.shape == (3, 2, 16 + HAND_FEATURES), "each image: its view and its mirror view"
    rng = np.random.default_rng(1)
    head = build_head(rows.shape[-1], normalizer=(rng.normal(size=rows.shape[-1]), np.ones(rows.shape[-1])))
    model = assemble(backbone, head, hand_features=HAND_FEATURES)
    inputs = [training_inputs(p.read_bytes(), 224, "mobilenet", hands) for p in paths]
    served = model.predict([np.stack([image for image, _ in inputs]), np.stack([f for _, f in inputs])], verbose=0)
    np.testing.assert_allclose(served, view_probabilities(head, rows), atol=1e-5)
    single = head.predict(rows[:, 0], verbose=0)
    assert not np.allclose(served, single, atol=1e-4), "the mirror view takes part"
    assert np.array_equal(extractor.served_rows(blocks[sha256_hex(paths[0].read_bytes())]), rows[0])
