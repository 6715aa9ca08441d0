"""MLflow registry, read side: which version is the champion, and fetch its serving files.

The backend needs only these reads, so they live here rather than in `src/` (training
code); `src.registry` adds the write side (log a run, register, move the alias) and
re-exports these. Each registered version's run carries a `serving/` folder (TFLite +
metadata) — what the backend loads.
"""

from __future__ import annotations

import re
from pathlib import Path

from utils.settings import Settings

CHAMPION = "champion"


def client(settings: Settings):
    """An MlflowClient for the configured server (mlflow is imported only when needed)."""
    import mlflow
    from mlflow import MlflowClient

    if not settings.mlflow_tracking_uri:
        raise RuntimeError("MLFLOW_TRACKING_URI is not set")
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    return MlflowClient(settings.mlflow_tracking_uri)


def champion(settings: Settings) -> dict[str, str] | None:
    """The version behind the `champion` alias, or None when there is none yet."""
    from mlflow.exceptions import MlflowException

    try:
        mv = client(settings).get_model_version_by_alias(settings.registered_model_name, CHAMPION)
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in str(exc).lower():
            return None
        raise
    return {"version": str(mv.version), "run_id": mv.run_id}


def run_id_of(settings: Settings, version: str) -> str:
    return client(settings).get_model_version(settings.registered_model_name, version).run_id


def download_serving(settings: Settings, run_id: str, dst: Path) -> Path:
    """Fetch the run's `serving/` folder (model.tflite + metadata.json)."""
    import mlflow

    client(settings)
    dst.mkdir(parents=True, exist_ok=True)
    path = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="serving", dst_path=str(dst), tracking_uri=settings.mlflow_tracking_uri
    )
    return Path(path)


def resolve(settings: Settings, ref: str) -> dict[str, str]:
    """`models:/name@alias` or `models:/name/N` → {version, run_id}."""
    match = re.fullmatch(r"models:/([^/@]+)(?:@([\w-]+)|/(\d+))", ref)
    if not match:
        raise ValueError(f"{ref!r} is not models:/NAME@ALIAS or models:/NAME/VERSION")
    name, alias, number = match.groups()
    mlflow_client = client(settings)
    mv = (
        mlflow_client.get_model_version_by_alias(name, alias)
        if alias
        else mlflow_client.get_model_version(name, number)
    )
    return {"version": str(mv.version), "run_id": mv.run_id}


def download_model(settings: Settings, ref: str, dst: Path) -> Path:
    return download_serving(settings, resolve(settings, ref)["run_id"], dst)
