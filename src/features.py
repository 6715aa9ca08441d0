"""Frozen-backbone features, cached per image hash so a retrain only computes new images.

A retrain on a few new labelled images then costs seconds, not a full pass over the
dataset: the cache key is (backbone tag, image sha256, number of augmented copies).
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
from utils.images import backbone_preprocess, decode_image, preprocess_image, to_rgb_resized

log = logging.getLogger(__name__)


@dataclass
class FeatureStats:
    computed: int = 0
    cached: int = 0
    seconds_extracting: float = 0.0


def training_tensor(data: bytes, size: int, backbone: str) -> np.ndarray:
    """The un-augmented input the trainer sees for an image: the serving function itself."""
    return preprocess_image(data, size, backbone)


def augmented_tensors(data: bytes, size: int, backbone: str, copies: int, sha: str) -> list[np.ndarray]:
    """`copies` deterministic augmentations (seeded by the hash, so caches stay valid)."""
    rgb = to_rgb_resized(decode_image(data).bgr, size)
    rng = np.random.default_rng(zlib.crc32(sha.encode()))
    return [backbone_preprocess(augment(rgb, rng), backbone) for _ in range(copies)]


class FeatureExtractor:
    """Runs the frozen backbone in batches through a compiled `tf.function`."""

    def __init__(self, backbone_model, size: int, backbone: str, cache_dir: Path, batch_size: int = 64):
        import tensorflow as tf

        self.size = size
        self.backbone = backbone
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

    def features(self, items: Iterable[tuple[str, Callable[[], bytes]]], copies: int = 0) -> dict[str, np.ndarray]:
        """Map key → array (1 + copies, D): row 0 un-augmented, then the augmented copies.

        Keys are the original images' sha256 (the caller vouches the bytes match)."""
        result: dict[str, np.ndarray] = {}
        pending: list[tuple[str, list[np.ndarray]]] = []
        pending_count = 0

        def flush() -> None:
            nonlocal pending, pending_count
            if not pending:
                return
            flat = [t for _, ts in pending for t in ts]
            feats = self._run(flat)
            offset = 0
            for sha, ts in pending:
                block = feats[offset : offset + len(ts)].astype(np.float32)
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
            tensors = [training_tensor(data, self.size, self.backbone)]
            if copies:
                tensors += augmented_tensors(data, self.size, self.backbone, copies, sha)
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
        return self.cache_dir / f"{sha}.a{copies}.npy"
