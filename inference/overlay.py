"""Draw a prediction on a video frame: the class, the confidence and a confidence bar.

Shared by the OpenCV webcam client and the Streamlit live page so both annotate alike.
OpenCV and NumPy only: cheap to import, nothing to load.
"""

from __future__ import annotations

import cv2
import numpy as np

# BGR colours per class; grey for "no prediction yet" and red for errors.
CLASS_COLORS: dict[str, tuple[int, int, int]] = {
    "rock": (60, 130, 235),
    "paper": (225, 160, 50),
    "scissors": (90, 190, 60),
}
WAITING_COLOR = (160, 160, 160)
ERROR_COLOR = (60, 60, 220)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def draw_prediction(
    frame: np.ndarray,
    label: str | None,
    confidence: float | None = None,
    *,
    note: str = "",
    error: str = "",
) -> np.ndarray:
    """Annotate `frame` (BGR, in place) and return it.

    A banner across the top reads e.g. "ROCK 97%" with a bar as long as the confidence;
    `note` goes on the right of the banner (fps, source); `error` replaces the label in red.
    """
    h, w = frame.shape[:2]
    scale = max(0.5, min(w, h) / 480)
    banner_h = int(52 * scale)
    overlay = frame.copy()
    cv2.rectangle(overlay, (0, 0), (w, banner_h), (20, 20, 20), thickness=-1)
    cv2.addWeighted(overlay, 0.6, frame, 0.4, 0, dst=frame)

    if error:
        text, color = error, ERROR_COLOR
    elif label is None:
        text, color = "waiting for a prediction...", WAITING_COLOR
    else:
        color = CLASS_COLORS.get(label, WAITING_COLOR)
        text = label.upper() if confidence is None else f"{label.upper()} {confidence:.0%}"
    thickness = max(1, int(2 * scale))
    baseline_y = int(36 * scale)
    cv2.putText(frame, text, (int(12 * scale), baseline_y), _FONT, 1.0 * scale, color, thickness, cv2.LINE_AA)

    if note:
        note_scale = 0.5 * scale
        (tw, _), _ = cv2.getTextSize(note, _FONT, note_scale, 1)
        cv2.putText(
            frame, note, (w - tw - int(10 * scale), baseline_y), _FONT, note_scale, (230, 230, 230), 1, cv2.LINE_AA
        )

    if confidence is not None and not error and label is not None:
        bar_y = banner_h - max(3, int(6 * scale))
        cv2.rectangle(frame, (0, bar_y), (int(w * float(np.clip(confidence, 0, 1))), banner_h), color, -1)
    return frame
