"""Data checks: groups never straddle the split, labels and counts are what the READMEs say."""

from __future__ import annotations

from pathlib import Path

from src.data import bootstrap_raw, group_split, held_out_split, list_samples


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


def test_held_out_split_keeps_scored_images_out_of_early_stopping(shared_dir: Path) -> None:
    """benchmarks/model_quality.py reports accuracy on `scored`: early stopping must watch
    other images, from other clips, or the reported number chose its own epoch."""
    samples = list_samples(shared_dir / "datasets/rps/roboflow-sxsw")
    fit, stop, scored = held_out_split(samples, group_split, seed=1)
    groups = [{s.group for s in part} for part in (fit, stop, scored)]
    assert not groups[0] & groups[1] and not groups[0] & groups[2] and not groups[1] & groups[2]
    assert len(fit) + len(stop) + len(scored) == len(samples)
    assert 0.15 < len(scored) / len(samples) < 0.25 and 0.08 < len(stop) / len(samples) < 0.16
    # the scored part is the plain 20 % split's validation side: numbers stay comparable
    assert {s.key for s in scored} == {s.key for s in group_split(samples, 0.2, 1)[1]}
