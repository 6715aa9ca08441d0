"""Held-out accuracy per feature set, dataset and class over several seeds (the README table).

    .venv/bin/python benchmarks/model_quality.py [--seeds 4] [--aug-copies 4]
        [--feature-sets mobilenet mobilenet+hand] [--no-composites]

For each feature set (`mobilenet`: the whole image; `mobilenet+hand`: MediaPipe hand crop +
landmark features) and each dataset in Data/raw: a group split (by `source_clip` for roboflow,
by file otherwise) and, for seed-drgfreeman, also the original project's random 20% split. Each
validation image is also pasted into a procedural 640x480 scene (`src.composites`) and scored
there with the same head. For `mobilenet+hand` that head is trained, as the trainer does, on
the training crops plus HAND_AUG_COPIES scene copies of each training crop (seeds
`scene{j}-{sha}`), every row with its mirror view, and each scored image is scored as the
served model scores it, its view and mirror view averaged. No validation image is ever pasted
into a training scene, and the test scenes have their own seeds. Early stopping watches its own
share of the training groups (STOP_FRACTION, `src.data.held_out_split`), so the scored images
choose nothing. The hand row reports how often no hand was found. Features come from the
on-disk cache (the same extractor training uses), so reruns only train heads. Targets, for the
default feature set on roboflow: crops >= 0.90, composites within 5 points of crops.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from src.data import Sample, group_split, held_out_split, list_datasets, list_samples, random_split  # noqa: E402
from src.model import Architecture  # noqa: E402
from utils.metrics import classification_report  # noqa: E402
from utils.settings import CLASS_NAMES, get_settings  # noqa: E402

# The share of each training split's groups that early stopping watches: the scored validation
# images take no part in choosing the epoch, so their accuracy is a held-out number.
STOP_FRACTION = 0.15


def _stats(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f}"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--aug-copies", type=int, default=4, help="augmented copies per training image (mobilenet)")
    parser.add_argument(
        "--hand-aug-copies",
        type=int,
        default=get_settings().hand_aug_copies,
        help="scene copies for mobilenet+hand, as the trainer makes them (default HAND_AUG_COPIES); "
        "the validation composites are other scenes",
    )
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--feature-sets", nargs="+", default=["mobilenet", "mobilenet+hand"])
    parser.add_argument("--no-composites", action="store_true")
    parser.add_argument("--heads", type=int, default=0, help="heads averaged per model (0: HEAD_ENSEMBLE, as trained)")
    parser.add_argument("--json", type=Path, default=ROOT / "artifacts" / "benchmarks" / "model_quality.json")
    args = parser.parse_args()
    import keras

    from src.composites import composite_png
    from src.features import feature_extractor
    from src.model import feature_normalizer, view_probabilities
    from src.train import TrainConfig, fit_heads, sample_weights
    from utils.hands import HAND_FEATURES

    settings = get_settings()
    heads = args.heads or settings.head_ensemble
    plans: list[tuple[str, str, object, list[Sample]]] = []
    for root in list_datasets(settings.data_dir / "raw"):
        plans.append((root.name, "group", group_split, list_samples(root)))
        if "seed" in root.name:
            plans.append((root.name, "random 20% (as published)", random_split, list_samples(root)))
    results: dict[str, dict] = {}
    for feature_set in args.feature_sets:
        arch = Architecture.from_settings(settings, feature_set)
        extractor = feature_extractor(settings, arch)
        copies = args.hand_aug_copies if arch.uses_hands else args.aug_copies
        t0 = time.perf_counter()
        every = {s.key: s for _, _, _, samples in plans for s in samples}
        feats = extractor.features(((k, s.path.read_bytes) for k, s in every.items()), copies)
        comps = {}
        if not args.no_composites:
            comps = extractor.features(
                ((f"composite3-{k}", lambda s=s, k=k: composite_png(s.path.read_bytes(), k)) for k, s in every.items()),
                0,
            )
        print(
            f"[{feature_set}] features for {len(every)} images (+{copies} copies, + composites) in "
            f"{time.perf_counter() - t0:.0f} s ({extractor.stats.computed} computed, {extractor.stats.cached} cached)"
        )
        found_col = feats[next(iter(every))].shape[1] - HAND_FEATURES if arch.uses_hands else None
        served = extractor.served_rows
        for name, split_name, splitter, samples in plans:
            rows: dict[str, list[float]] = {"accuracy": [], "composites": [], "no_hand": [], "no_hand_composites": []}
            per_class: dict[str, list[float]] = {c: [] for c in CLASS_NAMES}
            for seed in range(args.seeds):
                keras.utils.set_random_seed(seed)
                fit_s, stop_s, val_s = held_out_split(samples, splitter, seed, 0.2, STOP_FRACTION)
                # every cached row of a training image trains; the others are scored as serving
                # scores them (the view, and its mirror view for mobilenet+hand)
                x = np.concatenate([feats[s.key] for s in fit_s])
                y = np.concatenate([[CLASS_NAMES.index(s.label)] * feats[s.key].shape[0] for s in fit_s])
                xs = np.concatenate([served(feats[s.key]) for s in stop_s])
                ys = np.repeat([CLASS_NAMES.index(s.label) for s in stop_s], len(xs) // len(stop_s))
                xv = np.stack([served(feats[s.key]) for s in val_s])
                yv = np.array([CLASS_NAMES.index(s.label) for s in val_s])
                normalizer = feature_normalizer(x) if arch.uses_hands else None
                config = TrainConfig(epochs=args.epochs, seed=100 * seed)
                head, _ = fit_heads(
                    x, y, sample_weights(y, np.zeros(len(y), bool), 1.0), (xs, ys), config, heads, normalizer
                )
                report = classification_report(yv, view_probabilities(head, xv).argmax(1), CLASS_NAMES)
                rows["accuracy"].append(report["accuracy"])
                for c in CLASS_NAMES:
                    per_class[c].append(report["per_class"][c]["recall"])
                if comps:
                    xc = np.stack([served(comps[f"composite3-{s.key}"]) for s in val_s])
                    rows["composites"].append(float((view_probabilities(head, xc).argmax(1) == yv).mean()))
                    if found_col is not None:
                        rows["no_hand_composites"].append(float((xc[:, 0, found_col] == 0).mean()))
                if found_col is not None:
                    rows["no_hand"].append(float((xv[:, 0, found_col] == 0).mean()))
            line = (
                f"{feature_set:15s} {name:16s} {split_name:26s} n_val~{len(val_s):4d}  crops {_stats(rows['accuracy'])}"
            )
            if rows["composites"]:
                line += f"  composites {_stats(rows['composites'])}"
            if rows["no_hand"]:
                line += f"  no hand: crops {statistics.mean(rows['no_hand']):.1%}"
                if rows["no_hand_composites"]:
                    line += f", composites {statistics.mean(rows['no_hand_composites']):.1%}"
            print(line)
            print(
                f"{'':15s} per-class recall: "
                + ", ".join(f"{c} {statistics.mean(v):.3f}" for c, v in per_class.items())
                + f"  (seeds: {', '.join(f'{s:.3f}' for s in rows['accuracy'])})"
            )
            results.setdefault(feature_set, {})[f"{name} / {split_name}"] = {
                **rows,
                "per_class_recall": per_class,
                "n_val": len(val_s),
                "seeds": args.seeds,
            }
    default = results.get(settings.feature_set, {}).get("roboflow-sxsw / group")
    if default:  # the targets, for the default feature set on the set that matters
        crops, comps = statistics.mean(default["accuracy"]), default["composites"]
        verdict = "PASS" if crops >= 0.90 else "MISS"
        print(f"roboflow {settings.feature_set} crops {crops:.3f} (target >= 0.90): {verdict}")
        if comps:
            gap = 100 * (crops - statistics.mean(comps))
            print(f"roboflow composites {gap:.1f} points under crops (target <= 5): {'PASS' if gap <= 5 else 'MISS'}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
