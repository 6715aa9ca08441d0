"""Training-time augmentation on RGB uint8 images (before the shared normalisation).

The green-cloth photos are landscape with a horizontal forearm while other sets are
upright hands, so rotation covers the full ±90° and flips go both ways.
"""

from __future__ import annotations

import cv2
import numpy as np


def augment(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random flip, rotation (±90°), scale (0.8–1.2) and brightness (0.7–1.3)."""
    out = rgb
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if rng.random() < 0.3:
        out = out[::-1, :]
    h, w = out.shape[:2]
    angle = float(rng.uniform(-90, 90))
    scale = float(rng.uniform(0.8, 1.2))
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    out = cv2.warpAffine(np.ascontiguousarray(out), matrix, (w, h), borderMode=cv2.BORDER_REFLECT_101)
    brightness = float(rng.uniform(0.7, 1.3))
    return np.clip(out.astype(np.float32) * brightness, 0, 255).astype(np.uint8)
