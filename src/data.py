"""Dataset assembly: bootstrap `Data/raw`, list samples with their groups, split by group.

Groups matter: the roboflow crops come from 944 photos in 642 clips with several
augmented variants each, so a per-file split leaks near-duplicates into validation.
"""

from __future__ import annotations

import argparse
import csv
import logging
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from utils.images import sha256_hex
from utils.settings import CLASS_NAMES, get_settings

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str
    group: str
    dataset: str
    sha256: str = ""  # of the ORIGINAL upload; processed copies keep their source's hash

    @property
    def key(self) -> str:
        """Feature-cache key: the original image's hash. A processed copy yields the very same
        tensor (see tests), so it shares the cache with its original."""
        return self.sha256 or file_sha(self.path)


def _manifest_groups(root: Path) -> dict[str, str]:
    manifest = root / "manifest.csv"
    if not manifest.exists():
        return {}
    with manifest.open(newline="") as fh:
        return {row["path"]: row["source_clip"] for row in csv.DictReader(fh) if row.get("source_clip")}


def list_samples(root: Path, dataset: str | None = None) -> list[Sample]:
    """Every image under `root/<class>/`, grouped by `source_clip` when a manifest has it,
    by file otherwise."""
    dataset = dataset or root.name
    groups = _manifest_groups(root)
    samples = []
    for label in CLASS_NAMES:
        class_dir = root / label
        if not class_dir.is_dir():
            continue
        for path in sorted(class_dir.iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            rel = f"{label}/{path.name}"
            samples.append(Sample(path, label, f"{dataset}:{groups.get(rel, rel)}", dataset))
    return samples


def list_datasets(raw_dir: Path) -> list[Path]:
    """Dataset folders under `Data/raw` (a folder with class sub-folders)."""
    return sorted(p for p in raw_dir.iterdir() if p.is_dir() and any((p / c).is_dir() for c in CLASS_NAMES))


def bootstrap_raw(sources: list[Path], raw_dir: Path) -> dict[str, int]:
    """Copy each source dataset (with its README/manifest/licence) into `raw_dir/<name>`.

    Idempotent: files already present with the same size are skipped.
    """
    copied: dict[str, int] = {}
    for src in sources:
        if not src.is_dir():
            raise FileNotFoundError(f"dataset folder {src} does not exist (check RPS_DATASET_DIRS)")
        dest = raw_dir / src.name
        n = 0
        for path in src.rglob("*"):
            if not path.is_file():
                continue
            target = dest / path.relative_to(src)
            if target.exists() and target.stat().st_size == path.stat().st_size:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            n += 1
        copied[src.name] = n
    return copied


def dvc_pull(target: str, cwd: Path) -> None:
    """Fetch versioned data from the configured DVC remote; a failure is an error, not a warning."""
    result = subprocess.run(["dvc", "pull", target], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"dvc pull {target} failed: {result.stderr.strip() or result.stdout.strip()}")


def group_split(samples: list[Sample], val_fraction: float = 0.2, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """Stratified split in which no group is on both sides."""
    labels = np.array([s.label for s in samples])
    groups = np.array([s.group for s in samples])
    n_splits = max(2, round(1 / val_fraction))
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train_idx, val_idx = next(splitter.split(np.zeros(len(samples)), labels, groups))
    return [samples[i] for i in train_idx], [samples[i] for i in val_idx]


Splitter = Callable[[list[Sample], float, int], tuple[list[Sample], list[Sample]]]


def held_out_split(
    samples: list[Sample], splitter: Splitter, seed: int, val_fraction: float = 0.2, stop_fraction: float = 0.15
) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """(fit, stop, scored): `scored` is split off first, then early stopping's `stop` from
    the rest, so the images an accuracy is reported on choose no epoch and no weight."""
    train, scored = splitter(samples, val_fraction, seed)
    fit, stop = splitter(train, stop_fraction, seed)
    return fit, stop, scored


def random_split(samples: list[Sample], val_fraction: float = 0.2, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """Per-file random split: only for reproducing the original project's published number."""
    train, val = train_test_split(
        samples, test_size=val_fraction, random_state=seed, stratify=[s.label for s in samples]
    )
    return list(train), list(val)


def describe(samples: list[Sample]) -> dict[str, object]:
    return {
        "n": len(samples),
        "by_class": dict(Counter(s.label for s in samples)),
        "by_dataset": dict(Counter(s.dataset for s in samples)),
        "groups": len({s.group for s in samples}),
    }


def file_sha(path: Path) -> str:
    return sha256_hex(path.read_bytes())


def main(argv: list[str] | None = None) -> int:
    """`python -m src.data bootstrap`: fill `Data/raw` from RPS_DATASET_DIRS or `dvc pull`."""
    parser = argparse.ArgumentParser(prog="python -m src.data")
    parser.add_argument("command", choices=["bootstrap", "describe"])
    parser.add_argument("--dvc", action="store_true", help="pull Data/raw from the DVC remote instead")
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    raw = settings.data_dir / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    try:
        if args.command == "bootstrap":
            if args.dvc:
                dvc_pull(str(raw), settings.data_dir.parent)
            elif settings.dataset_dirs:
                print(f"copied: {bootstrap_raw(settings.dataset_dirs, raw)}")
            else:
                print("error: set RPS_DATASET_DIRS or pass --dvc to fill Data/raw", file=sys.stderr)
                return 2
        for ds in list_datasets(raw):
            print(ds.name, describe(list_samples(ds)))
    except (OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
