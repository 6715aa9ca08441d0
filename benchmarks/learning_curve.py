"""A new user, end to end: do their corrections make the served model better on their photos?

    .venv/bin/python benchmarks/learning_curve.py [--user IMG_7079] [--batch 10] [--batches 3]

Starts a fresh isolated stack as the end-to-end tests do (moto S3, MLflow, Airflow, the
backend, a throwaway database and data workspace), trains the first champion exactly as
`make up` does (`python -m src.pipeline all`), then plays a new user through the public API.

The user is one roboflow `source_clip` of the reserve split (src/splits.py): one person,
camera and background that no model trained on and the gate does not score. Its crops are
split by source photo (augmented variants of one photo stay on one side): *feed* photos
are sent through `/predict` then `/feedback` with their true label, `--batch` at a time
(the backend's RETRAIN_THRESHOLD), so each batch triggers the real DAG; *test* photos are
only classified (`/predict?store=false`: never stored, never trained on). After each
retrain settles (promoted and served, rejected or skipped), the served model's accuracy on
the test photos is recorded. Prints a table and a JSON line; writes a PNG plot.

    .venv/bin/python benchmarks/learning_curve.py --offline --weights 1,4 [--fed 0,10,20,26]

measures the effect of USER_SAMPLE_WEIGHT without the stack: the first champion's recipe
(src.train on the trainable base data, RETRAIN_AUG_COPIES copies) plus the first N feed photos
as user images (minus the user hold-out), scored on the same test photos.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from src.splits import base_split  # noqa: E402
from utils.settings import Settings  # noqa: E402

DATASET = "roboflow-sxsw"
FINAL = ("succeeded", "failed", "skipped")


@dataclass(frozen=True)
class Photo:
    path: Path
    label: str


def user_photos(dataset_dir: Path, clip: str, settings: Settings) -> tuple[list[Photo], list[Photo]]:
    """The clip's crops as (feed, test), split by source photo; refuses a clip outside the reserve."""
    if base_split(f"{DATASET}:{clip}", settings) != "reserve":
        raise ValueError(f"{clip} is not in the reserve split: it would not be a new user")
    with (dataset_dir / "manifest.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["source_clip"] == clip]
    if not rows:
        raise ValueError(f"no crops of source_clip {clip!r} in {dataset_dir}")
    feed, test = [], []
    for r in sorted(rows, key=lambda r: hashlib.sha256(r["path"].encode()).hexdigest()):  # interleave classes
        side = feed if hashlib.sha256(r["source_image"].encode()).digest()[0] < 128 else test
        side.append(Photo(dataset_dir / r["path"], r["label"]))
    return feed, test


def accuracy(c: httpx.Client, photos: list[Photo]) -> float:
    """Share of photos the served model gets right; nothing is stored or counted."""
    right = 0
    for p in photos:
        r = c.post("/predict", params={"store": "false"}, files={"file": (p.path.name, p.path.read_bytes())})
        r.raise_for_status()
        right += r.json()["label"] == p.label
    return right / len(photos)


def feed(c: httpx.Client, photos: list[Photo]) -> None:
    """What a user does: a prediction, then the correct label."""
    for p in photos:
        r = c.post("/predict", files={"file": (p.path.name, p.path.read_bytes())})
        r.raise_for_status()
        c.post("/feedback", json={"prediction_id": r.json()["prediction_id"], "label": p.label}).raise_for_status()


def settle(c: httpx.Client, after_id: int, timeout: float) -> dict:
    """Wait for a request newer than `after_id` to end; if promoted, until the backend serves it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = [r for r in c.get("/retrains").json() if r["id"] > after_id]
        if rows and rows[0]["state"] in FINAL:
            request = rows[0]
            if request["gate_decision"] == "promoted":
                while c.get("/model").json()["version"] != request["model_version_after"]:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{request['model_version_after']} was promoted but is not served")
                    time.sleep(0.5)
            return request
        time.sleep(1)
    raise TimeoutError(f"no retrain request after #{after_id} settled within {timeout:.0f}s")


def curve(
    c: httpx.Client, feed_photos: list[Photo], test_photos: list[Photo], batch: int, batches: int, timeout: float
) -> list[dict]:
    """Accuracy on the test photos before any correction and after each batch's retrain."""
    rows = [{"fed": 0, "accuracy": accuracy(c, test_photos), "model": c.get("/model").json()["version"]}]
    last_id = max((r["id"] for r in c.get("/retrains").json()), default=0)
    for i in range(batches):
        chunk = feed_photos[i * batch : (i + 1) * batch]
        if len(chunk) < batch:
            break
        feed(c, chunk)
        request = settle(c, last_id, timeout)
        last_id = request["id"]
        rows.append(
            {
                "fed": (i + 1) * batch,
                "accuracy": accuracy(c, test_photos),
                "model": c.get("/model").json()["version"],
                "request": request["id"],
                "state": request["state"],
                "gate": request["gate_decision"],
                "gate_reason": (request.get("gate_details") or {}).get("reason") or request.get("skip_reason"),
            }
        )
    return rows


def plot(rows: list[dict], png: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["fed"] for r in rows], [r["accuracy"] for r in rows], marker="o")
    for r in rows[1:]:
        ax.annotate(r.get("gate") or r.get("state"), (r["fed"], r["accuracy"]), fontsize=8)
    ax.set(xlabel="labelled photos of the new user", ylabel="accuracy on their other photos", title=title)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def offline(feed_photos: list[Photo], test_photos: list[Photo], weights: list[float], fed: list[int], aug: int) -> list:
    """User-weight sweep with src.train directly (same split, guard and features as the DAG)."""
    import numpy as np

    from inference.model_holder import load_model_dir
    from src.data import Sample, file_sha, list_datasets, list_samples
    from src.splits import USER_DATASET, early_stopping_split, user_split
    from src.train import TrainConfig, assemble_samples, train
    from tests.conftest import DATASETS, TEST_RUN_DIR, WEIGHTS
    from utils.settings import CLASS_NAMES

    data_dir = Path(tempfile.mkdtemp(prefix="rps-curve-data-"))
    (data_dir / "raw").mkdir()
    for ds in DATASETS.iterdir():
        (data_dir / "raw" / ds.name).symlink_to(ds)
    results = []
    for weight in weights:
        settings = Settings(
            data_dir=data_dir,
            artifacts_dir=TEST_RUN_DIR / "artifacts",
            backbone_weights=str(WEIGHTS),
            mlflow_tracking_uri="",
            user_sample_weight=weight,
        )
        gate_samples = [
            s
            for root in list_datasets(data_dir / "raw")
            for s in list_samples(root)
            if base_split(s.group, settings) == "eval"
        ]
        gate = {file_sha(s.path) for s in gate_samples}
        config = TrainConfig(epochs=settings.retrain_epochs, aug_copies=aug)
        pool = [s for part in assemble_samples(settings, config) for s in part]
        for n in fed:
            if n == 0 and results:
                continue  # no user images: the weight changes nothing
            shas = [(p, file_sha(p.path)) for p in feed_photos[:n]]
            users = [
                Sample(p.path, p.label, f"db:{sha}", USER_DATASET, sha)
                for p, sha in shas
                if user_split(sha, settings) == "train"
            ]
            result = train(settings, config, splits=early_stopping_split(pool + users, 0.15), forbidden=gate)
            model = load_model_dir(result.model_dir, source="offline")

            def score(photos) -> float:
                probs = model.run(np.stack([model.prepare(p.path.read_bytes()) for p in photos]))  # noqa: B023
                return round(float((probs.argmax(1) == [CLASS_NAMES.index(p.label) for p in photos]).mean()), 4)

            row = {
                "weight": weight,
                "fed": n,
                "trained_user_images": len(users),
                "accuracy": score(test_photos),
                "gate_eval_accuracy": score(gate_samples),
            }
            print(json.dumps(row), flush=True)
            results.append(row)
    return results


def main() -> int:
    from tests.conftest import DATASETS, TEST_RUN_DIR, WEIGHTS
    from tests.retrain.conftest import make_workspace
    from tests.support import db as dbs
    from tests.support.procs import free_port, start, wait_http
    from tests.support.stack import start_stack

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--user", default="IMG_7079", help="a roboflow source_clip of the reserve split")
    parser.add_argument("--batch", type=int, default=10, help="labelled photos per retrain (RETRAIN_THRESHOLD)")
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--aug-copies", type=int, default=2, help="RETRAIN_AUG_COPIES")
    parser.add_argument("--png", type=Path, default=ROOT / "artifacts" / "benchmarks" / "learning_curve.png")
    parser.add_argument("--offline", action="store_true", help="sweep USER_SAMPLE_WEIGHT with src.train, no stack")
    parser.add_argument("--weights", default="1,4")
    parser.add_argument("--fed", default="0,10,20,26")
    args = parser.parse_args()

    feed_photos, test_photos = user_photos(DATASETS / DATASET, args.user, Settings())
    print(f"user {args.user}: {len(feed_photos)} photos to label, {len(test_photos)} to test on")
    if args.offline:
        weights = [float(w) for w in args.weights.split(",")]
        rows = offline(feed_photos, test_photos, weights, [int(n) for n in args.fed.split(",")], args.aug_copies)
        print(json.dumps({"user": args.user, "test_photos": len(test_photos), "offline": rows}))
        return 0
    run_dir = Path(tempfile.mkdtemp(prefix="rps-learning-curve-"))
    name = dbs.unique_name("rps_curve")
    db_url = dbs.create_db(name)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    shared = {
        "DATABASE_URL": db_url,
        "DATA_WORKSPACE": str(make_workspace(run_dir / "workspace")),
        "ARTIFACTS_DIR": str(TEST_RUN_DIR / "artifacts"),
        "BACKBONE_WEIGHTS": str(WEIGHTS),
        "RETRAIN_AUG_COPIES": str(args.aug_copies),
        "BACKEND_URL": url,
        "ADMIN_TOKEN": "bench-admin-token",
        "RPS_DATASET_DIRS": "",
    }
    t0 = time.monotonic()
    stack = start_stack(run_dir / "stack", env=shared)
    env = {
        **shared,
        **stack.env,
        "MODEL_SOURCE": "mlflow",
        "BACKEND_PORT": str(port),
        "DISPATCHER_POLL_S": "1",
        "MODEL_POLL_SECONDS": "2",
        "RETRAIN_THRESHOLD": str(args.batch),
    }
    backend = None
    try:
        from Database_connection.db import migrate

        migrate(db_url)  # as `make up` does before anything else
        first = subprocess.run(  # the first champion, as `make up` trains it
            [sys.executable, "-m", "src.pipeline", "all", "--if-no-champion"],
            env={**os.environ, **env},
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if first.returncode != 0:
            raise RuntimeError(f"the first champion failed:\n{first.stderr[-3000:]}")
        print(f"stack + first champion: {time.monotonic() - t0:.0f}s")
        backend = start("backend", [sys.executable, "main.py"], env, run_dir / "logs")
        wait_http(f"{url}/ready", 120, backend)
        with httpx.Client(base_url=url, timeout=60) as c:
            t0 = time.monotonic()
            rows = curve(c, feed_photos, test_photos, args.batch, args.batches, 900)
            took = time.monotonic() - t0
    finally:
        if backend is not None:
            backend.stop()
        stack.stop()
        dbs.drop_db(name)
    print(f"{'fed':>4} {'accuracy':>9} {'model':>6}  gate")
    for r in rows:
        print(f"{r['fed']:>4} {r['accuracy']:9.3f} {r['model']:>6}  {r.get('gate') or r.get('state') or ''}")
    png = plot(rows, args.png, f"new user {args.user}: {len(test_photos)} test photos, 1 run")
    print(f"{len(rows) - 1} retrains in {took:.0f}s; plot: {png}")
    print(json.dumps({"user": args.user, "test_photos": len(test_photos), "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
