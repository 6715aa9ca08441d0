"""Stage 2: the shared OpenCV path over Data/labelled → Data/processed/<split>/<label>/.

Each image is validated and decoded, checked for blur (unusable frames are dropped and
counted), converted to RGB and resized to the model's input size with the very function
serving uses, then stored as lossless PNG. Training later applies the backbone's
normalisation through `preprocess_image`, so a processed image yields exactly the tensor
the backend computes from the original upload.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from pathlib import Path

import cv2

from src.extract import read_manifest
from utils.images import ImageRejected, blur_score, decode_image, sha256_hex, to_rgb_resized
from utils.settings import Settings

log = logging.getLogger(__name__)
PROCESSED_FIELDS = (
    "sha256",
    "processed_sha256",
    "label",
    "split",
    "source",
    "dataset",
    "group",
    "blur",
    "status",
    "path",
)


def preprocess_images(settings: Settings, workspace: Path | None = None) -> dict[str, object]:
    workspace = workspace or settings.data_workspace
    labelled = workspace / "Data" / "labelled"
    out_dir = workspace / "Data" / "processed"
    manifest = labelled / "manifest.csv"
    if not manifest.exists():
        raise FileNotFoundError(f"{manifest} is missing: run the extract stage first")
    previous = _previous_rows(out_dir / "manifest.csv", settings)
    rows, counts, dropped = [], Counter(), Counter()
    wanted: set[Path] = set()
    for rec in read_manifest(manifest):
        rel = Path(rec["split"]) / rec["label"] / f"{rec['sha256']}.png"
        target = out_dir / rel
        old = previous.get(rec["sha256"])
        if old and old["status"] != "kept":  # already judged unusable with these settings
            dropped[old["status"]] += 1
            rows.append({**old, **{k: rec[k] for k in ("label", "split", "source", "dataset", "group")}})
            continue
        if old and target.exists() and old["path"] == str(rel):  # unchanged since the last run
            wanted.add(target)
            rows.append({**old, **{k: rec[k] for k in ("source", "dataset", "group")}})
            counts[(rec["split"], rec["label"])] += 1
            continue
        src = labelled / rec["path"]
        base = {k: rec[k] for k in ("sha256", "label", "split", "source", "dataset", "group")}
        try:
            bgr = decode_image(src.read_bytes(), max_pixels=settings.max_image_pixels).bgr
        except ImageRejected as exc:
            dropped[exc.code] += 1
            rows.append({**base, "processed_sha256": "", "blur": "", "status": exc.code, "path": ""})
            continue
        rgb = to_rgb_resized(bgr, settings.image_size)
        score = blur_score(rgb)
        if score < settings.blur_threshold:
            dropped["blurred"] += 1
            rows.append({**base, "processed_sha256": "", "blur": round(score, 2), "status": "blurred", "path": ""})
            continue
        wanted.add(target)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            # The hand stage looks at the whole frame: keep the decoded pixels at full size (PNG is
            # lossless, so they decode to exactly what serving saw); MobileNet alone needs only 224.
            keep = bgr if settings.feature_set == "mobilenet+hand" else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
            ok, buf = cv2.imencode(".png", keep)
            if not ok:
                raise RuntimeError(f"could not encode {src} as PNG")
            tmp = target.with_suffix(".part")
            tmp.write_bytes(buf.tobytes())
            tmp.replace(target)
        data = target.read_bytes()
        rows.append(
            {**base, "processed_sha256": sha256_hex(data), "blur": round(score, 2), "status": "kept", "path": str(rel)}
        )
        counts[(rec["split"], rec["label"])] += 1
    for path in out_dir.glob("*/*/*.png"):
        if path not in wanted:
            path.unlink()
    with (out_dir / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, PROCESSED_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    summary = {
        "kept": sum(counts.values()),
        "dropped": dict(dropped),
        "dropped_blurred": dropped["blurred"],
        "by_split_and_class": {f"{s}/{c}": n for (s, c), n in sorted(counts.items())},
        "dir": str(out_dir),
    }
    log.info("preprocess: %s", summary)
    return summary


def _previous_rows(path: Path, settings: Settings) -> dict[str, dict[str, str]]:
    """Last run's rows, reusable only if they were made with the same size and blur threshold."""
    stamp = path.with_name("settings.json")
    current = json.dumps(
        {"size": settings.image_size, "blur_threshold": settings.blur_threshold, "feature_set": settings.feature_set}
    )
    if not path.exists() or not stamp.exists() or stamp.read_text() != current:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(current)
        return {}
    return {r["sha256"]: r for r in read_manifest(path)}
