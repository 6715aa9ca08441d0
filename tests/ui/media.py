"""Fake camera files for Chromium, made from real photos with OpenCV (no ffmpeg needed)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def fit_frame(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Letterbox a BGR image into width x height without distorting it."""
    scale = min(width / image.shape[1], height / image.shape[0])
    resized = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)))
    canvas = np.zeros((height, width, 3), np.uint8)
    y, x = (height - resized.shape[0]) // 2, (width - resized.shape[1]) // 2
    canvas[y : y + resized.shape[0], x : x + resized.shape[1]] = resized
    return canvas


def write_y4m(image_path: Path, out: Path, width: int = 640, height: int = 480, frames: int = 1) -> Path:
    """A YUV4MPEG2 (4:2:0) file showing the photo; Chromium loops it as the fake camera."""
    frame = fit_frame(cv2.imread(str(image_path), cv2.IMREAD_COLOR), width, height)
    i420 = cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes()
    with out.open("wb") as fh:
        fh.write(f"YUV4MPEG2 W{width} H{height} F30:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            fh.write(b"FRAME\n")
            fh.write(i420)
    return out
