"""The product's Compose stack for real: the images built from this checkout, the local
docker-compose.yml started on the project's Docker Engine (tests/support/compose.py says what
the test override changes), the retraining loop run inside the containers, Chromium on the
Streamlit container, and `docker compose down -v` leaving nothing behind.

One test, because every step needs the stack the previous one built (minutes). It prints the
time of each phase; a cold run also builds the base image.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import boto3
import cv2
import httpx
import numpy as np
import pytest

from tests.conftest import ARTIFACTS_DIR, TEST_RUN_DIR
from tests.delivery import specs
from tests.retrain.test_loop import DAG_ID, STAGES
from tests.support import compose as c
from tests.support.procs import wait_until
from tests.support.stack import airflow_client, wait_dag_run

pytestmark = [pytest.mark.compose, pytest.mark.slow, pytest.mark.timeout(3600)]
DOTENV = specs.read_env_file(c.PROJECT_ROOT / ".env")
# Measured here: the loop in containers ~2-3 min (a cold workspace versions the base dataset first).
LOOP_BOUND_S = 900
PAGES = ("", "camera", "live", "system")


def _unique_png(path: Path) -> bytes:
    bgr = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    ok, buf = cv2.imencode(".png", cv2.flip(bgr, 0))
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def stack():
    phases = c.Phases("compose test")
    engine = c.docker_engine()
    images = c.base_images(engine)
    phases.done("engine + base images")
    base = c.build_base_image(engine, images)
    phases.done(f"shared base image ({'built' if base.built_s else 'cached'} {base.image})")
    project = c.ComposeProject.create(TEST_RUN_DIR / "compose", engine, images, base)
    try:
        project.build()
        phases.done("five images")
        project.compose("up", "-d", "--wait", "--wait-timeout", "300", "mlflow")
        phases.done("postgres, S3, MLflow healthy")
        trained = project.compose("--profile", "train", "run", "--rm", "trainer", timeout=1200)
        print("trainer:", trained.strip().splitlines()[-1:] if trained.strip() else "(no output)")
        phases.done("trainer: Data/raw, DVC, first champion through the gate")
        project.compose("up", "-d", "--wait", "--wait-timeout", "600")
        phases.done("every service healthy")
        yield project, phases
    except BaseException:
        print(project.logs(80))
        raise
    finally:
        logs = project.logs(400)
        ARTIFACTS_DIR.mkdir(exist_ok=True)
        (ARTIFACTS_DIR / "compose-stack.log").write_text(logs)
        left = project.down()
        phases.done("down -v")
        print("compose test phases:", json.dumps(phases.times))
        assert left == {"containers": [], "volumes": [], "networks": []}, "docker compose down -v left these"


def test_compose_stack_runs_the_loop_and_serves_the_ui(stack, sample_images) -> None:
    project, phases = stack
    # Every long-running service of the local file (Grafana aside) reports healthy.
    states = [json.loads(line) for line in project.compose("ps", "--format", "json").splitlines() if line.strip()]
    health = {s["Service"]: s["Health"] for s in states if s["State"] == "running"}
    expected = {
        "postgres", "minio", "mlflow", "airflow-api-server", "airflow-scheduler",
        "airflow-dag-processor", "backend", "streamlit", "prometheus",
    }  # fmt: skip
    assert set(health) == expected and set(health.values()) == {"healthy"}, health

    backend = httpx.Client(base_url=project.url("backend", 8000), timeout=60)
    before = backend.get("/ready").json()
    assert backend.get("/model").json()["source"] == "models:/rps-classifier@champion"

    # predict -> feedback, three times: the threshold (3) is crossed
    for label in ("rock", "paper", "scissors"):
        data = _unique_png(sample_images[label][-2])
        r = backend.post("/predict", files={"file": (f"{label}.png", data)})
        assert r.status_code == 200, r.text
        fb = backend.post("/feedback", json={"prediction_id": r.json()["prediction_id"], "label": label})
        assert fb.status_code == 200, fb.text

    request: dict = {}

    def finished() -> bool:
        rows = backend.get("/retrains").json()
        if rows and rows[0]["state"] in ("succeeded", "failed"):
            request.update(rows[0])
            return True
        return False

    wait_until(finished, LOOP_BOUND_S, "the retrain request to finish in the Airflow containers")
    phases.done("loop: threshold -> DAG -> new champion")
    assert request["state"] == "succeeded", request

    # The DAG ran in the Airflow containers, every stage succeeded.
    airflow = airflow_client(project.url("airflow-api-server", 8080), "backend", DOTENV["AIRFLOW_PASSWORD"])
    assert wait_dag_run(airflow, DAG_ID, request["dag_run_id"], 60)["state"] == "success"
    tasks = airflow.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{request['dag_run_id']}/taskInstances").json()
    assert {t["task_id"]: t["state"] for t in tasks["task_instances"]} == dict.fromkeys(STAGES, "success")

    # DVC pushed to the S3 container: the data version's directory object is in the bucket.
    s3 = boto3.client(
        "s3",
        endpoint_url=project.url("minio", 9000),
        aws_access_key_id=DOTENV["MINIO_ROOT_USER"],
        aws_secret_access_key=DOTENV["MINIO_ROOT_PASSWORD"],
        region_name="us-east-1",
    )
    bucket = DOTENV["S3_BUCKET"]
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    keys = {o["Key"] for page in pages for o in page.get("Contents", [])}
    version = request["data_version"]
    assert f"dvcstore/files/md5/{version[:2]}/{version[2:]}.dir" in keys
    assert any(k.startswith("mlflow/") for k in keys), "MLflow's artifacts go to the same bucket"

    # MLflow registered the new version and the gate promoted it; the backend container serves it.
    # (MLflow checks the Host header: the published port is ephemeral, so name an allowed host.)
    mlflow = httpx.Client(base_url=project.url("mlflow", 5000), headers={"Host": "localhost:5000"}, timeout=30)
    r = mlflow.get("/api/2.0/mlflow/registered-models/alias", params={"name": "rps-classifier", "alias": "champion"})
    assert r.status_code == 200, r.text
    champion = r.json()["model_version"]
    tags = {t["key"]: t["value"] for t in champion.get("tags", [])}
    assert tags["gate_decision"] == request["gate_decision"] == "promoted", (tags, request)
    assert request["model_version_after"] == f"v{champion['version']}" != before["model_version"]
    after = backend.get("/ready").json()
    assert after["model_version"] == f"v{champion['version']}", after

    # Chromium loads every page of the Streamlit container.
    _pages_render(project.url("streamlit", 8501))
    phases.done("Chromium: every page")


def _pages_render(url: str) -> None:
    from playwright.sync_api import sync_playwright

    from tests.ui.conftest import CHROMIUM_FLAGS, wait_for_app

    # Debian's chromium (`make install`); a CI runner's own Chrome where it has no Debian package.
    executable = shutil.which("chromium") or shutil.which("google-chrome")
    assert executable, "Debian's chromium is not on PATH; `make install` installs it"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            for name in PAGES:
                page.goto(f"{url}/{name}")
                wait_for_app(page)
                assert page.locator('[data-testid="stException"]').count() == 0, name
            # The upload page classifies through the backend container.
            page.goto(url)
            wait_for_app(page)
            photo = c.SHARED / "datasets" / "rps" / "seed-drgfreeman" / "rock"
            page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(
                str(sorted(photo.iterdir())[0])
            )
            page.wait_for_selector('[data-testid="rps-prediction"]')
            ARTIFACTS_DIR.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS_DIR / "compose-upload.png"))
        finally:
            browser.close()
