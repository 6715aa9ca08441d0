"""The live page's frame path, without Streamlit: annotate every frame, predict at most N/s.

`LiveAnnotator.on_frame` is the `video_frame_callback` given to streamlit-webrtc. It runs on
the WebRTC worker thread for every frame: it keeps a copy of the raw frame (for "save this
frame"), hands a frame to the prediction thread when the throttle allows and no prediction is
in flight, and draws the latest prediction on the frame. The callback never waits for the
model or the backend: a frame in which no hand can be found takes every fallback of the hand
stage (about half a second for a 640x480 scene), and a synchronous call would freeze the video
for that long. One prediction is in flight at a time, so a slow backend lowers the prediction
rate, never the frame rate, and requests never pile up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from frontend.client import BackendClient, BackendError, BackendUnavailable
from inference.overlay import draw_prediction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LivePrediction:
    label: str
    confidence: float
    probabilities: dict[str, float]
    latency_ms: float
    prediction_id: int | None = None
    hand: dict | None = None  # box + landmarks in the frame's pixels (hand-aware models)


class Predictor(Protocol):
    description: str

    def __call__(self, frame_bgr: np.ndarray) -> LivePrediction: ...


class BackendPredictor:
    """POST the JPEG-encoded frame to the backend's `/predict?store=false`: live previews are
    classified but not stored, so watching the camera never triggers a retrain by itself
    (a frame the user saves with a label goes through `/upload`)."""

    def __init__(self, client: BackendClient, jpeg_quality: int = 90) -> None:
        self.client = client
        self.jpeg_quality = jpeg_quality
        self.description = f"backend {client.base_url}"

    def __call__(self, frame_bgr: np.ndarray) -> LivePrediction:
        start = time.perf_counter()
        data = encode_jpeg(frame_bgr, self.jpeg_quality)
        result = self.client.predict(data, filename="live-frame.jpg", store=False)
        return LivePrediction(
            label=result["label"],
            confidence=float(result["confidence"]),
            probabilities={k: float(v) for k, v in result["probabilities"].items()},
            latency_ms=(time.perf_counter() - start) * 1000,
            prediction_id=result.get("prediction_id"),
            hand=result.get("hand"),
        )


class LocalPredictor:
    """Run the served TFLite model in this process (no network, nothing stored)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.description = f"local model {model.version}"

    def __call__(self, frame_bgr: np.ndarray) -> LivePrediction:
        start = time.perf_counter()
        p = self.model.predict_tensor(self.model.prepare(frame_bgr))
        return LivePrediction(
            label=p.label,
            confidence=p.confidence,
            probabilities=p.probabilities,
            latency_ms=(time.perf_counter() - start) * 1000,
            hand=p.hand,
        )


def encode_jpeg(frame_bgr: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", frame_bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("OpenCV could not encode the frame as JPEG")
    return buf.tobytes()


def _percentile(values: deque[float], q: float) -> float | None:
    return float(np.percentile(np.fromiter(values, float), q)) if values else None


@dataclass
class LiveStats:
    """Counters of one annotator since it was created (thread-safe snapshot via the annotator)."""

    frames: int = 0
    predictions: int = 0
    errors: int = 0

    def __post_init__(self) -> None:
        self.frame_ms: deque[float] = deque(maxlen=300)
        self.prediction_ms: deque[float] = deque(maxlen=100)
        self.frame_times: deque[float] = deque(maxlen=120)
        self.prediction_times: deque[float] = deque(maxlen=60)


class LiveAnnotator:
    """Annotates every frame with the latest prediction; predictions at most `max_per_second`."""

    def __init__(
        self,
        predictor: Predictor,
        max_per_second: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        log_every_s: float = 5.0,
        idle_exit_s: float = 10.0,
    ) -> None:
        if max_per_second <= 0:
            raise ValueError("max_per_second must be positive")
        self.predictor = predictor
        self.min_interval = 1.0 / max_per_second
        self.clock = clock
        self.log_every_s = log_every_s
        self.idle_exit_s = idle_exit_s
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # the prediction thread's hand-off
        self._latest_frame: np.ndarray | None = None
        self._prediction: LivePrediction | None = None
        self._error = ""
        self._pending: np.ndarray | None = None
        self._in_flight = False
        self._worker: threading.Thread | None = None
        self._next_call = -float("inf")
        self._last_log = clock()
        self.stats = LiveStats()

    # The WebRTC worker thread calls these.
    def on_frame(self, frame: Any) -> Any:
        """streamlit-webrtc's `video_frame_callback`: av.VideoFrame in, annotated one out."""
        import av

        out = self.annotate(frame.to_ndarray(format="bgr24"))
        new = av.VideoFrame.from_ndarray(out, format="bgr24")
        new.pts = frame.pts
        if frame.time_base is not None:
            new.time_base = frame.time_base
        return new

    def annotate(self, frame_bgr: np.ndarray) -> np.ndarray:
        """Annotate one BGR frame (returns a new array; the input is kept as the raw frame)."""
        start = self.clock()
        self._maybe_submit(frame_bgr, start)
        with self._lock:
            self._latest_frame = frame_bgr
            prediction, error = self._prediction, self._error
        fps = self._fps()
        note = f"{fps:.0f} fps" if fps else ""
        annotated = draw_prediction(
            frame_bgr.copy(),
            prediction.label if prediction else None,
            prediction.confidence if prediction else None,
            note=note,
            error=error,
            hand=prediction.hand if prediction else None,
        )
        end = self.clock()
        with self._lock:
            s = self.stats
            s.frames += 1
            s.frame_ms.append((end - start) * 1000)
            s.frame_times.append(end)
        if end - self._last_log >= self.log_every_s:
            self._last_log = end
            log.info("live stream stats: %s", self.summary())
        return annotated

    def _maybe_submit(self, frame_bgr: np.ndarray, now: float) -> None:
        """Hand this frame to the prediction thread if the schedule says so and it is idle."""
        if now < self._next_call:
            return
        with self._cond:
            if self._in_flight:  # the schedule waits for the call in flight: no pile-up
                return
            self._in_flight, self._pending = True, frame_bgr
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="live-predictor", daemon=True)
                self._worker.start()
            self._cond.notify_all()
        # On a schedule, not "interval since the last call": frames come at the camera's pace,
        # and waiting a whole interval from whichever frame fired would round the rate down to
        # a divisor of the frame rate (12/s at 30 fps would be every third frame, 10/s). The
        # first frame, or one after a stall or a slow call, restarts the schedule from now.
        behind = now - self._next_call >= self.min_interval
        self._next_call = (now if behind else self._next_call) + self.min_interval

    def _run(self) -> None:
        """The prediction thread: one call at a time; it ends after `idle_exit_s` without work
        (a closed browser tab leaves no thread behind) and the next frame starts a new one."""
        while True:
            with self._cond:
                if not self._cond.wait_for(lambda: self._pending is not None, timeout=self.idle_exit_s):
                    self._worker = None
                    return
                frame_bgr, self._pending = self._pending, None
            try:
                self._predict(frame_bgr)
            finally:
                with self._cond:
                    self._in_flight = False
                    self._cond.notify_all()

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Block until no prediction is in flight (tests, benchmarks, shutdown)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._in_flight, timeout=timeout)

    def _predict(self, frame_bgr: np.ndarray) -> None:
        try:
            prediction = self.predictor(frame_bgr)
        except BackendUnavailable as exc:
            self._set_error("backend unavailable", exc)
            return
        except BackendError as exc:
            self._set_error(exc.message[:60], exc)
            return
        except Exception as exc:
            log.exception("live prediction failed")
            self._set_error("prediction failed", exc)
            return
        with self._lock:
            self._prediction, self._error = prediction, ""
            s = self.stats
            s.predictions += 1
            s.prediction_ms.append(prediction.latency_ms)
            s.prediction_times.append(self.clock())

    def _set_error(self, text: str, exc: Exception) -> None:
        log.warning("live prediction failed: %s", exc)
        with self._lock:
            self._error = text
            self.stats.errors += 1

    def _fps(self) -> float:
        times = self.stats.frame_times
        if len(times) < 2 or times[-1] == times[0]:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    # The page's script thread calls these.
    def latest_frame(self) -> np.ndarray | None:
        """The most recent raw (unannotated) frame, or None before the first one."""
        with self._lock:
            return None if self._latest_frame is None else self._latest_frame.copy()

    @property
    def prediction(self) -> LivePrediction | None:
        with self._lock:
            return self._prediction

    def snapshot(self) -> dict[str, Any]:
        """Numbers for the page and the logs: counts, rates and latencies."""
        with self._lock:
            s = self.stats
            now = self.clock()
            recent = [t for t in s.prediction_times if now - t <= 5.0]
            return {
                "frames": s.frames,
                "predictions": s.predictions,
                "errors": s.errors,
                "fps": self._fps() if s.frame_times and now - s.frame_times[-1] < 2.0 else 0.0,
                "predictions_per_s": len(recent) / 5.0,
                "frame_ms_p50": _percentile(s.frame_ms, 50),
                "frame_ms_p95": _percentile(s.frame_ms, 95),
                "prediction_ms_p50": _percentile(s.prediction_ms, 50),
                "label": self._prediction.label if self._prediction else None,
                "confidence": self._prediction.confidence if self._prediction else None,
                "error": self._error,
            }

    def summary(self) -> str:
        s = self.snapshot()
        p50 = s["frame_ms_p50"] or 0.0
        pred = s["prediction_ms_p50"] or 0.0
        return (
            f"frames={s['frames']} predictions={s['predictions']} errors={s['errors']} fps={s['fps']:.1f} "
            f"frame_ms_p50={p50:.1f} prediction_ms_p50={pred:.1f}"
        )
