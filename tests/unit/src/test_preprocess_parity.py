"""A processed image (what the DAG versions and trains on) yields exactly the tensor the
backend computes from the original upload: the feature cache may share one key for both."""

from __future__ import annotations

import cv2
import numpy as np

from src.features import augmented_tensors
from utils.images import decode_image, preprocess_image, sha256_hex, to_rgb_resized


def _processed_png(data: bytes, size: int) -> bytes:
    rgb = to_rgb_resized(decode_image(data).bgr, size)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def test_processed_copy_gives_the_serving_tensor(sample_images) -> None:
    for path in (sample_images["rock"][0], sample_images["scissors"][-1]):  # PNG 300x200, JPEG crop
        original = path.read_bytes()
        processed = _processed_png(original, 224)
        np.testing.assert_array_equal(preprocess_image(processed, 224), preprocess_image(original, 224))
        key = sha256_hex(original)
        np.testing.assert_array_equal(
            np.stack(augmented_tensors(processed, 224, "mobilenet", 2, key)),
            np.stack(augmented_tensors(original, 224, "mobilenet", 2, key)),
        )


def test_processed_full_size_copy_gives_the_serving_hand_inputs(sample_images) -> None:
    """With FEATURE_SET=mobilenet+hand the DAG keeps decoded pixels at full size (lossless PNG):
    the hand stage then sees exactly the frame serving saw, and MobileNet the same tensor."""
    from utils.hand_models import model_paths
    from utils.hands import DECODE_FACTOR, HandDetector, hand_inputs
    from utils.settings import get_settings

    hands = HandDetector(*model_paths(get_settings().hand_models_dir, 1))
    for path in (sample_images["rock"][0], sample_images["paper"][5]):
        original = path.read_bytes()
        frame = decode_image(original, target_side=224 * DECODE_FACTOR).bgr  # as LoadedModel.decode
        processed = cv2.imencode(".png", frame)[1].tobytes()
        served = hand_inputs(frame, hands, 224, "mobilenet")
        trained = hand_inputs(decode_image(processed).bgr, hands, 224, "mobilenet")
        np.testing.assert_array_equal(trained.image, served.image)
        np.testing.assert_array_equal(trained.features, served.features)
        np.testing.assert_array_equal(preprocess_image(processed, 224), preprocess_image(original, 224))


def test_augmented_copies_are_the_served_view_of_a_scene_or_the_mirrored_image(sample_images) -> None:
    """mobilenet+hand's augmented copies are what serving would compute for other uploads: copy
    MIRROR_COPY for the image mirrored, every other copy for the image pasted into the
    procedural scene seeded by `scene{k}-{sha}` (k counting scenes), all through `hand_inputs`."""
    import zlib

    from src.composites import FRAME_H, FRAME_W, composite
    from src.features import MIRROR_COPY, augmented_inputs
    from utils.hand_models import model_paths
    from utils.hands import DECODE_FACTOR, HandDetector, hand_inputs
    from utils.settings import get_settings

    hands = HandDetector(*model_paths(get_settings().hand_models_dir, 1))
    data = sample_images["rock"][0].read_bytes()
    sha = sha256_hex(data)
    copies = augmented_inputs(data, 224, "mobilenet", 3, sha, hands)
    bgr = decode_image(data, target_side=224 * DECODE_FACTOR).bgr
    crop = hand_inputs(bgr, hands, 224, "mobilenet")
    assert MIRROR_COPY == 1, "HAND_AUG_COPIES=1 must stay one scene copy (its cached features)"
    frames = [composite(bgr, zlib.crc32(f"scene0-{sha}".encode())), bgr[:, ::-1]]
    frames.append(composite(bgr, zlib.crc32(f"scene1-{sha}".encode())))
    for j, ((image, features), frame) in enumerate(zip(copies, frames, strict=True)):
        if j != MIRROR_COPY:
            assert frame.shape == (FRAME_H, FRAME_W, 3)
        served = hand_inputs(np.ascontiguousarray(frame), hands, 224, "mobilenet")
        np.testing.assert_array_equal(image, served.image)
        np.testing.assert_array_equal(features, served.features)
        assert features[0] == 1.0, "the hand is found"
        assert not np.array_equal(image, crop.image), "a copy is not the crop again"
    assert not np.array_equal(copies[0][0], copies[2][0]), "each scene copy is another scene"
