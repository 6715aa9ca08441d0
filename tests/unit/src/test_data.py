"""Data checks: groups never straddle the split, labels and counts are what the READMEs say."""

from __future__ import annotations

from pathlib import Path

from src.data import bootstrap_raw, group_split, list_samples


def test_roboflow_groups_come_from_the_manifest(shared_dir: Path) -> None:
    samples = list_samples(shared_dir / "datasets/rps/roboflow-sxsw")
    assert len(samples) == 2347
    assert len({s.group for s in samples}) == 642
    assert {s.label for s in samples} == {"rock", "paper", "scissors"}
    assert all(s.path.name.startswith(f"{s.label}.") for s in samples)


def test_group_split_never_leaks_a_clip(shared_dir: Path) -> None:
    samples = list_samples(shared_dir / "datasets/rps/roboflow-sxsw")
    train, val = group_split(samples, 0.2, seed=3)
    assert not {s.group for s in train} & {s.group for s in val}
    assert 0.15 < len(val) / len(samples) < 0.25
    assert {s.label for s in val} == {"rock", "paper", "scissors"}


def test_files_without_manifest_group_by_file(shared_dir: Path) -> None:
    samples = list_samples(shared_dir / "datasets/rps/seed-drgfreeman")
    assert len(samples) == 300 and len({s.group for s in samples}) == 300


def test_bootstrap_copies_once(tmp_path: Path, shared_dir: Path) -> None:
    src = shared_dir / "datasets/rps/seed-drgfreeman"
    first = bootstrap_raw([src], tmp_path)
    again = bootstrap_raw([src], tmp_path)
    assert first["seed-drgfreeman"] == sum(1 for p in src.rglob("*") if p.is_file())
    assert again == {"seed-drgfreeman": 0}
    assert len(list_samples(tmp_path / "seed-drgfreeman")) == 300
