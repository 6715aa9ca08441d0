"""`python -m src.evaluate --data DIR [--model PATH_OR_URI]`: score a model on labelled folders.

The model runs through the serving holder (TFLite + the shared preprocessing), so
the numbers are those of what the backend would serve. The last line printed is a
JSON object: accuracy, per_class precision/recall/f1, n.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np

from inference.model_holder import LoadedModel, ModelLoadError, load_model_dir
from src.data import list_samples
from utils.images import ImageRejected
from utils.metrics import classification_report, plot_confusion_matrix
from utils.settings import CLASS_NAMES, Settings, get_settings

log = logging.getLogger(__name__)


def load_for_evaluation(model_ref: str, settings: Settings, workdir: Path) -> LoadedModel:
    """A model directory, or a `models:/name@alias|version` URI from the MLflow registry."""
    if model_ref.startswith("models:/"):
        from src.registry import download_model

        return load_model_dir(download_model(settings, model_ref, workdir), source=model_ref)
    return load_model_dir(Path(model_ref), source=model_ref)


def evaluate_model(model: LoadedModel, data_dir: Path, batch_size: int = 32) -> tuple[dict, list[str]]:
    """Report on every readable image under `data_dir/<class>/`; unreadable ones are listed."""
    samples = list_samples(data_dir)
    if not samples:
        raise FileNotFoundError(f"{data_dir} has no images in rock/, paper/ or scissors/ sub-folders")
    y_true, y_pred, skipped = [], [], []
    batch, labels = [], []

    def flush() -> None:
        if batch:
            probs = model.run_inputs(batch)
            y_pred.extend(int(i) for i in probs.argmax(1))
            y_true.extend(labels)
            batch.clear()
            labels.clear()

    for s in samples:
        try:
            batch.append(model.prepare(s.path.read_bytes()))
        except ImageRejected as exc:
            skipped.append(f"{s.path}: {exc.message}")
            continue
        labels.append(CLASS_NAMES.index(s.label))
        if len(batch) == batch_size:
            flush()
    flush()
    report = classification_report(np.array(y_true), np.array(y_pred), CLASS_NAMES)
    return report, skipped


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m src.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="folder with rock/, paper/, scissors/")
    parser.add_argument("--model", default=str(settings.model_dir), help="model directory or models:/ URI")
    parser.add_argument("--out", type=Path, default=settings.artifacts_dir / "eval", help="where the PNG goes")
    args = parser.parse_args(argv)
    logging.basicConfig(level="WARNING")
    if not args.data.is_dir():
        print(f"error: the data folder {args.data} does not exist", file=sys.stderr)
        return 2
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model = load_for_evaluation(args.model, settings, Path(tmp))
            report, skipped = evaluate_model(model, args.data)
    except (FileNotFoundError, ModelLoadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    png = plot_confusion_matrix(
        report["confusion_matrix"],
        CLASS_NAMES,
        args.out / "confusion_matrix.png",
        f"{model.version} on {args.data.name}",
    )
    for line in skipped:
        print(f"skipped {line}", file=sys.stderr)
    print(f"model {model.version}; confusion matrix written to {png}")
    print(
        json.dumps(
            {
                "accuracy": report["accuracy"],
                "per_class": {
                    k: {m: v[m] for m in ("precision", "recall", "f1")} for k, v in report["per_class"].items()
                },
                "n": report["n"],
                "macro_f1": report["macro_f1"],
                "model_version": model.version,
                "skipped": len(skipped),
                "confusion_matrix_png": str(png),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
