"""Stage 1: materialise every human-labelled image (PostgreSQL) plus the base dataset under
`Data/labelled/<label>/<sha256>.<ext>`, with a manifest. Idempotent.

Each image's split comes from `src.splits`: the gate's evaluation set and the user
hold-out are written (the gate scores them) but marked so that no trainer takes them;
reserve groups (simulated new users) are left out entirely.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from Database_connection import repository as repo
from Database_connection.db import make_pool
from src.data import bootstrap_raw, file_sha, list_datasets, list_samples
from src.splits import USER_DATASET, base_split, user_split
from utils.images import sniff_format
from utils.settings import Settings

log = logging.getLogger(__name__)
MANIFEST_FIELDS = ("sha256", "label", "source", "dataset", "group", "split", "path")


@dataclass(frozen=True)
class LabelledImage:
    sha256: str
    label: str
    source: str
    dataset: str
    group: str
    split: str
    path: str


def _ext(fmt: str) -> str:
    return {"jpeg": "jpg", "png": "png"}[fmt]


def base_dataset_images(settings: Settings, data_dir: Path) -> list[tuple[LabelledImage, Path]]:
    """Base images with their split (`eval`, `reserve` or `train`), by group."""
    raw = data_dir / "raw"
    if not raw.is_dir() or not any(raw.iterdir()):
        if not settings.dataset_dirs:
            raise FileNotFoundError(f"{raw} is empty and RPS_DATASET_DIRS is not set; run `dvc pull` or set it")
        bootstrap_raw(settings.dataset_dirs, raw)
    out = []
    for root in list_datasets(raw):
        for s in list_samples(root):
            sha = file_sha(s.path)
            split = base_split(s.group, settings)
            rel = f"{s.label}/{sha}.{_ext(sniff_format(s.path.read_bytes()[:16]))}"
            out.append((LabelledImage(sha, s.label, "dataset", s.dataset, s.group, split, rel), s.path))
    return out


def extract_labelled_images(settings: Settings, workspace: Path | None = None) -> dict[str, object]:
    """Write Data/labelled/ and its manifest; returns counts for the DAG's XCom."""
    workspace = workspace or settings.data_workspace
    data_dir = workspace / "Data"
    out_dir = data_dir / "labelled"
    out_dir.mkdir(parents=True, exist_ok=True)
    records: dict[str, LabelledImage] = {}
    written = 0

    reserved: set[str] = set()
    for rec, src in base_dataset_images(settings, data_dir):
        if rec.sha256 in records or rec.sha256 in reserved:
            continue  # byte-identical duplicates across datasets count once
        if rec.split == "reserve":
            reserved.add(rec.sha256)
            continue
        records[rec.sha256] = rec
        written += _write(out_dir / rec.path, src.read_bytes)

    pool = make_pool(settings.database_url, 1, 2)
    try:
        with pool.connection() as conn, conn.transaction():  # a named cursor needs a transaction
            db_images = 0
            for row in repo.iter_labelled_images(conn):
                sha = row["sha256"].strip()
                existing = records.get(sha)
                if existing is not None and existing.split == "eval":
                    continue  # never train on an evaluation image, whoever labelled it
                rel = f"{row['label']}/{sha}.{_ext(row['format'])}"
                split = user_split(sha, settings)
                records[sha] = LabelledImage(sha, row["label"], row["source"], USER_DATASET, f"db:{sha}", split, rel)
                content = bytes(row["content"])
                written += _write(out_dir / rel, lambda c=content: c)
                db_images += 1
    finally:
        pool.close()

    wanted = {out_dir / r.path for r in records.values()}
    removed = 0
    for path in out_dir.glob("*/*"):
        if path not in wanted:  # a relabelled image moved class
            path.unlink()
            removed += 1
    with (out_dir / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, MANIFEST_FIELDS)
        writer.writeheader()
        for rec in sorted(records.values(), key=lambda r: r.sha256):
            writer.writerow(asdict(rec))
    summary = {
        "images": len(records),
        "from_postgres": db_images,
        "eval": sum(r.split == "eval" for r in records.values()),
        "user_holdout": sum(r.split == "holdout" for r in records.values()),
        "reserve_left_out": len(reserved),
        "written": written,
        "removed": removed,
        "dir": str(out_dir),
    }
    log.info("extract: %s", summary)
    return summary


def _write(path: Path, load) -> int:
    if path.exists():
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    tmp.write_bytes(load())
    tmp.replace(path)
    return 1


def read_manifest(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))
