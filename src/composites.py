"""Webcam-like scenes for testing: a dataset hand photo pasted into a larger background.

The datasets are tight crops; a webcam frame is a person in a room. A composite pastes
the crop at 15-30 % of the frame's width at a random position into a 640x480 background.
Backgrounds are procedural (no other dataset needed): a smooth low-frequency colour field,
a few flat "furniture" rectangles and ellipses, and sensor noise, all seeded, so the same
(image, seed) always gives the same frame.
"""

from __future__ import annotations

import zlib

import cv2
import numpy as np

FRAME_W, FRAME_H = 640, 480
HAND_FRACTION = (0.15, 0.30)


def background(rng: np.random.Generator, width: int = FRAME_W, height: int = FRAME_H) -> np.ndarray:
    """A seeded procedural room-like BGR background."""
    # muted, room-like colours: a grey level per patch with a mild tint
    grey = rng.integers(40, 216, size=(3, 4, 1)).astype(np.float32)
    coarse = np.clip(grey + rng.normal(0, 18, size=(3, 4, 3)), 0, 255).astype(np.float32)
    img = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(2, 6))):
        colour = tuple(float(np.clip(g + rng.normal(0, 25), 0, 255)) for g in [rng.integers(20, 236)] * 3)
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(40, width // 2)), y0 + int(rng.integers(40, height // 2))
        if rng.random() < 0.5:
            cv2.rectangle(img, (x0, y0), (x1, y1), colour, -1)
        else:
            box = (((x0 + x1) / 2, (y0 + y1) / 2), (float(x1 - x0), float(y1 - y0)), float(rng.uniform(0, 180)))
            cv2.ellipse(img, box, colour, -1)
    img = cv2.GaussianBlur(img, (0, 0), 3)
    img += rng.normal(0, 6, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def composite(hand_bgr: np.ndarray, seed: int) -> np.ndarray:
    """The hand photo at 15-30 % of the frame width, pasted at a random spot of a background."""
    rng = np.random.default_rng(seed)
    frame = background(rng)
    h, w = hand_bgr.shape[:2]
    new_w = int(FRAME_W * rng.uniform(*HAND_FRACTION))
    new_h = max(1, min(FRAME_H, round(h * new_w / w)))
    small = cv2.resize(hand_bgr, (new_w, new_h), interpolation=cv2.INTER_AREA)
    x, y = int(rng.integers(0, FRAME_W - new_w + 1)), int(rng.integers(0, FRAME_H - new_h + 1))
    frame[y : y + new_h, x : x + new_w] = small
    return frame


def composite_png(data: bytes, key: str) -> bytes:
    """Encoded image bytes -> PNG bytes of its composite (seeded by `key`)."""
    from utils.images import decode_image

    ok, png = cv2.imencode(".png", composite(decode_image(data).bgr, zlib.crc32(key.encode())))
    if not ok:
        raise ValueError("could not encode the composite")
    return png.tobytes()
