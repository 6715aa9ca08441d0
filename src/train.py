"""`python -m src.train`: MobileNet transfer learning on the trainable part of Data/raw.

Only images that `src.splits` marks trainable are used (never the gate's evaluation set,
the reserve groups or the user hold-out), and `train()` refuses any other. Frozen backbone
features are cached per image hash; a dense head trains on them with class weights (user
labels weigh `USER_SAMPLE_WEIGHT` times more); optional fine-tuning of the top blocks
follows. The result is a versioned model directory (Keras + TFLite + metadata + the hashes
of its training images) and `artifacts/model` is pointed at it atomically.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from src.data import Sample, describe, file_sha, group_split, list_datasets, list_samples, random_split
from src.model import Architecture
from src.splits import USER_DATASET, base_split, trainable, training_set_digest
from utils.metrics import classification_report, plot_confusion_matrix, plot_learning_curves
from utils.settings import CLASS_NAMES, Settings, get_settings

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    epochs: int = 40
    batch_size: int = 256
    learning_rate: float = 1e-3
    aug_copies: int = 4
    val_fraction: float = 0.2
    seed: int = 0
    split: str = "group"
    fine_tune_epochs: int = 0
    fine_tune_layers: int = 12
    fine_tune_lr: float = 1e-4
    max_per_dataset: int = 0
    datasets: list[str] = field(default_factory=list)
    feature_set: str = ""  # empty: FEATURE_SET from the settings


@dataclass
class TrainResult:
    model_dir: Path
    version: str
    metrics: dict[str, Any]
    history: dict[str, list[float]]
    timings: dict[str, float]
    artifacts: dict[str, Path]
    params: dict[str, Any]
    model: Any = None  # the Keras model, for MLflow's keras flavour


def _subsample(samples: list[Sample], limit: int, seed: int) -> list[Sample]:
    """A class-stratified, group-preserving subset: for quick runs (tests, smoke checks)."""
    if not limit or len(samples) <= limit:
        return samples
    rng = np.random.default_rng(seed)
    groups = sorted({s.group for s in samples})
    rng.shuffle(groups)
    keep, chosen = [], set()
    per_class = {c: 0 for c in CLASS_NAMES}
    for g in groups:
        members = [s for s in samples if s.group == g]
        if per_class[members[0].label] >= limit // len(CLASS_NAMES):
            continue
        chosen.add(g)
        keep += members
        per_class[members[0].label] += len(members)
    return keep


def assemble_samples(settings: Settings, config: TrainConfig) -> tuple[list[Sample], list[Sample]]:
    """Train/validation samples from the trainable groups of every dataset, each dataset
    split on its own groups. The gate's evaluation and reserve groups are left out."""
    raw = settings.data_dir / "raw"
    if not raw.is_dir():
        raise FileNotFoundError(f"{raw} does not exist: run `python -m src.data bootstrap` first")
    train, val = [], []
    roots = [d for d in list_datasets(raw) if not config.datasets or d.name in config.datasets]
    if not roots:
        raise FileNotFoundError(f"no datasets with rock/paper/scissors folders under {raw}")
    splitter = random_split if config.split == "random" else group_split
    for root in roots:
        pool = [s for s in list_samples(root) if base_split(s.group, settings) == "train"]
        t, v = splitter(_subsample(pool, config.max_per_dataset, config.seed), config.val_fraction, config.seed)
        train += t
        val += v
    return train, val


def forbidden_keys(settings: Settings) -> set[str]:
    """Hashes of every base image outside the training split (gate set and reserve)."""
    raw = settings.data_dir / "raw"
    if not raw.is_dir():
        return set()
    return {
        file_sha(s.path)
        for root in list_datasets(raw)
        for s in list_samples(root)
        if base_split(s.group, settings) != "train"
    }


def check_trainable(samples: list[Sample], settings: Settings, forbidden: set[str]) -> None:
    """Refuse to fit on any image the gate or a hold-out may score: leakage is a bug, not a warning."""
    bad = [s for s in samples if not trainable(s.dataset, s.group, s.key, settings) or s.key in forbidden]
    if bad:
        raise ValueError(f"{len(bad)} training images belong to the evaluation set or a hold-out, e.g. {bad[0].path}")


def write_training_set(path: Path, fit: list[Sample], val: list[Sample]) -> str:
    """The hashes of every image the model learnt from (fit) or stopped early on (val); returns
    the digest of the pool, which is what `has_new_training_data` compares."""
    with path.open("w") as fh:
        fh.write("sha256,label,dataset,role\n")
        for role, samples in (("fit", fit), ("val", val)):
            for s in sorted(samples, key=lambda s: s.key):
                fh.write(f"{s.key},{s.label},{s.dataset},{role}\n")
    return training_set_digest((s.key, s.label) for s in fit + val)


def _features(extractor, samples: list[Sample], copies: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, rows, D) features of N images (the view, its copies and, for hand-aware features,
    their mirror views) and their N labels."""
    feats = extractor.features(((s.key, s.path.read_bytes) for s in samples), copies)
    x = np.stack([feats[s.key] for s in samples])
    return x, np.array([CLASS_NAMES.index(s.label) for s in samples], np.int64)


def class_weights(y: np.ndarray) -> dict[int, float]:
    counts = np.bincount(y, minlength=len(CLASS_NAMES)).astype(float)
    counts[counts == 0] = 1
    return {i: float(len(y) / (len(CLASS_NAMES) * c)) for i, c in enumerate(counts)}


def new_version() -> str:
    return datetime.now(UTC).strftime("local-%Y%m%dT%H%M%S%fZ")


def sample_weights(y: np.ndarray, is_user: np.ndarray, user_weight: float) -> np.ndarray:
    """Class-balancing weights, times `user_weight` for rows from user-labelled images: a few
    dozen corrections must move a model trained on thousands of base images."""
    per_class = class_weights(y)
    return np.array([per_class[int(c)] for c in y]) * np.where(is_user, user_weight, 1.0)


def fit_heads(x, y, weights, validation, config: TrainConfig, n_heads: int, normalizer=None):
    """`n_heads` dense heads (seeds config.seed, +1, ...) with early stopping on `validation`,
    averaged into one; returns the head and the first member's history."""
    import keras

    from src.model import build_head, ensemble

    heads, history = [], {}
    for member_seed in range(config.seed, config.seed + n_heads):
        keras.utils.set_random_seed(member_seed)
        member = build_head(x.shape[1], normalizer=normalizer)
        member.compile(
            optimizer=keras.optimizers.Adam(config.learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=6, restore_best_weights=True)
        fit = member.fit(
            x,
            y,
            validation_data=validation,
            epochs=config.epochs,
            batch_size=config.batch_size,
            sample_weight=weights,
            callbacks=[stop],
            verbose=0,
            shuffle=True,
        )
        heads.append(member)
        history = history or {k: [float(v) for v in vs] for k, vs in fit.history.items()}
    return ensemble(heads), history


def train(
    settings: Settings,
    config: TrainConfig,
    splits: tuple[list[Sample], list[Sample]] | None = None,
    out_root: Path | None = None,
    forbidden: set[str] | None = None,
) -> TrainResult:
    """Train, evaluate on the held-out split, export; returns where everything went.

    `forbidden`: hashes no trainer may see (defaults to the base data's gate and reserve
    images); any overlap with the training samples raises before anything is fitted."""
    import keras
    import tensorflow as tf

    from src.features import feature_extractor
    from src.model import assemble, export_tflite, feature_normalizer, view_probabilities

    keras.utils.set_random_seed(config.seed)
    timings: dict[str, float] = {}
    arch = Architecture.from_settings(settings, config.feature_set or None)
    if arch.uses_hands and config.fine_tune_epochs:
        raise ValueError("fine-tuning is implemented for the `mobilenet` feature set only")
    if arch.uses_hands and config.aug_copies > settings.hand_aug_copies:
        # each augmented copy runs the whole hand stage (palm + landmarks): HAND_AUG_COPIES caps it
        log.info("mobilenet+hand: %d augmented copies (HAND_AUG_COPIES)", settings.hand_aug_copies)
        config = replace(config, aug_copies=settings.hand_aug_copies)
    train_s, val_s = splits or assemble_samples(settings, config)
    check_trainable(train_s + val_s, settings, forbidden_keys(settings) if forbidden is None else forbidden)
    log.info("train %s | val %s", describe(train_s), describe(val_s))

    t0 = time.perf_counter()
    extractor = feature_extractor(settings, arch)
    backbone = extractor.backbone_model
    x_train, y_train = _features(extractor, train_s, config.aug_copies)
    x_val, y_val = _features(extractor, val_s, 0)
    timings["features_s"] = time.perf_counter() - t0
    log.info("features: %d computed, %d cached", extractor.stats.computed, extractor.stats.cached)

    t0 = time.perf_counter()
    rows, views = x_train.shape[1], x_val.shape[1]
    is_user = np.repeat([s.dataset == USER_DATASET for s in train_s], rows)
    x_rows, y_rows = x_train.reshape(-1, x_train.shape[-1]), np.repeat(y_train, rows)
    weights = sample_weights(y_rows, is_user, settings.user_sample_weight)
    normalizer = feature_normalizer(x_rows) if arch.uses_hands else None
    validation = (x_val.reshape(-1, x_val.shape[-1]), np.repeat(y_val, views))
    head, history = fit_heads(x_rows, y_rows, weights, validation, config, settings.head_ensemble, normalizer)
    model = assemble(backbone, head, hand_features=arch.as_dict().get("hand_features", 0))
    timings["head_s"] = time.perf_counter() - t0

    if config.fine_tune_epochs:
        t0 = time.perf_counter()
        history = _fine_tune(model, backbone, train_s, val_s, arch, config, history, settings.user_sample_weight)
        timings["fine_tune_s"] = time.perf_counter() - t0
        probs = model.predict(_tensors(val_s, arch), batch_size=64, verbose=0)
    else:
        probs = view_probabilities(head, x_val)
    report = classification_report(y_val, probs.argmax(1), CLASS_NAMES)
    report["val_loss"] = round(float(keras.losses.sparse_categorical_crossentropy(y_val, probs).numpy().mean()), 4)
    report["per_dataset"] = {
        ds: classification_report(
            y_val[[s.dataset == ds for s in val_s]], probs.argmax(1)[[s.dataset == ds for s in val_s]], CLASS_NAMES
        )["accuracy"]
        for ds in sorted({s.dataset for s in val_s})
    }

    t0 = time.perf_counter()
    version = new_version()
    out_root = out_root or settings.artifacts_dir / "models"
    model_dir = out_root / version
    model_dir.mkdir(parents=True)
    digest = write_training_set(model_dir / "training_set.csv", train_s, val_s)
    model.save(model_dir / "model.keras")
    export_tflite(model, model_dir / "model.tflite")
    timings["export_s"] = time.perf_counter() - t0
    params = {
        **{k: v for k, v in vars(config).items() if k != "datasets"},
        "datasets": ",".join(sorted({s.dataset for s in train_s})),
        **{f"arch_{k}": v for k, v in arch.as_dict().items()},
        "n_train": len(train_s),
        "n_val": len(val_s),
        "n_user_images": sum(s.dataset == USER_DATASET for s in train_s),
        "user_sample_weight": settings.user_sample_weight,
        "training_set_digest": digest,
        "features_computed": extractor.stats.computed,
        "features_cached": extractor.stats.cached,
    }
    artifacts = {
        "confusion_matrix": plot_confusion_matrix(
            report["confusion_matrix"], CLASS_NAMES, model_dir / "confusion_matrix.png", f"validation {version}"
        ),
        "learning_curves": plot_learning_curves(history, model_dir / "learning_curves.png"),
    }
    metadata = {
        "version": version,
        "created_at": datetime.now(UTC).isoformat(),
        "architecture": arch.as_dict(),
        "class_names": list(CLASS_NAMES),
        "metrics": {k: report[k] for k in ("accuracy", "macro_f1", "val_loss", "per_class", "per_dataset", "n")},
        "params": params,
        "training_set_digest": digest,
        "head_ensemble": settings.head_ensemble,
        "tensorflow": tf.__version__,
    }
    (model_dir / "metadata.json").write_text(json.dumps(metadata, indent=2))
    (model_dir / "metrics.json").write_text(json.dumps(report, indent=2))
    (model_dir / "history.json").write_text(json.dumps(history))
    return TrainResult(model_dir, version, report, history, timings, artifacts, params, model)


def _tensors(samples: list[Sample], arch: Architecture) -> np.ndarray:
    from src.features import training_tensor

    return np.stack([training_tensor(s.path.read_bytes(), arch.input_size, arch.backbone) for s in samples])


def _fine_tune(model, backbone, train_s, val_s, arch, config, history, user_weight: float):
    """Unfreeze the top blocks and train end to end on fresh augmentations each epoch."""
    import keras

    from src.data import file_sha
    from src.features import augmented_tensors, training_tensor
    from src.model import unfreeze_top

    unfreeze_top(backbone, config.fine_tune_layers)
    model.compile(
        optimizer=keras.optimizers.Adam(config.fine_tune_lr),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    y_train = np.array([CLASS_NAMES.index(s.label) for s in train_s])
    y_val = np.array([CLASS_NAMES.index(s.label) for s in val_s])
    x_val = _tensors(val_s, arch)
    weights = sample_weights(y_train, np.array([s.dataset == USER_DATASET for s in train_s]), user_weight)
    for epoch in range(config.fine_tune_epochs):
        x = np.stack(
            [
                augmented_tensors(
                    s.path.read_bytes(), arch.input_size, arch.backbone, 1, f"{file_sha(s.path)}:{epoch}"
                )[0]
                if epoch % 2
                else training_tensor(s.path.read_bytes(), arch.input_size, arch.backbone)
                for s in train_s
            ]
        )
        fit = model.fit(
            x, y_train, validation_data=(x_val, y_val), epochs=1, batch_size=32, sample_weight=weights, verbose=0
        )
        for k, vs in fit.history.items():
            history.setdefault(k, []).extend(float(v) for v in vs)
    return history


def publish(model_dir: Path, link: Path) -> None:
    """Point `link` (artifacts/model) at `model_dir` with an atomic rename of a symlink."""
    tmp = link.with_name(link.name + ".tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(os.path.relpath(model_dir, link.parent))
    if link.exists() and not link.is_symlink():
        raise FileExistsError(f"{link} is a real folder, not a link; move it away first")
    os.replace(tmp, link)


def parse_args(argv: list[str] | None) -> tuple[TrainConfig, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m src.train", description=__doc__.splitlines()[0])
    c = TrainConfig()
    p.add_argument("--epochs", type=int, default=c.epochs)
    p.add_argument("--aug-copies", type=int, default=c.aug_copies, help="augmented copies per training image")
    p.add_argument("--fine-tune-epochs", type=int, default=c.fine_tune_epochs)
    p.add_argument("--fine-tune-layers", type=int, default=c.fine_tune_layers)
    p.add_argument("--seed", type=int, default=c.seed)
    p.add_argument(
        "--split", choices=["group", "random"], default=c.split, help="random only to reproduce per-file numbers"
    )
    p.add_argument("--val-fraction", type=float, default=c.val_fraction)
    p.add_argument("--max-per-dataset", type=int, default=0, help="subsample for quick runs (0 = all)")
    p.add_argument("--datasets", nargs="*", default=[], help="dataset folder names under Data/raw (default all)")
    p.add_argument(
        "--feature-set", choices=["mobilenet", "mobilenet+hand"], default="", help="default: FEATURE_SET setting"
    )
    p.add_argument("--no-publish", action="store_true", help="do not point artifacts/model at the result")
    p.add_argument("--if-missing", action="store_true", help="do nothing when artifacts/model already exists")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow even if MLFLOW_TRACKING_URI is set")
    args = p.parse_args(argv)
    config = TrainConfig(
        epochs=args.epochs,
        aug_copies=args.aug_copies,
        fine_tune_epochs=args.fine_tune_epochs,
        fine_tune_layers=args.fine_tune_layers,
        seed=args.seed,
        split=args.split,
        val_fraction=args.val_fraction,
        max_per_dataset=args.max_per_dataset,
        datasets=args.datasets,
        feature_set=args.feature_set,
    )
    return config, args


def main(argv: list[str] | None = None) -> int:
    config, args = parse_args(argv)
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    if args.if_missing and (settings.model_dir / "metadata.json").exists():
        print(f"model already present at {settings.model_dir}; skipping training")
        return 0
    try:
        result = train(settings, config)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not args.no_publish:
        publish(result.model_dir, settings.model_dir)
    registered: dict[str, str] = {}
    if settings.mlflow_tracking_uri and not args.no_mlflow:
        from src.registry import log_training_run

        # Registered, not promoted: only the gate moves @champion
        # (`python -m src.pipeline promote --model-version N`), for the first model too.
        registered = log_training_run(settings, result)
    summary = {
        "version": result.version,
        "model_dir": str(result.model_dir),
        "accuracy": result.metrics["accuracy"],
        "n_val": result.params["n_val"],
        "per_dataset": result.metrics["per_dataset"],
        "training_set_digest": result.params["training_set_digest"],
        "timings": {k: round(v, 2) for k, v in result.timings.items()},
        "registered": registered,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
