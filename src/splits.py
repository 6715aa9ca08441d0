"""The one definition of which image may be trained on, used by every trainer and by the gate.

A base-dataset image belongs to its group (roboflow's `source_clip`, else the file), and
the group's split is a pure function of its name: adding or removing other images never
moves it. A user-labelled image is split by its own sha256. Nothing here depends on a
random seed or on the order of the data, so `python -m src.train`, the DAG and `make up`'s
first model cannot disagree about what the gate may score.

- `eval`: the gate's fixed evaluation set (base data), never trained on.
- `reserve`: base groups kept out of training and out of the gate, for simulating a new
  user (benchmarks/learning_curve.py). Uploaded by a user, they become user images.
- `holdout`: user-labelled images the gate scores ("users' own photos"), never trained on.
- `train`: everything else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Literal

from utils.settings import Settings

SPLIT_SALT = "rps-split-v1"  # fixed forever: changing it would let a trainer see gate images
USER_DATASET = "postgres"  # the dataset name of every user-labelled image
BaseSplit = Literal["eval", "reserve", "train"]
UserSplit = Literal["holdout", "train"]


def _unit(kind: str, key: str) -> float:
    """A uniform number in [0, 1) determined by the key alone."""
    digest = hashlib.sha256(f"{SPLIT_SALT}:{kind}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def base_split(group: str, settings: Settings) -> BaseSplit:
    """The split of a base-dataset group (e.g. `roboflow-sxsw:<source_clip>`)."""
    u = _unit("group", group)
    if u < settings.eval_fraction:
        return "eval"
    if u < settings.eval_fraction + settings.reserve_fraction:
        return "reserve"
    return "train"


def user_split(sha256: str, settings: Settings) -> UserSplit:
    """The split of a user-labelled image, by its content hash (a re-upload lands the same)."""
    return "holdout" if _unit("user", sha256) < settings.user_holdout_fraction else "train"


def early_stopping_split(samples: list, fraction: float) -> tuple[list, list]:
    """(fit, val) by group hash: adding user images never reshuffles which base groups the
    model fits on, so a retrain differs from the champion by the new data, not by a new split.
    User images are always fitted: there are few, and they are what the retrain is for."""
    fit, val = [], []
    for s in samples:
        held = s.dataset != USER_DATASET and _unit("early-stopping", s.group) < fraction
        (val if held else fit).append(s)
    return fit, val


def trainable(dataset: str, group: str, sha256: str, settings: Settings) -> bool:
    """May a trainer use this image? The guard every trainer applies before fitting."""
    if dataset == USER_DATASET:
        return user_split(sha256, settings) == "train"
    return base_split(group, settings) == "train"


def training_set_digest(items: Iterable[tuple[str, str]]) -> str:
    """One hash for a training set: sorted (image sha256, label) pairs. Equal digests mean a
    retrain would see exactly the same images with the same labels."""
    h = hashlib.sha256()
    for sha, label in sorted(set(items)):
        h.update(f"{sha} {label}\n".encode())
    return h.hexdigest()
