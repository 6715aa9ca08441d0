"""docker-compose.celery.yml for real: the local stack with Airflow's CeleryExecutor, a Redis
broker and two workers, the retraining DAG triggered through Airflow's REST API, and each task
found (by Airflow's own task-instance records) on the worker its queue sends it to: the training
task on the training image's worker, every other task on the Airflow image's.

One test, because it needs the stack the fixture built (minutes); it prints each phase's time.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import ARTIFACTS_DIR, TEST_RUN_DIR
from tests.delivery import specs
from tests.retrain.test_loop import DAG_ID, STAGES
from tests.support import compose as c
from tests.support.stack import airflow_client, wait_dag, wait_dag_run

pytestmark = [pytest.mark.compose, pytest.mark.slow, pytest.mark.timeout(2400)]
DOTENV = specs.read_env_file(c.PROJECT_ROOT / ".env")
TRAINING_TASK = "retrain_rps_model"
WORKERS = ("airflow-worker", "airflow-worker-training")
STARTED = ("backend", "airflow-api-server", "airflow-scheduler", "airflow-dag-processor", *WORKERS)
# One epoch on the features the trainer cached: the DAG with every stage, kept short on 2 cores.
RUN_BOUND_S = 900


@pytest.fixture(scope="module")
def celery_stack() -> Iterator[c.ComposeProject]:
    phases = c.Phases("celery stack test")
    engine, images, base = c.prepared_engine(phases)
    # The workers run the DAG's retrains, so they get what the test override gives the scheduler.
    services: dict[str, dict] = {name: {"environment": {"RETRAIN_AUG_COPIES": "0"}} for name in WORKERS}
    services["redis"] = {"image": images["REDIS_IMAGE"]}
    layers = ("docker-compose.celery.yml",)
    project = c.ComposeProject.create(
        TEST_RUN_DIR / "celery-stack", engine, images, base, extra_files=layers, services=services
    )
    with c.torn_down(project, phases, ARTIFACTS_DIR / "celery-stack.log"):
        project.compose("build", "airflow-init", "trainer", "mlflow", "backend")
        phases.done("four images")
        project.compose("up", "-d", "--wait", "--wait-timeout", "300", "mlflow")
        project.compose("--profile", "train", "run", "--rm", "trainer", timeout=1200)
        phases.done("trainer: Data/raw, DVC, first champion")
        project.compose("up", "-d", "--wait", "--wait-timeout", "600", *STARTED, timeout=900)
        phases.done("backend, Airflow, Redis and both Celery workers healthy")
        yield project


def _hostnames(project: c.ComposeProject, service: str) -> set[str]:
    return {c.inspect_json(project.env, "inspect", cid)[0]["Config"]["Hostname"] for cid in project.containers(service)}


def test_the_training_task_runs_on_the_training_worker(celery_stack: c.ComposeProject) -> None:
    project = celery_stack
    default_hosts, training_hosts = (_hostnames(project, s) for s in WORKERS)
    scheduler_hosts = _hostnames(project, "airflow-scheduler")
    assert default_hosts and training_hosts and not default_hosts & training_hosts, (default_hosts, training_hosts)

    airflow = airflow_client(project.url("airflow-api-server", 8080), "backend", DOTENV["AIRFLOW_PASSWORD"])
    wait_dag(airflow, DAG_ID, 120)
    run_id = f"celery-{uuid.uuid4().hex[:8]}"
    r = airflow.post(
        f"/api/v2/dags/{DAG_ID}/dagRuns",
        json={"dag_run_id": run_id, "logical_date": None, "conf": {"force": True, "epochs": 1}},
    )
    assert r.status_code == 200, r.text
    run = wait_dag_run(airflow, DAG_ID, run_id, RUN_BOUND_S)

    tasks = airflow.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances").json()["task_instances"]
    placed = {t["task_id"]: (t["state"], t["queue"], t["hostname"]) for t in tasks}
    print("task instances (state, queue, hostname):", placed, "workers:", default_hosts, training_hosts)
    assert run["state"] == "success", placed
    assert {t: s for t, (s, _, _) in placed.items()} == dict.fromkeys(STAGES, "success")
    for task_id, (_, queue, hostname) in placed.items():
        if task_id == TRAINING_TASK:
            assert queue == "training" and hostname in training_hosts, (task_id, queue, hostname)
        else:
            assert queue == "default" and hostname in default_hosts, (task_id, queue, hostname)
        assert hostname not in scheduler_hosts, f"{task_id} ran in the scheduler: CeleryExecutor is not in force"
