"""Real-time gesture classification from a webcam or a video file, with OpenCV.

    python -m inference.webcam --source 0 [--backend URL | --local] [--out-video F] [--csv F] [--max-fps N]

Each frame is read with `cv2.VideoCapture`, classified (by the backend's `POST /predict`
with the frame as JPEG, or in-process by the served TFLite model with `--local`), annotated
with the class and the confidence, and optionally written to a video and a per-frame CSV.
A window opens only when a display exists: headless OpenCV has no `imshow`. At the end it
reports the frames per second it achieved.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import httpx
import numpy as np

from inference.overlay import draw_prediction
from utils.settings import CLASS_NAMES, get_settings

log = logging.getLogger("inference.webcam")
CSV_FIELDS = ("frame", "time_s", "label", "confidence", *CLASS_NAMES, "latency_ms", "prediction_id", "error")
WINDOW = "rock-paper-scissors (q to quit)"


class ClientError(RuntimeError):
    """A failure that ends the run with a message instead of a traceback."""


@dataclass(frozen=True)
class FrameResult:
    label: str | None
    confidence: float | None
    probabilities: dict[str, float] = field(default_factory=dict)
    latency_ms: float = 0.0
    prediction_id: int | None = None
    error: str = ""
    hand: dict | None = None  # box + landmarks for hand-aware models (see api.schemas.HandResult)


class Classifier(Protocol):
    description: str

    def __call__(self, frame_bgr: np.ndarray) -> FrameResult: ...


class BackendClassifier:
    """POST each frame, JPEG-encoded, to the backend's `/predict` (stored like any prediction)."""

    def __init__(self, base_url: str, timeout: float = 10.0, jpeg_quality: int = 90) -> None:
        self.base_url = base_url.rstrip("/")
        self.jpeg_quality = jpeg_quality
        self.description = f"backend {self.base_url}"
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def __call__(self, frame_bgr: np.ndarray) -> FrameResult:
        start = time.perf_counter()
        ok, buf = cv2.imencode(".jpg", frame_bgr, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not ok:
            return FrameResult(None, None, error="frame could not be encoded")
        try:
            response = self._http.post("/predict", files={"file": ("webcam-frame.jpg", buf.tobytes(), "image/jpeg")})
        except httpx.HTTPError as exc:
            raise ClientError(f"backend unavailable at {self.base_url}: {exc}") from exc
        latency_ms = (time.perf_counter() - start) * 1000
        if response.status_code >= 500:
            detail = f"HTTP {response.status_code} {response.text[:200]}"
            raise ClientError(f"backend unavailable at {self.base_url}: {detail}")
        body = response.json()
        if response.status_code >= 400:
            return FrameResult(None, None, latency_ms=latency_ms, error=str(body.get("message", response.status_code)))
        return FrameResult(
            label=body["label"],
            confidence=float(body["confidence"]),
            probabilities={k: float(v) for k, v in body["probabilities"].items()},
            latency_ms=latency_ms,
            prediction_id=body.get("prediction_id"),
            hand=body.get("hand"),
        )

    def close(self) -> None:
        self._http.close()


class LocalClassifier:
    """The served TFLite model in this process: the same preprocessing as the backend."""

    def __init__(self, model_dir: Path) -> None:
        from inference.model_holder import ModelLoadError, load_model_dir

        try:
            self.model = load_model_dir(model_dir)
        except ModelLoadError as exc:
            raise ClientError(str(exc)) from exc
        self.description = f"local model {self.model.version}"

    def __call__(self, frame_bgr: np.ndarray) -> FrameResult:
        start = time.perf_counter()
        p = self.model.predict_tensor(self.model.prepare(frame_bgr))
        return FrameResult(p.label, p.confidence, p.probabilities, (time.perf_counter() - start) * 1000, hand=p.hand)

    def close(self) -> None:
        pass


def open_source(source: str) -> cv2.VideoCapture:
    """A camera index ("0") or a video file path."""
    if source.isdigit():
        cap = cv2.VideoCapture(int(source))
    else:
        if not Path(source).is_file():
            raise ClientError(f"no such video file: {source}")
        cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        raise ClientError(f"OpenCV could not open {source!r} (no camera there, or an unsupported format)")
    return cap


def display_available() -> bool:
    """True when `imshow` can open a window: a display exists and OpenCV has a GUI backend."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_AUTOSIZE)
    except cv2.error:
        return False
    return True


def open_writer(path: Path, frame: np.ndarray, fps: float) -> cv2.VideoWriter:
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix.lower() == ".avi" else "mp4v"))
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), fourcc, fps, (frame.shape[1], frame.shape[0]))
    if not writer.isOpened():
        raise ClientError(f"OpenCV cannot write {path}; use .avi (MJPG) or .mp4 (mp4v)")
    return writer


def frames(
    cap: cv2.VideoCapture, max_fps: float | None, max_frames: int | None
) -> Iterator[tuple[int, float, np.ndarray]]:
    """(index, seconds since start, frame), at most `max_fps` a second."""
    start = time.perf_counter()
    interval = 1.0 / max_fps if max_fps else 0.0
    index = 0
    while max_frames is None or index < max_frames:
        if interval:
            wait = start + index * interval - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        ok, frame = cap.read()
        if not ok:
            return
        yield index, time.perf_counter() - start, frame
        index += 1


@dataclass
class RunSummary:
    frames: int
    seconds: float
    latencies_ms: list[float]
    errors: int
    source: str
    classifier: str

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        median = statistics.median(self.latencies_ms) if self.latencies_ms else 0.0
        return (
            f"{self.frames} frames from {self.source} in {self.seconds:.2f} s: {self.fps:.1f} fps achieved "
            f"(classification median {median:.1f} ms, {self.errors} errors) via {self.classifier}"
        )


def run(
    source: str,
    classifier: Classifier,
    *,
    out_video: Path | None = None,
    csv_path: Path | None = None,
    max_fps: float | None = None,
    max_frames: int | None = None,
    display: bool = False,
) -> RunSummary:
    cap = open_source(source)
    source_fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    writer = None
    csv_file = csv_path.open("w", newline="") if csv_path else None
    rows = csv.DictWriter(csv_file, fieldnames=CSV_FIELDS) if csv_file else None
    if rows:
        rows.writeheader()
    latencies: list[float] = []
    errors = 0
    count = 0
    started = time.perf_counter()
    recent: list[float] = []
    try:
        for index, at, frame in frames(cap, max_fps, max_frames):
            result = classifier(frame)
            count += 1
            latencies.append(result.latency_ms)
            errors += bool(result.error)
            recent = [*recent[-29:], time.perf_counter()]
            fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 else 0.0
            annotated = draw_prediction(
                frame,
                result.label,
                result.confidence,
                note=f"{fps:.0f} fps" if fps else "",
                error=result.error,
                hand=result.hand,
            )
            if out_video is not None:
                if writer is None:
                    writer = open_writer(out_video, annotated, max_fps or (source_fps if source_fps > 0 else 30.0))
                writer.write(annotated)
            if rows is not None:
                rows.writerow(
                    {
                        "frame": index,
                        "time_s": f"{at:.4f}",
                        "label": result.label or "",
                        "confidence": "" if result.confidence is None else f"{result.confidence:.6f}",
                        **{c: f"{p:.6f}" for c, p in result.probabilities.items() if c in CLASS_NAMES},
                        "latency_ms": f"{result.latency_ms:.3f}",
                        "prediction_id": result.prediction_id or "",
                        "error": result.error,
                    }
                )
            if display:
                cv2.imshow(WINDOW, annotated)
                if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                    break
    except KeyboardInterrupt:
        log.info("interrupted; finishing the files")
    finally:
        seconds = time.perf_counter() - started
        cap.release()
        if writer is not None:
            writer.release()
        if csv_file is not None:
            csv_file.close()
        if display:
            cv2.destroyAllWindows()
    return RunSummary(count, seconds, latencies, errors, source, classifier.description)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    settings = get_settings()
    parser = argparse.ArgumentParser(
        prog="python -m inference.webcam", description="Classify webcam or video frames in real time."
    )
    parser.add_argument("--source", default="0", help="camera index (0, 1, ...) or a video file (default: 0)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--backend",
        metavar="URL",
        nargs="?",
        const=settings.backend_url,
        default=None,
        help=f"classify through the backend's POST /predict (default mode; URL defaults to {settings.backend_url})",
    )
    mode.add_argument("--local", action="store_true", help="classify in-process with the served TFLite model")
    parser.add_argument("--model-dir", type=Path, default=settings.model_dir, help="model for --local (MODEL_DIR)")
    parser.add_argument("--out-video", type=Path, help="write the annotated frames here (.avi: MJPG, .mp4: mp4v)")
    parser.add_argument("--csv", type=Path, help="write one row per frame here")
    parser.add_argument("--max-fps", type=float, help="process at most this many frames a second")
    parser.add_argument("--max-frames", type=int, help="stop after this many frames")
    parser.add_argument(
        "--display",
        choices=("auto", "on", "off"),
        default="auto",
        help="show a window: auto opens one only when a display exists (default: auto)",
    )
    args = parser.parse_args(argv)
    if args.max_fps is not None and args.max_fps <= 0:
        parser.error("--max-fps must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = parse_args(argv)
    settings = get_settings()
    display = {"on": True, "off": False}.get(args.display)
    if display is None:
        display = display_available()
    elif display and not display_available():
        log.error("no display available (headless OpenCV or no DISPLAY); run with --display off")
        return 2
    try:
        if not args.source.isdigit() and not Path(args.source).is_file():
            raise ClientError(f"no such video file: {args.source}")
        classifier = (
            LocalClassifier(args.model_dir)
            if args.local
            else BackendClassifier(args.backend or settings.backend_url, timeout=settings.ui_request_timeout_s)
        )
        try:
            summary = run(
                args.source,
                classifier,
                out_video=args.out_video,
                csv_path=args.csv,
                max_fps=args.max_fps,
                max_frames=args.max_frames,
                display=display,
            )
        finally:
            classifier.close()
    except ClientError as exc:
        log.error("%s", exc)
        return 1
    print(summary.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
