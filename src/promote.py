"""Stage 5: the promotion gate. Challenger vs `@champion` on the fixed evaluation set.

The alias moves only if the challenger is not worse than the champion beyond
`PROMOTE_TOLERANCE`. The decision and both scores are written as version tags, so a
rejected challenger stays on record without being served.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from inference.model_holder import load_model_dir
from src.evaluate import evaluate_model
from src.registry import champion, download_serving, run_id_of, set_champion, tag_version
from utils.settings import Settings

log = logging.getLogger(__name__)


def evaluate_version(settings: Settings, version: str, run_id: str, eval_dir: Path, tmp: Path) -> dict:
    model = load_model_dir(download_serving(settings, run_id, tmp / f"v{version}"), source=f"v{version}")
    report, _ = evaluate_model(model, eval_dir)
    return report


def evaluate_and_promote(settings: Settings, challenger: str, workspace: Path | None = None) -> dict[str, object]:
    workspace = workspace or settings.data_workspace
    eval_dir = workspace / "Data" / "processed" / "eval"
    if not eval_dir.is_dir():
        raise FileNotFoundError(f"{eval_dir} is missing: the fixed evaluation set comes from the preprocess stage")
    current = champion(settings)
    with tempfile.TemporaryDirectory() as tmp:
        ch_report = evaluate_version(settings, challenger, run_id_of(settings, challenger), eval_dir, Path(tmp))
        cp_report = (
            evaluate_version(settings, current["version"], current["run_id"], eval_dir, Path(tmp)) if current else None
        )
    ch_acc = ch_report["accuracy"]
    cp_acc = cp_report["accuracy"] if cp_report else None
    if current is None:
        decision, reason = "promoted", "no champion yet"
    elif current["version"] == challenger:
        decision, reason = "promoted", "already the champion"
    elif ch_acc >= cp_acc - settings.promote_tolerance:
        decision, reason = "promoted", f"{ch_acc:.4f} >= {cp_acc:.4f} - {settings.promote_tolerance}"
    else:
        decision, reason = "rejected", f"{ch_acc:.4f} < {cp_acc:.4f} - {settings.promote_tolerance}"
    tags = {
        "gate_decision": decision,
        "gate_reason": reason,
        "challenger_accuracy": f"{ch_acc:.4f}",
        "champion_accuracy": "none" if cp_acc is None else f"{cp_acc:.4f}",
        "champion_version": current["version"] if current else "none",
        "eval_n": str(ch_report["n"]),
        "promote_tolerance": str(settings.promote_tolerance),
    }
    if decision == "promoted":
        set_champion(settings, challenger, tags)
    else:
        tag_version(settings, challenger, tags)
    log.info("gate: version %s %s (%s)", challenger, decision, reason)
    return {
        "decision": decision,
        "reason": reason,
        "challenger_version": challenger,
        "challenger_accuracy": ch_acc,
        "champion_version": current["version"] if current else None,
        "champion_accuracy": cp_acc,
        "eval_n": ch_report["n"],
        "challenger_per_class": ch_report["per_class"],
    }
