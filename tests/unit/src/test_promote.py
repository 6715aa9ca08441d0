"""The promotion gate's decision (registry and evaluation stubbed: a unit test of the rule)."""

from __future__ import annotations

import pytest

import src.promote as promote
from utils.settings import Settings


@pytest.fixture
def gate(monkeypatch, tmp_path):
    (tmp_path / "Data" / "processed" / "eval").mkdir(parents=True)
    calls: dict[str, list] = {"set_champion": [], "tag_version": []}
    scores = {"challenger": 0.0, "champion": 0.0}

    def evaluate(settings, version, run_id, eval_dir, tmp):
        return {"accuracy": scores["challenger" if version == "9" else "champion"], "n": 565, "per_class": {}}

    monkeypatch.setattr(promote, "evaluate_version", evaluate)
    monkeypatch.setattr(promote, "run_id_of", lambda s, v: f"run-{v}")
    monkeypatch.setattr(promote, "champion", lambda s: {"version": "8", "run_id": "run-8"})
    monkeypatch.setattr(promote, "set_champion", lambda s, v, tags: calls["set_champion"].append((v, tags)))
    monkeypatch.setattr(promote, "tag_version", lambda s, v, tags: calls["tag_version"].append((v, tags)))
    settings = Settings(data_workspace=tmp_path, promote_tolerance=0.01)
    return settings, scores, calls


def test_a_worse_challenger_is_rejected_and_recorded_not_served(gate) -> None:
    settings, scores, calls = gate
    scores.update(challenger=0.80, champion=0.83)
    result = promote.evaluate_and_promote(settings, "9")
    assert result["decision"] == "rejected" and calls["set_champion"] == []
    [(version, tags)] = calls["tag_version"]
    assert version == "9" and tags["gate_decision"] == "rejected"
    assert (tags["challenger_accuracy"], tags["champion_accuracy"], tags["champion_version"]) == (
        "0.8000",
        "0.8300",
        "8",
    )


def test_a_challenger_within_tolerance_is_promoted(gate) -> None:
    settings, scores, calls = gate
    scores.update(challenger=0.825, champion=0.83)
    assert promote.evaluate_and_promote(settings, "9")["decision"] == "promoted"
    [(version, tags)] = calls["set_champion"]
    assert version == "9" and tags["gate_decision"] == "promoted" and calls["tag_version"] == []
