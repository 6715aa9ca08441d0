"""Frozen-backbone features, cached per image hash so a retrain only computes new images.

A retrain on a few new labelled images then costs seconds, not a full pass over the
dataset: the cache key is (backbone tag + feature set, image sha256, number of augmented
copies). With the `mobilenet+hand` feature set each row is the backbone's features of the
hand crop (or the whole image) followed by the landmark features, both from
`utils.hands.hand_inputs`, the function serving calls, and each row comes with its mirror
view (the backbone's features of the flipped tensor, the landmark features reflected): the
second input `src.model.assemble`'s model scores.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from src.augment import augment
from utils.hands import DECODE_FACTOR, HandDetector, hand_inputs, mirrored_features
from utils.images import backbone_preprocess, decode_image, preprocess_image, to_rgb_resized

log = logging.getLogger(__name__)
# The hand-aware feature set's second augmented copy is the mirrored image run through the hand
# stage again, the first and the rest are scenes: HAND_AUG_COPIES=1 (the default, now that every
# row has its mirror view) keeps one scene.
MIRROR_COPY = 1


@dataclass
class FeatureStats:
    computed: int = 0
    cached: int = 0
    seconds_extracting: float = 0.0


def training_tensor(data: bytes, size: int, backbone: str) -> np.ndarray:
    """The un-augmented input the trainer sees for an image: the serving function itself."""
    return preprocess_image(data, size, backbone)


def training_inputs(
    data: bytes, size: int, backbone: str, hands: HandDetector | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """(image tensor, landmark features or None): what serving's `LoadedModel.prepare` gives."""
    if hands is None:
        return training_tensor(data, size, backbone), None
    found = hand_inputs(decode_image(data, target_side=size * DECODE_FACTOR).bgr, hands, size, backbone)
    return found.image, found.features


def augmented_inputs(
    data: bytes, size: int, backbone: str, copies: int, sha: str, hands: HandDetector | None = None
) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Augmented copies. With hands, each copy runs through the hand stage, which already
    undoes rotation and scale. Copy MIRROR_COPY is the image mirrored: the other hand, which
    users show as often. Every other copy is the image pasted into a procedural scene
    (`src.composites`, seeded by `scene{k}-{sha}`, k counting scenes only): what the head has to
    learn is a hand cut out of a room, as webcam frames show it. (benchmarks/model_quality.py,
    roboflow, 4 seeds: composites 0.813 trained on crops only, 0.845 with one scene copy; crops
    0.885 -> 0.892 with the mirror added.)"""
    if hands is None:
        return [(t, None) for t in augmented_tensors(data, size, backbone, copies, sha)]
    from src.composites import composite

    bgr = decode_image(data, target_side=size * DECODE_FACTOR).bgr
    out = []
    for j in range(copies):
        if j == MIRROR_COPY:
            frame = np.ascontiguousarray(bgr[:, ::-1])
        else:
            scene = j if j < MIRROR_COPY else j - 1
            frame = composite(bgr, zlib.crc32(f"scene{scene}-{sha}".encode()))
        found = hand_inputs(frame, hands, size, backbone)
        out.append((found.image, found.features))
    return out


def augmented_tensors(data: bytes, size: int, backbone: str, copies: int, sha: str) -> list[np.ndarray]:
    """`copies` deterministic augmentations (seeded by the hash, so caches stay valid)."""
    rgb = to_rgb_resized(decode_image(data).bgr, size)
    rng = np.random.default_rng(zlib.crc32(sha.encode()))
    return [backbone_preprocess(augment(rgb, rng), backbone) for _ in range(copies)]


class FeatureExtractor:
    """Runs the frozen backbone in batches through a compiled `tf.function`."""

    def __init__(
        self,
        backbone_model,
        size: int,
        backbone: str,
        cache_dir: Path,
        batch_size: int = 64,
        hands: HandDetector | None = None,
    ):
        import tensorflow as tf

        self.size = size
        self.backbone = backbone
        self.hands = hands
        self.backbone_model = backbone_model
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        self._fn = tf.function(lambda x: backbone_model(x, training=False), reduce_retracing=True)
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.stats = FeatureStats()

    def _run(self, tensors: list[np.ndarray]) -> np.ndarray:
        import time

        start = time.perf_counter()
        out = [
            self._fn(np.stack(tensors[i : i + self.batch_size])).numpy()
            for i in range(0, len(tensors), self.batch_size)
        ]
        self.stats.seconds_extracting += time.perf_counter() - start
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    @property
    def mirror_views(self) -> bool:
        """Hand-aware rows come with their mirror view (`src.model.assemble` scores both)."""
        return self.hands is not None

    def served_rows(self, block: np.ndarray) -> np.ndarray:
        """The rows of an image's block that serving scores: the view and, with mirror views,
        its mirror view (for `src.model.view_probabilities`)."""
        return block[[0, block.shape[0] // 2]] if self.mirror_views else block[:1]

    def features(self, items: Iterable[tuple[str, Callable[[], bytes]]], copies: int = 0) -> dict[str, np.ndarray]:
        """Map key → array (1 + copies, D): row 0 un-augmented, then the augmented copies;
        with `mirror_views`, (2 * (1 + copies), D): those rows, then each one's mirror view.

        Keys are the original images' sha256 (the caller vouches the bytes match)."""
        result: dict[str, np.ndarray] = {}
        pending: list[tuple[str, list[tuple[np.ndarray, np.ndarray | None]]]] = []
        pending_count = 0

        def flush() -> None:
            nonlocal pending, pending_count
            if not pending:
                return
            flat = [t for _, ts in pending for t, _ in ts]
            feats = self._run(flat)
            if self.mirror_views:
                mirrored = self._run([t[:, ::-1] for t in flat])
            offset = 0
            for sha, ts in pending:
                block = feats[offset : offset + len(ts)]
                if self.mirror_views:
                    hand = np.stack([h for _, h in ts])
                    block = np.concatenate(
                        [
                            np.concatenate([block, hand], 1),
                            np.concatenate([mirrored[offset : offset + len(ts)], mirrored_features(hand)], 1),
                        ]
                    )
                block = block.astype(np.float32)
                offset += len(ts)
                self._save(sha, copies, block)
                result[sha] = block
                self.stats.computed += 1
            pending, pending_count = [], 0

        for sha, load in items:
            cached = self._path(sha, copies)
            if cached.exists():
                result[sha] = np.load(cached)
                self.stats.cached += 1
                continue
            data = load()
            tensors = [training_inputs(data, self.size, self.backbone, self.hands)]
            if copies:
                tensors += augmented_inputs(data, self.size, self.backbone, copies, sha, self.hands)
            pending.append((sha, tensors))
            pending_count += len(tensors)
            if pending_count >= 4 * self.batch_size:
                flush()
        flush()
        return result

    def _save(self, sha: str, copies: int, block: np.ndarray) -> None:
        """Write-then-rename, so a concurrent reader never sees half a file."""
        path = self._path(sha, copies)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        with tmp.open("wb") as fh:
            np.save(fh, block)
        tmp.replace(path)

    def _path(self, sha: str, copies: int) -> Path:
        return self.cache_dir / f"{sha}.a{copies}{'m' if self.mirror_views else ''}.npy"


def feature_extractor(settings, arch) -> FeatureExtractor:
    """The frozen backbone (plus the hand stage for `mobilenet+hand`) with its on-disk cache."""
    from src.model import build_backbone

    hands = HandDetector.from_dir(settings.hand_models_dir, arch.hand_model_complexity) if arch.uses_hands else None
    cache = settings.artifacts_dir / "feature_cache" / arch.tag
    return FeatureExtractor(build_backbone(arch), arch.input_size, arch.backbone, cache, hands=hands)
