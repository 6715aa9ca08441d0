"""Stage 5: the promotion gate. Challenger vs `@champion`, image by image.

Both models are scored through their own serving path on the same images: the fixed
evaluation set (base data) and the hold-out of user-labelled photos (`src.splits`), so the
gate sees the users' own photos, and models with different feature sets compete fairly.

The rule, the same for the first champion and every later one:
- reject a challenger that a one-sided exact McNemar test (paired correctness) finds worse
  than the champion at `GATE_ALPHA`, on all gate images together or on the users' photos;
- reject a challenger whose evaluation-set accuracy is below the first champion's on the
  same set (re-scored every time): no slow ratchet down;
- otherwise promote. With no champion (the very first model) nothing can reject it, and it
  becomes the floor.

The decision, per-slice numbers and the test statistics are written as version tags, as
MLflow metrics of the challenger's run and on the retrain request; a rejected challenger
stays on record without being served.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import binom

from inference.model_holder import LoadedModel, load_model_dir
from src.extract import read_manifest
from src.registry import (
    champion,
    download_serving,
    first_champion,
    log_run_metrics,
    mark_first_champion,
    run_id_of,
    set_champion,
    tag_version,
)
from utils.images import ImageRejected
from utils.settings import CLASS_NAMES, Settings

log = logging.getLogger(__name__)
GATE_SPLITS = ("eval", "holdout")


@dataclass(frozen=True)
class GateImage:
    path: Path
    label: int
    split: str  # eval | holdout
    dataset: str


def gate_images(workspace: Path) -> list[GateImage]:
    """The gate's images from the preprocess stage's manifest (eval set + user hold-out)."""
    root = workspace / "Data" / "processed"
    manifest = root / "manifest.csv"
    if not (root / "eval").is_dir() or not manifest.exists():
        raise FileNotFoundError(f"{root / 'eval'} is missing: the fixed evaluation set comes from the preprocess stage")
    return [
        GateImage(root / r["path"], CLASS_NAMES.index(r["label"]), r["split"], r["dataset"])
        for r in read_manifest(manifest)
        if r["split"] in GATE_SPLITS and r["status"] == "kept"
    ]


def predictions(model: LoadedModel, images: list[GateImage], batch_size: int = 32) -> np.ndarray:
    """Predicted class per image (-1 where the model's own path rejects the image)."""
    out = np.full(len(images), -1, dtype=np.int64)
    for start in range(0, len(images), batch_size):
        idx, batch = [], []
        for i in range(start, min(start + batch_size, len(images))):
            try:
                batch.append(model.prepare(images[i].path.read_bytes()))
                idx.append(i)
            except ImageRejected:
                continue
        if batch:
            out[idx] = model.run_inputs(batch).argmax(1)
    return out


def slice_report(images: list[GateImage], correct: np.ndarray) -> dict[str, dict[str, float]]:
    """Accuracy and n per slice: each split, each split's datasets, each split's classes."""
    keys: dict[str, list[int]] = {}
    for i, im in enumerate(images):
        name = "users" if im.split == "holdout" else "eval"
        for key in (name, f"{name}/{im.dataset}", f"{name}/class/{CLASS_NAMES[im.label]}"):
            keys.setdefault(key, []).append(i)
    keys["all"] = list(range(len(images)))
    return {
        k: {"accuracy": round(float(correct[idx].mean()), 4) if idx else float("nan"), "n": len(idx)}
        for k, idx in sorted(keys.items())
    }


def mcnemar_worse(champion_correct: np.ndarray, challenger_correct: np.ndarray) -> dict[str, float]:
    """One-sided exact McNemar: p-value of 'the challenger is worse' from discordant pairs.

    b = images only the champion gets right, c = only the challenger; under equal accuracy
    b ~ Binomial(b + c, 1/2), so p = P(X >= b)."""
    b = int(np.sum(champion_correct & ~challenger_correct))
    c = int(np.sum(~champion_correct & challenger_correct))
    p = float(binom.sf(b - 1, b + c, 0.5)) if b + c else 1.0
    return {"only_champion_right": b, "only_challenger_right": c, "p_worse": round(p, 6)}


def decide(
    images: list[GateImage],
    challenger_correct: np.ndarray,
    champion_correct: np.ndarray | None,
    floor_correct: np.ndarray | None,
    alpha: float,
) -> tuple[str, str, dict[str, object]]:
    """The gate's rule (module docstring) on per-image correctness; returns decision, reason, stats."""
    users = np.array([im.split == "holdout" for im in images], dtype=bool)
    evals = ~users
    stats: dict[str, object] = {}
    reasons: list[str] = []
    if champion_correct is not None:
        stats["mcnemar_all"] = mcnemar_worse(champion_correct, challenger_correct)
        if stats["mcnemar_all"]["p_worse"] < alpha:
            reasons.append(
                f"worse than the champion on all gate images (McNemar p={stats['mcnemar_all']['p_worse']:.4f})"
            )
        if users.any():
            stats["mcnemar_users"] = mcnemar_worse(champion_correct[users], challenger_correct[users])
            if stats["mcnemar_users"]["p_worse"] < alpha:
                reasons.append(
                    f"worse than the champion on users' photos (McNemar p={stats['mcnemar_users']['p_worse']:.4f})"
                )
    if floor_correct is not None:
        ch_eval, floor_eval = float(challenger_correct[evals].mean()), float(floor_correct[evals].mean())
        stats["floor_eval_accuracy"] = round(floor_eval, 4)
        if ch_eval < floor_eval:
            reasons.append(f"evaluation-set accuracy {ch_eval:.4f} is below the first champion's {floor_eval:.4f}")
    if reasons:
        return "rejected", "; ".join(reasons), stats
    if champion_correct is None:
        return "promoted", "no champion yet: the first model becomes the champion and the floor", stats
    return "promoted", f"not worse than the champion (alpha {alpha}) and at or above the floor", stats


def _correctness(settings: Settings, version: str, images: list[GateImage], tmp: Path) -> np.ndarray:
    model_dir = download_serving(settings, run_id_of(settings, version), tmp / f"v{version}")
    model = load_model_dir(model_dir, source=f"v{version}")
    return predictions(model, images) == np.array([im.label for im in images])


def evaluate_and_promote(settings: Settings, challenger: str, workspace: Path | None = None) -> dict[str, object]:
    images = gate_images(workspace or settings.data_workspace)
    current = champion(settings)
    floor_version = first_champion(settings)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        scored = {challenger: _correctness(settings, challenger, images, tmp)}
        for other in {v for v in (current and current["version"], floor_version) if v and v not in scored}:
            scored[other] = _correctness(settings, other, images, tmp)
    cp = scored[current["version"]] if current else None
    if current and current["version"] == challenger:
        decision, reason, stats = "promoted", "already the champion", {}
    else:
        decision, reason, stats = decide(
            images, scored[challenger], cp, scored[floor_version] if floor_version else None, settings.gate_alpha
        )
    slices = {"challenger": slice_report(images, scored[challenger])}
    if cp is not None:
        slices["champion"] = slice_report(images, cp)
    ch_acc = slices["challenger"]["eval"]["accuracy"]
    cp_acc = slices["champion"]["eval"]["accuracy"] if cp is not None else None
    tags = {
        "gate_decision": decision,
        "gate_reason": reason[:500],
        "challenger_accuracy": f"{ch_acc:.4f}",
        "champion_accuracy": "none" if cp_acc is None else f"{cp_acc:.4f}",
        "champion_version": current["version"] if current else "none",
        "floor_version": floor_version or "none",
        "eval_n": str(slices["challenger"]["eval"]["n"]),
        "users_n": str(slices["challenger"].get("users", {}).get("n", 0)),
        "gate_alpha": str(settings.gate_alpha),
    }
    if decision == "promoted":
        set_champion(settings, challenger, tags)
        if floor_version is None:
            mark_first_champion(settings, challenger)
    else:
        tag_version(settings, challenger, tags)
    log_run_metrics(settings, run_id_of(settings, challenger), _gate_metrics(slices, stats))
    log.info("gate: version %s %s (%s)", challenger, decision, reason)
    return {
        "decision": decision,
        "reason": reason,
        "challenger_version": challenger,
        "challenger_accuracy": ch_acc,
        "champion_version": current["version"] if current else None,
        "champion_accuracy": cp_acc,
        "floor_version": floor_version,
        "eval_n": slices["challenger"]["eval"]["n"],
        "users_n": slices["challenger"].get("users", {}).get("n", 0),
        "stats": stats,
        "slices": slices,
    }


def _gate_metrics(slices: dict[str, dict[str, dict[str, float]]], stats: dict[str, object]) -> dict[str, float]:
    """Flat MLflow metric names: gate_challenger_eval_accuracy, gate_champion_users_accuracy, ..."""
    out: dict[str, float] = {}
    for who, report in slices.items():
        for key, value in report.items():
            if value["n"]:
                out[f"gate_{who}_{key.replace('/', '_')}_accuracy"] = value["accuracy"]
    for name, test in stats.items():
        if isinstance(test, dict):
            out[f"gate_{name}_p_worse"] = float(test["p_worse"])
        else:
            out[f"gate_{name}"] = float(test)
    return out
