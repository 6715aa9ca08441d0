"""Held-out accuracy per dataset over several seeds (the README's "Model quality" table).

    .venv/bin/python benchmarks/model_quality.py [--seeds 4] [--aug-copies 4]

For each dataset in Data/raw: a group split (by `source_clip` for roboflow, by file
otherwise) and, for seed-drgfreeman, also the original project's random 20% split.
Features come from the cache, so only the head is trained per seed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from src.data import group_split, list_datasets, list_samples, random_split  # noqa: E402
from src.model import Architecture  # noqa: E402
from utils.metrics import classification_report  # noqa: E402
from utils.settings import CLASS_NAMES, get_settings  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--aug-copies", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    import keras

    from src.features import FeatureExtractor
    from src.model import build_backbone, build_head
    from src.train import _features, class_weights

    settings = get_settings()
    arch = Architecture.from_settings(settings)
    extractor = FeatureExtractor(
        build_backbone(arch), arch.input_size, arch.backbone, settings.artifacts_dir / "feature_cache" / arch.tag
    )
    plans = []
    for root in list_datasets(settings.data_dir / "raw"):
        plans.append((root.name, "group", group_split, list_samples(root)))
        if "seed" in root.name:
            plans.append((root.name, "random 20% (as published)", random_split, list_samples(root)))
    print(f"backbone {arch.tag}, {args.aug_copies} augmented copies per training image, {args.seeds} seeds")
    for name, split_name, splitter, samples in plans:
        scores = []
        for seed in range(args.seeds):
            keras.utils.set_random_seed(seed)
            train_s, val_s = splitter(samples, 0.2, seed)
            x, y, _ = _features(extractor, train_s, args.aug_copies)
            xv, yv, _ = _features(extractor, val_s, 0)
            head = build_head(x.shape[1])
            head.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
            stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=6, restore_best_weights=True)
            head.fit(
                x,
                y,
                validation_data=(xv, yv),
                epochs=args.epochs,
                batch_size=256,
                verbose=0,
                class_weight=class_weights(y),
                callbacks=[stop],
            )
            pred = head.predict(xv, verbose=0).argmax(1)
            scores.append(classification_report(yv, pred, CLASS_NAMES)["accuracy"])
        mean, sd = statistics.mean(scores), statistics.pstdev(scores)
        print(
            f"{name:18s} {split_name:28s} n_val~{len(val_s):4d}  accuracy {mean:.3f} ± {sd:.3f}  "
            f"(seeds: {', '.join(f'{s:.3f}' for s in scores)})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
