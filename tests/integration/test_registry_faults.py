"""The model registry down, against a real MLflow server that the test stops and starts
again (same database, same artifacts, same port) and the backend as a real process."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import model_env
from tests.support import db as dbs
from tests.support.procs import free_port, start, wait_http, wait_until
from tests.support.stack import start_mlflow

pytestmark = [pytest.mark.slow, pytest.mark.services]
MODEL_NAME = "rps-classifier"


def _register_champion(url: str, model_dir: Path) -> str:
    """Log the serving files as a run's `serving/` folder, register it, alias it champion
    (what the training stage does, without training)."""
    from mlflow import MlflowClient

    client = MlflowClient(url)
    experiment = client.create_experiment("registry-faults")
    run = client.create_run(experiment)
    client.log_artifacts(run.info.run_id, str(model_dir), artifact_path="serving")
    client.set_terminated(run.info.run_id)
    client.create_registered_model(MODEL_NAME)
    version = client.create_model_version(MODEL_NAME, f"runs:/{run.info.run_id}/serving", run_id=run.info.run_id)
    client.set_registered_model_alias(MODEL_NAME, "champion", version.version)
    return f"v{version.version}"


@pytest.fixture
def registry_db() -> Iterator[str]:
    name = dbs.unique_name("mlflow_faults")
    dbs.create_db(name)
    yield name
    dbs.drop_db(name)


def test_a_backend_started_while_mlflow_is_down_serves_once_it_is_back(
    tmp_path: Path, registry_db: str, db_url: str, model_dir: Path, data_dir: Path, sample_images
) -> None:
    port, artifacts = free_port(), str(tmp_path / "mlflow-artifacts")
    first = start_mlflow(tmp_path / "mlflow1", port=port, database=registry_db, artifacts_destination=artifacts)
    try:
        version = _register_champion(first.url, model_dir)
    finally:
        first.stop()

    backend_port = free_port()
    backend_url = f"http://127.0.0.1:{backend_port}"
    env = {
        **model_env(data_dir, tmp_path / "artifacts"),
        "MODEL_DIR": str(tmp_path / "no-local-model"),  # nothing to fall back on
        "MODEL_SOURCE": "mlflow",
        "MLFLOW_TRACKING_URI": first.url,
        "MODEL_POLL_SECONDS": "60",  # recovery must come from the retry pace, not the poll
        "MODEL_RETRY_INITIAL_S": "1",
        "MODEL_RETRY_MAX_S": "2",
        "DATABASE_URL": db_url,
        "BACKEND_PORT": str(backend_port),
    }
    backend = start(f"backend-{backend_port}", [sys.executable, "main.py"], env, tmp_path / "logs")
    second = None
    try:
        wait_http(f"{backend_url}/health", 90, backend)
        not_ready = httpx.get(f"{backend_url}/ready", timeout=5)
        assert not_ready.status_code == 503 and not_ready.json()["code"] == "model_not_loaded"
        time.sleep(3)
        assert httpx.get(f"{backend_url}/ready", timeout=5).status_code == 503

        second = start_mlflow(tmp_path / "mlflow2", port=port, database=registry_db, artifacts_destination=artifacts)
        back = time.monotonic()
        wait_until(lambda: httpx.get(f"{backend_url}/ready", timeout=5).status_code == 200, 30, "ready", backend)
        recovery = time.monotonic() - back
        assert recovery < 15, f"served {recovery:.1f} s after MLflow was back"
        info = httpx.get(f"{backend_url}/model", timeout=5).json()
        assert info["version"] == version and info["source"] == f"models:/{MODEL_NAME}@champion"

        # MLflow down again while serving: the model keeps serving; a reload fails clearly, fast.
        second.stop()
        path = sample_images["rock"][0]
        r = httpx.post(f"{backend_url}/predict", files={"file": (path.name, path.read_bytes())}, timeout=30)
        assert r.status_code == 200 and r.json()["model_version"] == version
        start_reload = time.monotonic()
        token = {"Authorization": "Bearer " + _admin_token()}
        reload = httpx.post(f"{backend_url}/admin/reload", headers=token, timeout=60)
        assert reload.status_code == 502 and f"Still serving {version}" in reload.json()["message"], reload.text
        assert time.monotonic() - start_reload < 15
        assert httpx.get(f"{backend_url}/ready", timeout=5).status_code == 200
    finally:
        backend.stop()
        if second is not None:
            second.stop()


def _admin_token() -> str:
    from utils.settings import Settings

    return Settings().admin_token
