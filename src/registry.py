"""MLflow, write side: log a training run, register the model, move the champion alias.

Each registered version's run also carries a `serving/` folder (TFLite + metadata) —
what the backend actually loads — next to the Keras flavour that MLflow understands.
The reads (champion lookup, downloads) live in `inference.registry`, which the backend
uses without importing training code; they are re-exported here for the training stages.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

from inference.registry import CHAMPION, champion, download_model, download_serving, resolve, run_id_of
from inference.registry import client as _client
from utils.settings import Settings

__all__ = [
    "CHAMPION",
    "FIRST_CHAMPION_TAG",
    "champion",
    "download_model",
    "download_serving",
    "first_champion",
    "log_run_metrics",
    "log_training_run",
    "mark_first_champion",
    "resolve",
    "run_id_of",
    "set_champion",
    "tag_version",
    "version_tags",
]
log = logging.getLogger(__name__)
PIP_REQUIREMENTS = ["tensorflow-cpu==2.21.0", "keras==3.15.1", "numpy", "opencv-python-headless"]


def _flat_metrics(report: dict[str, Any]) -> dict[str, float]:
    metrics = {k: float(report[k]) for k in ("accuracy", "macro_f1", "val_loss") if k in report}
    for cls, values in report.get("per_class", {}).items():
        for name in ("precision", "recall", "f1"):
            metrics[f"{cls}_{name}"] = float(values[name])
    for ds, acc in report.get("per_dataset", {}).items():
        metrics[f"accuracy_{re.sub(r'[^A-Za-z0-9_]', '_', ds)}"] = float(acc)
    return metrics


def log_training_run(
    settings: Settings,
    result,
    *,
    data_version: str | None = None,
    dvc_file: Path | None = None,
    log_file: Path | None = None,
    tags: dict[str, str] | None = None,
) -> dict[str, str]:
    """Params, metrics, curves, plots, the serving files and the Keras model; registers a version."""
    from mlflow.entities import Metric

    import mlflow

    client = _client(settings)
    mlflow.set_experiment(settings.mlflow_experiment)
    with mlflow.start_run(run_name=result.version) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in result.params.items()})
        mlflow.log_metrics(_flat_metrics(result.metrics))
        mlflow.log_metrics({f"time_{k}": float(v) for k, v in result.timings.items()})
        curve = [
            Metric(name, float(value), 0, step)
            for name, values in result.history.items()
            for step, value in enumerate(values)
        ]
        if curve:
            client.log_batch(run.info.run_id, metrics=curve)
        digest = result.params.get("training_set_digest", "")
        mlflow.set_tags(
            {
                "data_version": data_version or "untracked",
                "training_id": result.version,
                "training_set_digest": digest,
                **(tags or {}),
            }
        )
        mlflow.log_artifacts(str(result.model_dir), artifact_path="serving")
        for path in result.artifacts.values():
            mlflow.log_artifact(str(path), artifact_path="plots")
        if log_file and log_file.exists():
            mlflow.log_artifact(str(log_file), artifact_path="logs")
        if dvc_file and dvc_file.exists():
            mlflow.log_artifact(str(dvc_file), artifact_path="data")
        info = mlflow.keras.log_model(
            result.model,
            name="model",
            registered_model_name=settings.registered_model_name,
            pip_requirements=PIP_REQUIREMENTS,
        )
        run_id = run.info.run_id
    version = str(info.registered_model_version)
    client.set_model_version_tag(settings.registered_model_name, version, "data_version", data_version or "untracked")
    client.set_model_version_tag(settings.registered_model_name, version, "training_id", result.version)
    client.set_model_version_tag(settings.registered_model_name, version, "training_set_digest", digest)
    log.info("registered %s version %s (run %s)", settings.registered_model_name, version, run_id)
    return {"run_id": run_id, "version": version}


def set_champion(settings: Settings, version: str, tags: dict[str, str]) -> None:
    client = _client(settings)
    for key, value in tags.items():
        client.set_model_version_tag(settings.registered_model_name, version, key, value)
    client.set_registered_model_alias(settings.registered_model_name, CHAMPION, version)


def tag_version(settings: Settings, version: str, tags: dict[str, str]) -> None:
    client = _client(settings)
    for key, value in tags.items():
        client.set_model_version_tag(settings.registered_model_name, version, key, value)


FIRST_CHAMPION_TAG = "first_champion_version"


def first_champion(settings: Settings) -> str | None:
    """The version the gate's floor is measured from (a registered-model tag), if any."""
    from mlflow.exceptions import MlflowException

    try:
        model = _client(settings).get_registered_model(settings.registered_model_name)
    except MlflowException:
        return None
    return model.tags.get(FIRST_CHAMPION_TAG)


def mark_first_champion(settings: Settings, version: str) -> None:
    _client(settings).set_registered_model_tag(settings.registered_model_name, FIRST_CHAMPION_TAG, version)


def log_run_metrics(settings: Settings, run_id: str, metrics: dict[str, float]) -> None:
    """Attach the gate's numbers to the challenger's training run."""
    from mlflow.entities import Metric

    client = _client(settings)
    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, 0) for k, v in metrics.items() if v == v]  # NaN: nothing to log
    for i in range(0, len(batch), 500):
        client.log_batch(run_id, metrics=batch[i : i + 500])


def version_tags(settings: Settings, version: str) -> dict[str, str]:
    return dict(_client(settings).get_model_version(settings.registered_model_name, version).tags)
