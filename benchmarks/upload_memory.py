"""Memory and time of the backend under large phone photos.

Starts the backend as its own process (`python main.py`, so its RSS is its own) on a
throwaway database and the model in --model-dir, then:

1. sends 32 uploads of a 40 MP JPEG at once to POST /predict and samples the backend's
   RSS (VmRSS every 10 ms, VmHWM at the end);
2. classifies a 12 MP phone photo (with EXIF rotation) 30 times and reports the
   server-side `latency_ms` (decode + preprocessing + inference) and the round trip.

    .venv/bin/python benchmarks/upload_memory.py --model-dir artifacts/model [--parallel 32]

Targets: peak RSS under 700 MB with 32 parallel 40 MP uploads (every request answered:
200, or 503 `busy` with Retry-After); a 12 MP photo classified in under 100 ms (p50 of
`latency_ms`).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from Database_connection.db import drop_database, ensure_database  # noqa: E402
from utils.settings import get_settings  # noqa: E402


def photo_jpeg(width: int, height: int, orientation: int = 1, quality: int = 90) -> bytes:
    """A photo-like JPEG (smooth shapes plus sensor-like noise) with an EXIF orientation."""
    from PIL import Image

    rng = np.random.default_rng(width)
    small = rng.integers(0, 256, (height // 64, width // 64, 3), dtype=np.uint8)
    pixels = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    pixels = cv2.add(pixels, rng.integers(0, 12, pixels.shape, dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=quality, exif=exif.tobytes())
    return out.getvalue()


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for {pid}")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", type=Path, default=get_settings().model_dir)
    parser.add_argument("--parallel", type=int, default=32)
    parser.add_argument("--n", type=int, default=30, help="12 MP classifications")
    args = parser.parse_args()
    base = get_settings()
    db_url = base.database_url.rsplit("/", 1)[0] + f"/rps_bench_{uuid.uuid4().hex[:8]}"
    ensure_database(db_url)
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "MODEL_DIR": str(args.model_dir),
        "MODEL_SOURCE": "local",
        "MLFLOW_TRACKING_URI": "",
        "AIRFLOW_URL": "",
        "BACKEND_PORT": str(port),
        "RETRAIN_THRESHOLD": str(10**9),
        "LOG_LEVEL": "WARNING",
    }
    backend = subprocess.Popen([sys.executable, "main.py"], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or backend.poll() is not None:
                raise RuntimeError("the backend did not become ready")
            time.sleep(0.3)

        big = photo_jpeg(7200, 5500)  # 39.6 MP
        phone = photo_jpeg(4000, 3000, orientation=6)  # 12 MP, stored as 3000x4000
        print(f"40 MP JPEG: {len(big) / 1e6:.1f} MB; 12 MP JPEG: {len(phone) / 1e6:.1f} MB")
        with httpx.Client(base_url=url, timeout=60) as c:
            for _ in range(3):
                c.post("/predict", params={"store": "false"}, files={"file": ("p.jpg", phone)}).raise_for_status()
        baseline = rss_mb(backend.pid)

        peak, stop = [baseline], threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak.append(rss_mb(backend.pid))
                time.sleep(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()

        def upload(i: int) -> tuple[int, float, str]:
            start = time.perf_counter()
            r = httpx.post(f"{url}/predict", files={"file": (f"big{i}.jpg", big)}, timeout=120)
            return r.status_code, time.perf_counter() - start, r.headers.get("retry-after", "")

        start = time.perf_counter()
        with ThreadPoolExecutor(args.parallel) as pool:
            results = list(pool.map(upload, range(args.parallel)))
        wall = time.perf_counter() - start
        stop.set()
        sampler.join()
        hwm = rss_mb(backend.pid, "VmHWM")
        statuses = {s: sum(1 for r in results if r[0] == s) for s in sorted({r[0] for r in results})}
        busy_ok = all(r[2] for r in results if r[0] == 503)
        print(f"{args.parallel} parallel 40 MP uploads: statuses {statuses} in {wall:.1f} s")
        times = [r[1] for r in results]
        print(f"  request time p50 {statistics.median(times):.2f} s, max {max(times):.2f} s")
        print(f"  backend RSS: baseline {baseline:.0f} MB, peak sampled {max(peak):.0f} MB, VmHWM {hwm:.0f} MB")
        rss_ok = hwm < 700 and set(statuses) <= {200, 503} and busy_ok
        print(f"  target peak RSS < 700 MB (every answer 200 or 503+Retry-After): {'met' if rss_ok else 'MISSED'}")

        server_ms, round_ms = [], []
        with httpx.Client(base_url=url, timeout=60) as c:
            for _ in range(args.n):
                start = time.perf_counter()
                r = c.post("/predict", params={"store": "false"}, files={"file": ("phone.jpg", phone)})
                round_ms.append((time.perf_counter() - start) * 1000)
                r.raise_for_status()
                server_ms.append(r.json()["latency_ms"])
        p50 = statistics.median(server_ms)
        print(
            f"12 MP photo: latency_ms p50 {p50:.1f} (max {max(server_ms):.1f}); "
            f"round trip p50 {statistics.median(round_ms):.1f} ms"
        )
        print(f"  target 12 MP classified in < 100 ms: {'met' if p50 < 100 else 'MISSED'}")
        return 0 if rss_ok and p50 < 100 else 1
    finally:
        backend.terminate()
        backend.wait(20)
        drop_database(db_url)


if __name__ == "__main__":
    raise SystemExit(main())
