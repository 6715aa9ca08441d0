"""The OpenCV real-time client, run as its real CLI on a video made from real photos."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import cv2
import httpx
import numpy as np
import psycopg
import pytest

from tests.support.procs import PROJECT_ROOT
from tests.ui.media import fit_frame

pytestmark = pytest.mark.slow
SIZE = (320, 240)


@pytest.fixture(autouse=True)
def isolated_from_the_native_stack(monkeypatch):
    """The backend started by `backend_server` must not trigger a running Airflow or read MLflow."""
    monkeypatch.setenv("AIRFLOW_URL", "")
    monkeypatch.setenv("MODEL_SOURCE", "local")


@pytest.fixture
def clip(sample_images: dict[str, list[Path]], tmp_path: Path) -> Path:
    """Twelve frames: two photos per class from each shared dataset, as an MJPG video."""
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, SIZE)
    for label in ("rock", "paper", "scissors"):
        photos = sample_images[label][:2] + sample_images[label][4:6]
        for photo in photos:
            writer.write(fit_frame(cv2.imread(str(photo), cv2.IMREAD_COLOR), *SIZE))
    writer.release()
    return path


def decoded_frames(video: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(video))
    out = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(frame)
    cap.release()
    return out


def run_client(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "inference.webcam", *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_local_labels_match_the_backends_for_the_same_frames(clip, model_dir, backend_server, tmp_path):
    url, _ = backend_server
    out_video, out_csv = tmp_path / "annotated.avi", tmp_path / "frames.csv"
    proc = run_client(
        "--source",
        str(clip),
        "--local",
        "--model-dir",
        str(model_dir),
        "--csv",
        str(out_csv),
        "--out-video",
        str(out_video),
        "--display",
        "auto",
    )
    assert proc.returncode == 0, proc.stderr
    assert "12 frames" in proc.stdout and "fps achieved" in proc.stdout

    rows = read_csv(out_csv)
    frames = decoded_frames(clip)
    assert [int(r["frame"]) for r in rows] == list(range(12)) == list(range(len(frames)))
    with httpx.Client(base_url=url, timeout=30) as http:
        for row, frame in zip(rows, frames, strict=True):
            # PNG keeps the decoded pixels exact, so both sides classify identical input.
            png = cv2.imencode(".png", frame)[1].tobytes()
            served = http.post("/predict", files={"file": ("frame.png", png, "image/png")}).json()
            assert row["label"] == served["label"], f"frame {row['frame']}"
            assert float(row["confidence"]) == pytest.approx(served["confidence"], abs=1e-4)
            assert sum(float(row[c]) for c in ("rock", "paper", "scissors")) == pytest.approx(1, abs=1e-3)

    annotated = decoded_frames(out_video)
    assert len(annotated) == 12 and annotated[0].shape == (SIZE[1], SIZE[0], 3)
    banner = np.abs(annotated[0][:20].astype(int) - frames[0][:20].astype(int)).mean()
    assert banner > 10, "the annotation banner is drawn on the frames"


def test_backend_mode_posts_every_frame(clip, backend_server, db_url, tmp_path):
    url, _ = backend_server
    out_csv = tmp_path / "frames.csv"
    proc = run_client("--source", str(clip), "--backend", url, "--csv", str(out_csv), "--max-fps", "30")
    assert proc.returncode == 0, proc.stderr
    rows = read_csv(out_csv)
    assert len(rows) == 12 and all(not r["error"] for r in rows)
    with psycopg.connect(db_url) as conn:
        stored = dict(conn.execute("SELECT id, label FROM predictions").fetchall())
    assert {int(r["prediction_id"]): r["label"] for r in rows} == stored
    fps = float(proc.stdout.split(" fps achieved")[0].rsplit(" ", 1)[1])
    assert 0 < fps <= 31, "--max-fps caps the rate"


def test_max_frames_and_clear_errors(clip, tmp_path):
    dead = run_client("--source", str(clip), "--backend", "http://127.0.0.1:9", "--max-frames", "2")
    assert dead.returncode == 1 and "backend unavailable" in dead.stderr and "Traceback" not in dead.stderr
    missing = run_client("--source", str(tmp_path / "nope.mp4"), "--local")
    assert missing.returncode == 1 and "no such video file" in missing.stderr
    headless = run_client("--source", str(clip), "--local", "--display", "on", env={"DISPLAY": ""})
    assert headless.returncode == 2 and "no display" in headless.stderr
