"""Loops against an existing champion, on the real stack (Airflow, MLflow, moto S3, backend).

In file order: a deliberately weak first model (an operator's manual run with `epochs: 1`)
becomes the champion and the floor; a threshold crossing with new labels trains a better
challenger, which the gate promotes and the backend serves; a weak manual run against it is
rejected while the champion keeps serving; a crossing without new labels is skipped
without training; no registered version ever trained on a gate image; and the dispatcher's
reconcile() closes requests whose DAG run failed or vanished in Airflow.
"""

from __future__ import annotations

import csv
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.retrain.conftest import LoopStack
from tests.retrain.test_loop import DAG_ID, STAGES, _unique_png, _wait_finished
from tests.support.procs import wait_until
from tests.support.stack import airflow_client, trigger_dag_run, wait_dag_run

pytestmark = [pytest.mark.slow, pytest.mark.services]
MODEL = "rps-classifier"
RUN_BOUND_S = 420


def _ml(loop: LoopStack):
    from mlflow import MlflowClient

    return MlflowClient(loop.stack.env["MLFLOW_TRACKING_URI"])


def _admin(loop: LoopStack) -> httpx.Client:
    user, password = loop.stack.airflow.extra["admin"]
    return airflow_client(loop.stack.airflow.url, user, password)


def _manual_run(loop: LoopStack, conf: dict) -> tuple[dict, dict[str, str]]:
    """An operator's run from the Airflow API (no retrain request); returns the run and task states."""
    ac = _admin(loop)
    run_id = f"manual-{uuid.uuid4().hex[:8]}"
    assert trigger_dag_run(ac, DAG_ID, run_id, conf).status_code == 200
    run = wait_dag_run(ac, DAG_ID, run_id, RUN_BOUND_S)
    tasks = ac.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances").json()["task_instances"]
    return run, {t["task_id"]: t["state"] for t in tasks}


def _serving(c: httpx.Client, version: str, timeout: float = 60) -> None:
    wait_until(lambda: c.get("/model").json()["version"] == version, timeout, f"the backend to serve {version}")


def _label_three(c: httpx.Client, sample_images, index: int) -> None:
    for label in ("rock", "paper", "scissors"):
        pred = c.post("/predict", files={"file": (f"{label}.png", _unique_png(sample_images[label][index]))}).json()
        assert c.post("/feedback", json={"prediction_id": pred["prediction_id"], "label": label}).status_code == 200


def test_a_weak_first_model_becomes_the_champion_and_the_floor(loop_stack: LoopStack) -> None:
    run, tasks = _manual_run(loop_stack, {"epochs": 1})
    assert run["state"] == "success" and tasks == dict.fromkeys(STAGES, "success"), tasks
    ml = _ml(loop_stack)
    first = ml.get_model_version_by_alias(MODEL, "champion")
    assert first.tags["gate_decision"] == "promoted" and "first model" in first.tags["gate_reason"]
    assert ml.get_registered_model(MODEL).tags["first_champion_version"] == first.version
    _serving(httpx.Client(base_url=loop_stack.backend_url, timeout=30), f"v{first.version}")


def test_a_better_challenger_is_promoted_through_the_loop(loop_stack: LoopStack, sample_images) -> None:
    c = httpx.Client(base_url=loop_stack.backend_url, timeout=30)
    before = c.get("/model").json()["version"]
    _label_three(c, sample_images, -1)
    request = _wait_finished(c, RUN_BOUND_S)
    assert request["state"] == "succeeded" and request["gate_decision"] == "promoted", request
    details = request["gate_details"]
    assert details["champion_version"] == before.lstrip("v")
    mcnemar = details["stats"]["mcnemar_all"]
    assert mcnemar["only_challenger_right"] > mcnemar["only_champion_right"], mcnemar
    challenger, champion = details["slices"]["challenger"], details["slices"]["champion"]
    assert challenger["eval"]["accuracy"] > champion["eval"]["accuracy"]
    assert {"eval/roboflow-sxsw", "eval/seed-drgfreeman", "eval/class/paper"} <= set(challenger)
    _serving(c, request["model_version_after"])
    ml = _ml(loop_stack)
    metrics = ml.get_run(ml.get_model_version(MODEL, details["challenger_version"]).run_id).data.metrics
    assert metrics["gate_challenger_eval_roboflow-sxsw_accuracy"] == challenger["eval/roboflow-sxsw"]["accuracy"]
    assert "gate_mcnemar_all_p_worse" in metrics


def test_a_worse_challenger_is_rejected_and_the_champion_keeps_serving(loop_stack: LoopStack) -> None:
    c = httpx.Client(base_url=loop_stack.backend_url, timeout=30)
    ml = _ml(loop_stack)
    champion = ml.get_model_version_by_alias(MODEL, "champion")
    run, tasks = _manual_run(loop_stack, {"epochs": 1, "force": True})
    assert run["state"] == "success" and tasks["evaluate_and_promote"] == "success", tasks
    newest = max(ml.search_model_versions(f"name='{MODEL}'"), key=lambda v: int(v.version))
    rejected = ml.get_model_version(MODEL, newest.version)
    assert rejected.version != champion.version
    assert rejected.tags["gate_decision"] == "rejected" and "McNemar" in rejected.tags["gate_reason"], rejected.tags
    assert ml.get_model_version_by_alias(MODEL, "champion").version == champion.version
    time.sleep(5)  # longer than the backend's alias poll: nothing may have swapped
    assert c.get("/model").json()["version"] == f"v{champion.version}"


def test_a_request_with_no_new_training_data_is_skipped(loop_stack: LoopStack, sample_images) -> None:
    c = httpx.Client(base_url=loop_stack.backend_url, timeout=30)
    ml = _ml(loop_stack)
    versions_before = len(ml.search_model_versions(f"name='{MODEL}'"))
    for label in ("rock", "paper", "scissors"):  # predictions only: nobody labelled them
        c.post("/predict", files={"file": ("x.png", _unique_png(sample_images[label][-3]))}).raise_for_status()
    found: dict = {}

    def settled() -> bool:
        found.update(c.get("/retrains").json()[0])
        return found["state"] in ("succeeded", "failed", "skipped")

    wait_until(settled, RUN_BOUND_S, "the retrain request to settle")
    assert found["state"] == "skipped", found
    assert "identical" in found["skip_reason"] and found["data_version"]
    assert found["gate_decision"] is None and found["model_version_after"] is None
    assert len(ml.search_model_versions(f"name='{MODEL}'")) == versions_before  # nothing was trained
    tasks = _admin(loop_stack).get(f"/api/v2/dags/{DAG_ID}/dagRuns/{found['dag_run_id']}/taskInstances").json()
    states = {t["task_id"]: t["state"] for t in tasks["task_instances"]}
    assert states["has_new_training_data"] == "success" and states["retrain_rps_model"] == "skipped", states
    metrics = c.get("/metrics").text
    assert 'rps_retrain_requests{state="skipped"} 1.0' in metrics


def test_no_registered_version_trained_on_a_gate_image(loop_stack: LoopStack, tmp_path: Path) -> None:
    import mlflow

    with (loop_stack.workspace / "Data" / "processed" / "manifest.csv").open() as fh:
        gate = {r["sha256"] for r in csv.DictReader(fh) if r["split"] in ("eval", "holdout")}
    assert len(gate) > 500
    versions = _ml(loop_stack).search_model_versions(f"name='{MODEL}'")
    assert len(versions) >= 3
    for v in versions:
        path = mlflow.artifacts.download_artifacts(
            run_id=v.run_id,
            artifact_path="serving/training_set.csv",
            dst_path=str(tmp_path / v.version),
            tracking_uri=loop_stack.stack.env["MLFLOW_TRACKING_URI"],
        )
        with open(path) as fh:
            trained_on = {r["sha256"] for r in csv.DictReader(fh)}
        assert len(trained_on) > 1500 and not trained_on & gate, v.version


def test_reconcile_closes_requests_whose_run_failed_or_vanished(loop_stack: LoopStack) -> None:
    ac = _admin(loop_stack)
    failed_run = f"rps-retrain-failed-{uuid.uuid4().hex[:6]}"
    assert trigger_dag_run(ac, DAG_ID, failed_run, {}).status_code == 200
    r = ac.patch(f"/api/v2/dags/{DAG_ID}/dagRuns/{failed_run}", json={"state": "failed"})
    assert r.status_code == 200, r.text
    with psycopg.connect(loop_stack.db_url, autocommit=True) as conn:
        ids = [
            conn.execute(
                "INSERT INTO retrain_requests (last_prediction_id, prediction_count, state, dag_run_id, triggered_at)"
                " VALUES (%s, 3, %s, %s, now() - make_interval(mins => %s)) RETURNING id",
                (-n, state, run_id, age_min),
            ).fetchone()[0]
            for n, state, run_id, age_min in (
                (1, "running", failed_run, 0),  # the DAG run failed without its own bookkeeping
                (2, "triggered", f"rps-retrain-gone-{uuid.uuid4().hex[:6]}", 120),  # Airflow never heard of it
            )
        ]
    c = httpx.Client(base_url=loop_stack.backend_url, timeout=30)

    def closed() -> bool:
        rows = {r["id"]: r for r in c.get("/retrains").json()}
        return all(rows[i]["state"] == "failed" for i in ids)

    try:
        wait_until(closed, 60, "reconcile() to close both requests")
    finally:
        with psycopg.connect(loop_stack.db_url, autocommit=True) as conn:
            conn.execute("UPDATE retrain_requests SET state = 'failed' WHERE id = ANY(%s)", (ids,))
    rows = {r["id"]: r for r in c.get("/retrains").json()}
    assert failed_run in rows[ids[0]]["last_error"] and "failed" in rows[ids[0]]["last_error"]
    assert "unknown to Airflow" in rows[ids[1]]["last_error"]
