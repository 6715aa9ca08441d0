"""The service stack as tests start it: moto, MLflow and Airflow through the project's own
entrypoint scripts, each on a free port with its own database."""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest

from tests.support.stack import (
    Stack,
    airflow_client,
    start_stack,
    trigger_dag_run,
    wait_dag,
    wait_dag_run,
)

pytestmark = [pytest.mark.services, pytest.mark.slow]

DAG_ID = "stack_smoke"
SMOKE_DAG = textwrap.dedent(
    '''
    """One TaskFlow task that reports what a task sees: the run's conf and the settings."""
    from airflow.sdk import dag, get_current_context, task


    @dag(dag_id="stack_smoke", schedule=None, catchup=False, max_active_runs=1)
    def stack_smoke():
        @task
        def report() -> dict:
            from utils.settings import get_settings

            s = get_settings()
            conf = get_current_context()["dag_run"].conf
            return {"conf": conf, "mlflow": s.mlflow_tracking_uri, "s3": s.s3_endpoint_url}

        report()


    stack_smoke()
    '''
)


def s3_client(stack: Stack):
    env = stack.env
    return boto3.client(
        "s3",
        endpoint_url=env["S3_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    dags = tmp_path_factory.mktemp("dags")
    (dags / "stack_smoke.py").write_text(SMOKE_DAG)
    stack = start_stack(tmp_path_factory.mktemp("stack"), dags_folder=dags, mlflow_artifacts_in_s3=True)
    try:
        yield stack
    finally:
        t0 = time.monotonic()
        stack.stop()
        print(f"\nstack stopped in {time.monotonic() - t0:.1f}s")


def test_cold_start_times(stack: Stack, capsys: pytest.CaptureFixture) -> None:
    with capsys.disabled():
        print("\ncold start (s): " + json.dumps(stack.timings))
    assert stack.timings["stack_ready_s"] < 180


def test_airflow_runs_a_triggered_dag_as_the_backend_user(stack: Stack, capsys: pytest.CaptureFixture) -> None:
    airflow = stack.airflow
    assert airflow is not None
    user, password = airflow.extra["backend"]
    assert (user, password) == (stack.env["AIRFLOW_USERNAME"], stack.env["AIRFLOW_PASSWORD"])
    r = httpx.get(f"{airflow.url}/api/v2/dags", auth=(user, password), timeout=10)
    assert r.status_code == 401  # basic auth is not accepted: a JWT is

    with airflow_client(airflow.url, user, password) as client:
        t0 = time.monotonic()
        dag = wait_dag(client, DAG_ID, timeout=60)
        listed = time.monotonic() - t0
        assert dag["is_paused"] is False

        run_id = "smoke-request-1"
        t0 = time.monotonic()
        r = trigger_dag_run(client, DAG_ID, run_id, {"retrain_request_id": 1})
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "queued"
        duplicate = trigger_dag_run(client, DAG_ID, run_id, {"retrain_request_id": 1})
        assert duplicate.status_code == 409, duplicate.text

        run = wait_dag_run(client, DAG_ID, run_id, timeout=120)
        elapsed = time.monotonic() - t0
        assert run["state"] == "success", stack.airflow.logs()
        xcom = client.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/report/xcomEntries/return_value")
        assert xcom.status_code == 200, xcom.text
        value = xcom.json()["value"]
        value = json.loads(value) if isinstance(value, str) else value
        # The task sees the run's conf and settings pointing at this stack's services.
        assert value == {"conf": {"retrain_request_id": 1}, "mlflow": stack.mlflow.url, "s3": stack.s3.url}
    with capsys.disabled():
        print(f"\nairflow: DAG listed after {listed:.1f}s; trigger → success in {elapsed:.1f}s")


def test_airflow_rejects_a_bad_password(stack: Stack) -> None:
    r = httpx.post(f"{stack.airflow.url}/auth/token", json={"username": "backend", "password": "wrong"}, timeout=10)
    assert r.status_code == 401


def test_mlflow_tracks_a_run_with_artifacts_in_s3(stack: Stack, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    assert httpx.get(f"{stack.mlflow.url}/health", timeout=5).status_code == 200
    client = MlflowClient(tracking_uri=stack.mlflow.url)
    experiment_id = client.create_experiment("stack-smoke")
    run = client.create_run(experiment_id)
    client.log_metric(run.info.run_id, "accuracy", 0.9)
    (tmp_path / "note.txt").write_text("hello")
    client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"))
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["note.txt"]
    assert client.get_run(run.info.run_id).data.metrics == {"accuracy": 0.9}

    s3 = s3_client(stack)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="rps-test", Prefix="mlflow/").get("Contents", [])]
    assert any(k.endswith(f"{run.info.run_id}/artifacts/note.txt") for k in keys), keys


def test_mlflow_answers_the_compose_service_name_and_refuses_other_hosts(stack: Stack) -> None:
    port = stack.mlflow.url.rsplit(":", 1)[1]
    api = f"{stack.mlflow.url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert httpx.get(api, headers={"Host": f"mlflow:{port}"}, timeout=5).status_code == 200
    assert httpx.get(api, headers={"Host": "attacker.example:80"}, timeout=5).status_code == 403


def test_moto_serves_the_bucket(stack: Stack) -> None:
    s3 = s3_client(stack)
    assert "rps-test" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.put_object(Bucket="rps-test", Key="probe", Body=b"x")
    assert s3.get_object(Bucket="rps-test", Key="probe")["Body"].read() == b"x"
