"""The promotion gate's rule on per-image correctness (a unit test of `decide`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from src.promote import GateImage, decide, mcnemar_worse, slice_report


def images(n_eval: int, n_users: int = 0) -> list[GateImage]:
    return [GateImage(Path(f"{i}.png"), i % 3, "eval", "roboflow-sxsw") for i in range(n_eval)] + [
        GateImage(Path(f"u{i}.png"), i % 3, "holdout", "postgres") for i in range(n_users)
    ]


def correct(n: int, wrong: list[int]) -> np.ndarray:
    out = np.ones(n, dtype=bool)
    out[wrong] = False
    return out


def test_mcnemar_counts_only_discordant_pairs() -> None:
    champion = correct(100, [0, 1])
    challenger = correct(100, list(range(2, 14)))
    stats = mcnemar_worse(champion, challenger)
    assert (stats["only_champion_right"], stats["only_challenger_right"]) == (12, 2)
    assert stats["p_worse"] == pytest.approx(0.00647, abs=1e-4)  # P(X >= 12), X ~ Bin(14, 1/2)
    assert mcnemar_worse(champion, champion)["p_worse"] == 1.0


def test_the_first_model_is_promoted_and_becomes_the_floor() -> None:
    decision, reason, _ = decide(images(50), correct(50, [1, 2]), None, None, 0.05)
    assert decision == "promoted" and "first model" in reason


def test_a_significantly_worse_challenger_is_rejected() -> None:
    ims = images(200)
    decision, reason, stats = decide(ims, correct(200, list(range(20))), correct(200, [0]), None, 0.05)
    assert decision == "rejected" and "McNemar" in reason
    assert stats["mcnemar_all"]["p_worse"] < 0.05


def test_noise_is_not_a_reason_to_reject() -> None:
    ims = images(200)  # 2 images worse, 1 better: well within chance
    decision, _, stats = decide(ims, correct(200, [5, 6]), correct(200, [7]), correct(200, [7]), 0.05)
    # ... but the floor still holds: 198/200 < 199/200 of the first champion
    assert decision == "rejected" and stats["mcnemar_all"]["p_worse"] > 0.05
    decision, reason, _ = decide(ims, correct(200, [5, 6]), correct(200, [7]), correct(200, [7, 8, 9]), 0.05)
    assert decision == "promoted", reason


def test_no_ratchet_below_the_first_champion() -> None:
    ims = images(300)
    first = correct(300, [0])
    champion = correct(300, [0, 1, 2, 3])  # an earlier promotion that drifted down within noise
    challenger = correct(300, [0, 1, 2, 3, 4])
    decision, reason, stats = decide(ims, challenger, champion, first, 0.05)
    assert decision == "rejected" and "below the first champion" in reason
    assert stats["floor_eval_accuracy"] == pytest.approx(299 / 300, abs=1e-4)


def test_users_photos_have_their_own_veto() -> None:
    ims = images(400, 12)
    champion = np.ones(412, dtype=bool)
    challenger = np.ones(412, dtype=bool)
    challenger[400:408] = False  # fine on the base data, 8 of 12 of the users' photos wrong
    decision, reason, stats = decide(ims, challenger, champion, None, 0.05)
    assert decision == "rejected" and "users' photos" in reason
    assert stats["mcnemar_users"]["only_champion_right"] == 8


def test_slices_name_split_dataset_and_class() -> None:
    ims = images(6, 3)
    report = slice_report(ims, correct(9, [0, 6]))
    assert report["eval"] == {"accuracy": pytest.approx(5 / 6, abs=1e-4), "n": 6}
    assert report["users"]["n"] == 3 and report["users/postgres"]["accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    assert report["eval/class/rock"] == {"accuracy": 0.5, "n": 2}
    assert report["all"]["n"] == 9
