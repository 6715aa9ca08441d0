"""MLflow's basic-auth app as the deployed stack runs it (mlflow/entrypoint.sh, MLFLOW_AUTH=true):
anonymous requests are refused, the backend's reader identity can load the champion but not
move it, the pipeline's writer identity can log, register and promote."""

from __future__ import annotations

import secrets

import httpx
import pytest
from mlflow.exceptions import MlflowException

from mlflow import MlflowClient
from tests.support.stack import start_mlflow

pytestmark = [pytest.mark.services, pytest.mark.slow]

MODEL = "rps-classifier"


@pytest.fixture(scope="module")
def mlflow_with_auth(tmp_path_factory):
    passwords = {name: secrets.token_hex(16) for name in ("admin", "reader", "writer")}
    service = start_mlflow(
        tmp_path_factory.mktemp("mlflow-auth"),
        env={
            "MLFLOW_AUTH": "true",
            "MLFLOW_ADMIN_PASSWORD": passwords["admin"],
            "MLFLOW_READER_PASSWORD": passwords["reader"],
            "MLFLOW_WRITER_PASSWORD": passwords["writer"],
        },
    )
    try:
        yield service.url, passwords
    finally:
        service.stop()


def as_user(monkeypatch, url: str, username: str, password: str) -> MlflowClient:
    """MLflow's client reads the identity from these variables (Compose sets them per service)."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    return MlflowClient(url)


def test_writes_need_the_writer_and_the_backend_only_reads(mlflow_with_auth, monkeypatch, tmp_path) -> None:
    url, passwords = mlflow_with_auth
    assert httpx.get(f"{url}/health").status_code == 200  # health checks need no login
    anonymous = httpx.get(f"{url}/api/2.0/mlflow/registered-models/search")
    assert anonymous.status_code == 401
    wrong = httpx.get(f"{url}/api/2.0/mlflow/registered-models/search", auth=("rps-writer", "wrong"))
    assert wrong.status_code == 401

    writer = as_user(monkeypatch, url, "rps-writer", passwords["writer"])
    experiment = writer.create_experiment("rps-classifier")
    run = writer.create_run(experiment)
    (tmp_path / "model.txt").write_text("weights")
    writer.log_artifact(run.info.run_id, str(tmp_path / "model.txt"), "model")
    writer.set_terminated(run.info.run_id)
    writer.create_registered_model(MODEL)
    v1 = writer.create_model_version(MODEL, f"runs:/{run.info.run_id}/model", run.info.run_id)
    v2 = writer.create_model_version(MODEL, f"runs:/{run.info.run_id}/model", run.info.run_id)
    writer.set_registered_model_alias(MODEL, "champion", v1.version)

    reader = as_user(monkeypatch, url, "rps-reader", passwords["reader"])
    champion = reader.get_model_version_by_alias(MODEL, "champion")
    assert champion.version == v1.version
    downloaded = reader.download_artifacts(run.info.run_id, "model", str(tmp_path / "dl"))
    assert (tmp_path / "dl" / "model" / "model.txt").read_text() == "weights", downloaded
    for write in (
        lambda: reader.set_registered_model_alias(MODEL, "champion", v2.version),
        lambda: reader.delete_registered_model(MODEL),
        lambda: reader.log_metric(run.info.run_id, "accuracy", 1.0),
    ):
        with pytest.raises(MlflowException) as refused:
            write()
        assert refused.value.error_code == "PERMISSION_DENIED"
    assert reader.get_model_version_by_alias(MODEL, "champion").version == v1.version

    writer = as_user(monkeypatch, url, "rps-writer", passwords["writer"])
    writer.set_registered_model_alias(MODEL, "champion", v2.version)
    assert writer.get_model_version_by_alias(MODEL, "champion").version == v2.version
