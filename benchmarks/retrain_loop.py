"""Time from the threshold crossing to the new champion serving, split per stage.

    .venv/bin/python benchmarks/retrain_loop.py [--runs 2]

Starts an isolated stack exactly as the end-to-end test does (moto S3, MLflow, Airflow's
three processes, the backend, a throwaway database and data workspace), then runs the loop
`--runs` times, each after RETRAIN_THRESHOLD new labelled images. Like `make up`, it first
versions the base dataset once (timed separately); with `--cold` the first loop does that
work itself (every processed file pushed to S3). Target: under 90 s per loop; a
second run spends most of its time outside feature extraction.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import DATASETS  # noqa: E402
from tests.retrain.conftest import benchmark_loop, loop_backend_env  # noqa: E402
from tests.retrain.test_loop import DAG_ID, STAGES, _unique_png  # noqa: E402
from tests.support import db as dbs  # noqa: E402
from tests.support.procs import start, wait_http, wait_until  # noqa: E402
from tests.support.stack import AIRFLOW_BACKEND_USER, airflow_client, start_stack, wait_dag_run  # noqa: E402


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--cold", action="store_true", help="skip the data bootstrap `make up` does once")
    parser.add_argument("--aug-copies", type=int, default=0)
    parser.add_argument("--model-dir", default=str(ROOT / "artifacts" / "model"))
    parser.add_argument(
        "--artifacts-dir",
        help="where retrains keep models and the feature cache (default: the test session's, .run/test/artifacts)",
    )
    args = parser.parse_args()
    run_dir, name, _, port, shared = benchmark_loop(
        "loop-bench",
        RETRAIN_AUG_COPIES=str(args.aug_copies),
        **({"ARTIFACTS_DIR": str(Path(args.artifacts_dir).resolve())} if args.artifacts_dir else {}),
    )
    url = shared["BACKEND_URL"]
    t0 = time.monotonic()
    stack = start_stack(run_dir / "stack", env=shared)
    print(f"stack cold start: {time.monotonic() - t0:.1f}s")
    env = loop_backend_env(shared, stack, port, MODEL_DIR=args.model_dir)
    backend = start("backend", [sys.executable, "main.py"], env, run_dir / "logs")
    images = sorted((DATASETS / "roboflow-sxsw" / "rock").iterdir())
    try:
        wait_http(f"{url}/ready", 90, backend)
        if not args.cold:  # `make up` versions the base dataset once; retrains then push only new files
            t0 = time.monotonic()
            for stage in ("extract", "preprocess", "version"):
                subprocess.run(
                    [sys.executable, "-m", "src.pipeline", stage],
                    env={**os.environ, **env},
                    cwd=ROOT,
                    check=True,
                    capture_output=True,
                )
            took = time.monotonic() - t0
            print(f"setup (make up, once): extract + preprocess + DVC push of the base dataset: {took:.1f}s")
        c = httpx.Client(base_url=url, timeout=30)
        ac = airflow_client(stack.airflow.url, AIRFLOW_BACKEND_USER, env["AIRFLOW_PASSWORD"])
        print(
            f"{'run':>3} {'trigger':>8} " + " ".join(f"{s[:12]:>12}" for s in STAGES) + f" {'serving':>8} {'total':>7}"
        )
        for run in range(1, args.runs + 1):
            before = c.get("/model").json()["version"]
            crossing = time.time()
            for i in range(3):
                data = _unique_png(images[run * 3 + i])
                pid = c.post("/predict", files={"file": ("x.png", data)}).json()["prediction_id"]
                c.post("/feedback", json={"prediction_id": pid, "label": "rock"}).raise_for_status()
            wait_until(lambda: c.get("/retrains").json()[0]["state"] in ("succeeded", "failed"), 900, "the loop")
            request = c.get("/retrains").json()[0]
            wait_until(
                lambda b=before, r=request: c.get("/model").json()["version"] != b or r["gate_decision"] != "promoted",
                60,
                "the new champion to serve",
            )
            serving = time.time()
            wait_dag_run(ac, DAG_ID, request["dag_run_id"], 120)
            tis = {
                t["task_id"]: t
                for t in ac.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{request['dag_run_id']}/taskInstances").json()[
                    "task_instances"
                ]
            }
            first_start = min(ts(t["start_date"]) for t in tis.values())
            durations = [ts(tis[s]["end_date"]) - ts(tis[s]["start_date"]) for s in STAGES]
            print(
                f"{run:>3} {first_start - crossing:8.1f} "
                + " ".join(f"{d:12.1f}" for d in durations)
                + f" {serving - ts(tis['reload_backend']['end_date']):8.1f} {serving - crossing:7.1f}"
                + f"   state={request['state']} gate={request['gate_decision']}"
            )
            xcom = ac.get(
                f"/api/v2/dags/{DAG_ID}/dagRuns/{request['dag_run_id']}/taskInstances/retrain_rps_model"
                "/xcomEntries/return_value"
            ).json()["value"]
            trained = xcom if isinstance(xcom, dict) else json.loads(xcom)
            print(
                f"    inside retrain_rps_model: {trained['timings']} "
                f"(features computed {trained['features_computed']}, cached {trained['features_cached']})"
            )
        print(
            "columns: seconds; trigger = crossing → first task running; serving = reload task end → /model "
            "reports the new version; total = crossing → new champion serving (target < 90 s)"
        )
    finally:
        backend.stop()
        stack.stop()
        dbs.drop_db(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
