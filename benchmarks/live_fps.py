"""The live page's path, measured: achieved FPS and end-to-end latency per annotated frame.

Three processes, as in a deployment: a *camera* process (standing in for the browser) sends
real photos at the camera's rate over WebRTC (aiortc, VP8) to a *server* process that runs
exactly what the Streamlit live page runs — streamlit-webrtc's `AsyncVideoProcessTrack` with
`LiveAnnotator.on_frame` as the callback, throttled predictions — and the real *backend*
(`python main.py` on a throwaway database, or `--backend URL`, or `--local` for the
in-process model). Each frame carries its index in a strip of black/white blocks at the
bottom, so the camera process times every annotated frame from send to receive with one
clock.

    .venv/bin/python benchmarks/live_fps.py [--seconds 15] [--fps 30] [--rate 2] [--local | --backend URL]

`--transport callback` skips WebRTC and calls the frame callback directly at the camera
rate (the server-side cost alone). Target: at least 10 predictions a second on the live page.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
import uuid
from fractions import Fraction
from pathlib import Path

import cv2
import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import streamlit.logger  # noqa: E402

streamlit.logger.set_log_level("ERROR")  # streamlit-webrtc imports Streamlit outside a server: no runtime warnings

from frontend.client import BackendClient  # noqa: E402
from frontend.live_stream import BackendPredictor, LiveAnnotator, LocalPredictor  # noqa: E402
from utils.settings import get_settings  # noqa: E402

BITS = 16
STRIP = 24  # pixels at the bottom carrying the frame index


def cover(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale and centre-crop to fill width x height (no black bars, so the banner is detectable)."""
    scale = max(width / image.shape[1], height / image.shape[0])
    resized = cv2.resize(image, (round(image.shape[1] * scale) + 1, round(image.shape[0] * scale) + 1))
    y, x = (resized.shape[0] - height) // 2, (resized.shape[1] - width) // 2
    return np.ascontiguousarray(resized[y : y + height, x : x + width])


def camera_frames(width: int, height: int, per_class: int = 4) -> list[np.ndarray]:
    dirs = get_settings().dataset_dirs
    if not dirs:
        raise SystemExit("RPS_DATASET_DIRS is empty: the benchmark needs the real photos")
    photos = [p for label in ("rock", "paper", "scissors") for p in sorted((dirs[0] / label).glob("*.png"))[:per_class]]
    return [cover(cv2.imread(str(p), cv2.IMREAD_COLOR), width, height) for p in photos]


def write_index(frame: np.ndarray, index: int) -> np.ndarray:
    out = frame.copy()
    block = out.shape[1] // BITS
    for bit in range(BITS):
        value = 255 if (index >> bit) & 1 else 0
        out[-STRIP:, bit * block : (bit + 1) * block] = value
    return out


def read_index(frame: np.ndarray) -> int:
    block = frame.shape[1] // BITS
    strip = frame[-STRIP + 4 : -4]
    index = 0
    for bit in range(BITS):
        if strip[:, bit * block + 6 : (bit + 1) * block - 6].mean() > 127:
            index |= 1 << bit
    return index


def is_annotated(received: np.ndarray, sent: np.ndarray) -> bool:
    """The banner darkens the top of the frame to well under the original brightness."""
    top = slice(4, 30)
    return float(received[top].mean()) < 0.75 * float(sent[top].mean())


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


# ---- the camera process (stands in for the browser) ----
def camera_process(conn, frames: list[np.ndarray], fps: float, seconds: float) -> None:
    asyncio.run(_camera(conn, frames, fps, seconds))


async def _camera(conn, frames: list[np.ndarray], fps: float, seconds: float) -> None:
    import av
    from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError

    sent: dict[int, float] = {}
    received: dict[int, float] = {}
    stats = {"received_count": 0, "raw": 0}

    class Camera(MediaStreamTrack):
        kind = "video"

        def __init__(self) -> None:
            super().__init__()
            self.count = 0
            self.start = None

        async def recv(self):
            if self.start is None:
                self.start = time.perf_counter()
            due = self.start + self.count / fps
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            i = self.count
            self.count += 1
            frame = av.VideoFrame.from_ndarray(write_index(frames[i % len(frames)], i), format="bgr24")
            frame.pts, frame.time_base = int(i * 90000 / fps), Fraction(1, 90000)
            sent[i] = time.perf_counter()
            return frame

    pc = RTCPeerConnection()
    pc.addTrack(Camera())
    done = asyncio.Event()
    consumers: list[asyncio.Future] = []

    @pc.on("track")
    def on_track(track) -> None:
        async def consume() -> None:
            while not done.is_set():
                try:
                    frame = await track.recv()
                except MediaStreamError:  # the server hung up
                    return
                now = time.perf_counter()
                img = frame.to_ndarray(format="bgr24")
                i = read_index(img)
                stats["received_count"] += 1
                if i not in sent:
                    continue
                if not is_annotated(img, frames[i % len(frames)]):
                    stats["raw"] += 1
                elif i not in received:
                    received[i] = now

        consumers.append(asyncio.ensure_future(consume()))

    await pc.setLocalDescription(await pc.createOffer())
    conn.send({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type})
    answer = await asyncio.get_running_loop().run_in_executor(None, conn.recv)
    await pc.setRemoteDescription(RTCSessionDescription(**answer))
    await asyncio.sleep(seconds)
    done.set()
    await pc.close()
    conn.send({"sent": sent, "received": received, **stats})


# ---- the server side (what the Streamlit process runs) ----
async def serve_webrtc(conn, live: LiveAnnotator, seconds: float) -> None:
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from streamlit_webrtc.models import CallbackAttachableProcessor
    from streamlit_webrtc.process import AsyncVideoProcessTrack

    pc = RTCPeerConnection()

    @pc.on("track")
    def on_track(track) -> None:
        processor = CallbackAttachableProcessor(live.on_frame, None, None)
        pc.addTrack(AsyncVideoProcessTrack(track, processor))

    loop = asyncio.get_running_loop()
    offer = await loop.run_in_executor(None, conn.recv)
    await pc.setRemoteDescription(RTCSessionDescription(**offer))
    await pc.setLocalDescription(await pc.createAnswer())
    conn.send({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type})
    result = await loop.run_in_executor(None, conn.recv)
    await pc.close()
    return result


def run_webrtc(live: LiveAnnotator, frames: list[np.ndarray], fps: float, seconds: float) -> dict:
    ctx = mp.get_context("spawn")
    here, there = ctx.Pipe()
    camera = ctx.Process(target=camera_process, args=(there, frames, fps, seconds), daemon=True)
    camera.start()
    try:
        return asyncio.run(asyncio.wait_for(serve_webrtc(here, live, seconds), seconds + 60))
    finally:
        camera.join(10)
        if camera.is_alive():
            camera.kill()


def run_callback(live: LiveAnnotator, frames: list[np.ndarray], fps: float, seconds: float) -> dict:
    """The callback alone at the camera rate; frames that arrive while it works are dropped."""
    import av

    sent, received = {}, {}
    start = time.perf_counter()
    i = 0
    while (now := time.perf_counter()) - start < seconds:
        i = int((now - start) * fps)  # the newest frame the camera has produced
        if i in sent:
            time.sleep(max(0.0, start + (i + 1) / fps - now))
            continue
        sent[i] = start + i / fps
        frame = av.VideoFrame.from_ndarray(write_index(frames[i % len(frames)], i), format="bgr24")
        out = live.on_frame(frame).to_ndarray(format="bgr24")
        received[read_index(out)] = time.perf_counter()
    return {"sent": sent, "received": received, "received_count": len(received), "raw": 0}


def start_backend(model_dir: Path) -> tuple[str, subprocess.Popen, str]:
    from Database_connection.db import ensure_database

    base = get_settings()
    db_url = base.database_url.rsplit("/", 1)[0] + f"/rps_bench_{uuid.uuid4().hex[:8]}"
    ensure_database(db_url)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "BACKEND_PORT": str(port),
        "MODEL_DIR": str(model_dir),
        "RETRAIN_THRESHOLD": str(10**9),
        "RATE_LIMIT_PREVIEW": "0",
        "LOG_LEVEL": "WARNING",
        # serve exactly --model-dir and leave a running Airflow alone
        "MODEL_SOURCE": "local",
        "AIRFLOW_URL": "",
    }
    proc = subprocess.Popen([sys.executable, "main.py"], cwd=ROOT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return url, proc, db_url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"the backend exited ({proc.returncode}); is there a model in {model_dir}?")
        time.sleep(0.3)
    proc.terminate()
    raise SystemExit("the backend did not become ready in 90 s")


def main() -> int:
    settings = get_settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--fps", type=float, default=30.0, help="camera frame rate")
    parser.add_argument(
        "--rate",
        type=float,
        default=settings.live_max_predictions_per_second,
        help="max predictions per second (LIVE_MAX_PREDICTIONS_PER_SECOND)",
    )
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--transport", choices=("webrtc", "callback"), default="webrtc")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--backend", metavar="URL", help="use this running backend (its database gets the predictions)")
    mode.add_argument("--local", action="store_true", help="predict in-process with the TFLite model")
    parser.add_argument("--model-dir", type=Path, default=settings.model_dir)
    args = parser.parse_args()

    frames = camera_frames(args.width, args.height)
    backend_proc, db_url = None, None
    if args.local:
        from inference.model_holder import load_model_dir

        predictor = LocalPredictor(load_model_dir(args.model_dir))
    else:
        url = args.backend
        if url is None:
            url, backend_proc, db_url = start_backend(args.model_dir)
        predictor = BackendPredictor(BackendClient(url, timeout=10))
    live = LiveAnnotator(predictor, args.rate, log_every_s=1e9)
    try:
        run = run_webrtc if args.transport == "webrtc" else run_callback
        result = run(live, frames, args.fps, args.seconds)
        live.wait_idle()  # the prediction in flight when the camera stopped counts
    finally:
        if backend_proc is not None:
            backend_proc.terminate()
            backend_proc.wait(20)
            from Database_connection.db import drop_database

            drop_database(db_url)

    sent, received = result["sent"], result["received"]
    latencies = [(received[i] - sent[i]) * 1000 for i in received if i in sent]
    snap = live.snapshot()
    span = (max(received.values()) - min(received.values())) if len(received) > 1 else float("nan")
    print(
        f"live path: {args.transport}, camera {args.width}x{args.height} @ {args.fps:g} fps for {args.seconds:g} s, "
        f"predictions at most {args.rate:g}/s via {predictor.description}"
    )
    print(f"frames sent by the camera           {len(sent):6d}")
    print(
        f"frames annotated by the server      {snap['frames']:6d}  (callback p50 {snap['frame_ms_p50'] or 0:.1f} ms, "
        f"p95 {snap['frame_ms_p95'] or 0:.1f} ms)"
    )
    print(
        f"distinct annotated frames received  {len(received):6d}  "
        f"(+{result.get('raw', 0)} returned unannotated while the first was processed)"
    )
    print(f"achieved FPS (annotated, received)  {len(received) / span if span == span and span > 0 else 0:6.1f}")
    print(
        f"predictions                         {snap['predictions']:6d}  "
        f"(round trip p50 {snap['prediction_ms_p50'] or 0:.1f} ms, {snap['errors']} errors)"
    )
    print(
        f"end-to-end latency per annotated frame (camera send → annotated frame back): "
        f"p50 {pct(latencies, 50):.1f} ms  p95 {pct(latencies, 95):.1f} ms  max {max(latencies, default=0):.1f} ms"
        f"  mean {statistics.fmean(latencies) if latencies else 0:.1f} ms"
    )
    rate = snap["predictions"] / span if span == span and span > 0 else 0.0
    print(f"predictions per second {rate:.1f} (target >= 10): {'PASS' if rate >= 10 else 'MISS'}")
    return 0 if latencies else 1


if __name__ == "__main__":
    sys.exit(main())
