"""Draw a prediction on a video frame: the class, the confidence, a confidence bar, and for
hand-aware models the hand box and landmarks (or "no hand found").

Shared by the OpenCV webcam client and the Streamlit live page so both annotate alike.
OpenCV and NumPy only: cheap to import, nothing to load.
"""

from __future__ import annotations

import cv2
import numpy as np

from utils.hands import CONNECTIONS

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
    hand: dict | None = None,
) -> np.ndarray:
    """Annotate `frame` (BGR, in place) and return it.

    A banner across the top reads e.g. "ROCK 97%" with a bar as long as the confidence;
    `note` goes on the right of the banner (fps, source); `error` replaces the label in red.
    `hand` is the API's `hand` object (pixels of this frame): its box and landmarks are drawn,
    and "no hand found" is added to the note when the model found none.
    """
    if hand is not None:
        draw_hand(frame, hand, CLASS_COLORS.get(label or "", WAITING_COLOR))
        if not hand.get("found"):
            note = f"no hand found · {note}" if note else "no hand found"
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


def draw_hand(frame: np.ndarray, hand: dict, color: tuple[int, int, int] = WAITING_COLOR) -> np.ndarray:
    """The hand's (rotated) box and landmark skeleton, in place. With no hand found, nothing,
    or for a scene's likeliest region (`candidate`) its box in grey: what was classified."""
    candidate = hand.get("source") == "candidate"
    if not hand.get("found") and not candidate:
        return frame
    thickness = max(1, round(min(frame.shape[:2]) / 240))
    box = np.round(np.asarray(hand.get("box", []), np.float32)).astype(np.int32)
    if box.shape == (4, 2):
        cv2.polylines(frame, [box], True, WAITING_COLOR if candidate else color, thickness, cv2.LINE_AA)
    if candidate:
        return frame
    points = [tuple(round(v) for v in p) for p in hand.get("landmarks", [])]
    if len(points) == 21:
        for a, b in CONNECTIONS:
            cv2.line(frame, points[a], points[b], (240, 240, 240), thickness, cv2.LINE_AA)
        for p in points:
            cv2.circle(frame, p, thickness + 1, color, -1, cv2.LINE_AA)
    return frame
