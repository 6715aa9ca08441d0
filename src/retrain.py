"""Stage 4: retrain MobileNet on Data/processed (train split) and log it all to MLflow.

Backbone features are cached per processed-image hash, so a retrain after a few new
labels computes features for those images only.
"""

from __future__ import annotations

import logging
from pathlib import Path

from src.data import Sample
from src.extract import read_manifest
from src.registry import log_training_run
from src.splits import early_stopping_split, training_set_digest
from src.train import TrainConfig, train
from src.versioning import dvc_file
from utils.settings import Settings

log = logging.getLogger(__name__)


def processed_samples(workspace: Path, split: str) -> list[Sample]:
    root = workspace / "Data" / "processed"
    manifest = root / "manifest.csv"
    if not manifest.exists():
        raise FileNotFoundError(f"{manifest} is missing: run the preprocess stage first")
    return [
        Sample(root / r["path"], r["label"], r["group"], r["dataset"], r["sha256"])
        for r in read_manifest(manifest)
        if r["split"] == split and r["status"] == "kept"
    ]


def candidate_digest(workspace: Path) -> str:
    """The training-set digest a retrain on this workspace would record (see src.train)."""
    return training_set_digest((s.key, s.label) for s in processed_samples(workspace, "train"))


def forbidden_keys(workspace: Path) -> set[str]:
    """Every image the gate scores (eval set and user hold-out), by original hash."""
    manifest = workspace / "Data" / "processed" / "manifest.csv"
    return {r["sha256"] for r in read_manifest(manifest) if r["split"] != "train"}


def retrain_model(
    settings: Settings,
    data_version: str,
    workspace: Path | None = None,
    request_id: int | None = None,
    epochs: int | None = None,
) -> dict[str, object]:
    """Train on the train split (an inner group split for early stopping), register in MLflow."""
    workspace = workspace or settings.data_workspace
    samples = processed_samples(workspace, "train")
    if len({s.label for s in samples}) < 3:
        raise ValueError("the training data must hold all three classes")
    splits = early_stopping_split(samples, 0.15)
    config = TrainConfig(epochs=epochs or settings.retrain_epochs, aug_copies=settings.retrain_aug_copies)
    log_file = settings.artifacts_dir / "logs" / f"retrain-{request_id or 'manual'}-{data_version[:8]}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(min(root.level, logging.INFO))
    try:
        result = train(settings, config, splits=splits, forbidden=forbidden_keys(workspace))
    finally:
        root.removeHandler(handler)
        handler.close()
    tags = {"retrain_request_id": str(request_id)} if request_id else {}
    registered = log_training_run(
        settings,
        result,
        data_version=data_version,
        dvc_file=dvc_file(settings, workspace),
        log_file=log_file,
        tags=tags,
    )
    return {
        **registered,
        "training_id": result.version,
        "val_accuracy": result.metrics["accuracy"],
        "features_computed": result.params["features_computed"],
        "features_cached": result.params["features_cached"],
        "timings": {k: round(v, 2) for k, v in result.timings.items()},
    }
