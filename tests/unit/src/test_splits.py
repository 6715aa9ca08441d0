"""Data checks on the one split: deterministic, group-safe, and enforced before any fit."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from src.data import Sample, list_samples
from src.splits import USER_DATASET, base_split, trainable, training_set_digest, user_split
from src.train import TrainConfig, assemble_samples, check_trainable, forbidden_keys
from utils.settings import Settings


@pytest.fixture
def settings(tmp_path: Path, data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, artifacts_dir=tmp_path, mlflow_tracking_uri="")


def test_a_groups_split_depends_on_its_name_alone(settings: Settings) -> None:
    groups = [f"roboflow-sxsw:clip-{i}" for i in range(4000)]
    first = {g: base_split(g, settings) for g in groups}
    assert {g: base_split(g, settings) for g in reversed(groups)} == first
    share = Counter(first.values())
    assert abs(share["eval"] / 4000 - settings.eval_fraction) < 0.03
    assert abs(share["reserve"] / 4000 - settings.reserve_fraction) < 0.03


def test_every_image_of_a_clip_lands_in_one_split(settings: Settings, shared_dir: Path) -> None:
    samples = list_samples(shared_dir / "datasets/rps/roboflow-sxsw")
    by_group: dict[str, set[str]] = {}
    for s in samples:
        by_group.setdefault(s.group, set()).add(base_split(s.group, settings))
    assert all(len(splits) == 1 for splits in by_group.values())
    per_class = Counter((s.label, base_split(s.group, settings)) for s in samples)
    assert all(per_class[(c, "eval")] >= 80 for c in ("rock", "paper", "scissors")), per_class


def test_user_holdout_is_a_fixed_fraction_by_hash(settings: Settings) -> None:
    shas = [f"{i:064x}" for i in range(3000)]
    held = [s for s in shas if user_split(s, settings) == "holdout"]
    assert abs(len(held) / 3000 - settings.user_holdout_fraction) < 0.03
    assert held == [s for s in shas if user_split(s, settings) == "holdout"]
    assert all(not trainable(USER_DATASET, f"db:{s}", s, settings) for s in held)


def test_digest_ignores_order_and_sees_labels() -> None:
    a = training_set_digest([("aa", "rock"), ("bb", "paper")])
    assert a == training_set_digest([("bb", "paper"), ("aa", "rock")])
    assert a != training_set_digest([("aa", "rock"), ("bb", "scissors")])
    assert a != training_set_digest([("aa", "rock")])


def test_src_train_assembles_only_trainable_groups(settings: Settings) -> None:
    train, val = assemble_samples(settings, TrainConfig())
    assert {base_split(s.group, settings) for s in train + val} == {"train"}
    forbidden = forbidden_keys(settings)
    assert len(forbidden) > 500
    check_trainable(train + val, settings, forbidden)  # no overlap: nothing raised


def test_fitting_on_an_evaluation_image_is_refused(settings: Settings, shared_dir: Path) -> None:
    samples = list_samples(shared_dir / "datasets/rps/roboflow-sxsw")
    eval_image = next(s for s in samples if base_split(s.group, settings) == "eval")
    with pytest.raises(ValueError, match="evaluation set or a hold-out"):
        check_trainable([eval_image], settings, set())
    train_image = next(s for s in samples if base_split(s.group, settings) == "train")
    relabelled_copy = Sample(train_image.path, train_image.label, "db:x", USER_DATASET, "e" * 64)
    with pytest.raises(ValueError):  # a user upload of a gate image, by hash
        check_trainable([relabelled_copy], settings, {"e" * 64})
