"""The retraining pipeline's stages with their bookkeeping; one CLI sub-command per DAG task.

    python -m src.pipeline extract    [--request-id N]
    python -m src.pipeline preprocess [--request-id N]
    python -m src.pipeline version    [--request-id N]          # prints the data version
    python -m src.pipeline check      [--request-id N] [--force] # exit 0: new training data; 3: skipped
    python -m src.pipeline retrain    --data-version MD5 [--request-id N] [--epochs E]
    python -m src.pipeline promote    --model-version V [--request-id N]
    python -m src.pipeline reload     --decision promoted|rejected --model-version V [--request-id N]
    python -m src.pipeline all        [--if-no-champion]       # every stage in order, in-process

Every stage records what it learnt on the retrain request (state, data version, gate,
versions), so `GET /retrains` tells the story. A failure is recorded and re-raised:
nothing is swallowed into a log line.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from Database_connection import repository as repo
from Database_connection.db import libpq_url
from utils.settings import Settings, get_settings

log = logging.getLogger(__name__)


def record(settings: Settings, request_id: int | None, **fields: Any) -> None:
    """Update the retrain request (no-op for manual runs without one)."""
    if request_id is None:
        return
    with psycopg.connect(libpq_url(settings.database_url), row_factory=dict_row, autocommit=True) as conn:
        repo.update_retrain_request(conn, request_id, **fields)


def mark_failed(settings: Settings, request_id: int | None, stage: str, error: BaseException | str) -> None:
    record(settings, request_id, state="failed", finished_at=datetime.now(UTC), last_error=f"{stage}: {error}"[:2000])


def extract(settings: Settings, request_id: int | None = None) -> dict[str, object]:
    from src.extract import extract_labelled_images

    record(settings, request_id, state="running", started_at=datetime.now(UTC))
    return extract_labelled_images(settings)


def preprocess(settings: Settings, request_id: int | None = None) -> dict[str, object]:
    from src.preprocess import preprocess_images

    return preprocess_images(settings)


def version(settings: Settings, request_id: int | None = None) -> str:
    from src.versioning import version_data

    data_version = version_data(settings)
    record(settings, request_id, data_version=data_version)
    return data_version


def has_new_training_data(settings: Settings, request_id: int | None = None, force: bool = False) -> bool:
    """False (and the request ends `skipped`, with the reason) when the training set is exactly
    the champion's: retraining on identical data cannot teach the model anything."""
    from src.registry import champion, version_tags
    from src.retrain import candidate_digest

    digest = candidate_digest(settings.data_workspace)
    current = champion(settings) if settings.mlflow_tracking_uri else None
    if force or current is None:
        return True
    if version_tags(settings, current["version"]).get("training_set_digest") != digest:
        return True
    reason = f"the training set is identical to champion v{current['version']}'s (digest {digest[:12]})"
    record(settings, request_id, state="skipped", skip_reason=reason, finished_at=datetime.now(UTC))
    log.info("skipped: %s", reason)
    return False


def retrain(
    settings: Settings, data_version: str, request_id: int | None = None, epochs: int | None = None
) -> dict[str, object]:
    from src.retrain import retrain_model

    return retrain_model(settings, data_version, request_id=request_id, epochs=epochs)


def promote(settings: Settings, model_version: str, request_id: int | None = None) -> dict[str, object]:
    from src.promote import evaluate_and_promote

    result = evaluate_and_promote(settings, model_version)
    record(
        settings,
        request_id,
        gate_decision=result["decision"],
        gate_details=result,
        model_version_after=f"v{model_version}" if result["decision"] == "promoted" else None,
    )
    return result


def reload(settings: Settings, decision: str, model_version: str, request_id: int | None = None) -> dict[str, object]:
    """Reload the backend when the challenger was promoted; finish the request either way."""
    from src.deploy import reload_backend

    answer: dict[str, object] = {"reloaded": False, "reason": f"challenger v{model_version} was {decision}"}
    if decision == "promoted":
        answer = reload_backend(settings)
    record(settings, request_id, state="succeeded", finished_at=datetime.now(UTC))
    return answer


def run_all(settings: Settings, if_no_champion: bool = False, force: bool = False) -> dict[str, object]:
    """Every stage in the DAG's order, in this process: `make up`'s first champion goes through
    the same split, training and gate as every retrain."""
    from src.registry import champion

    if if_no_champion and (current := champion(settings)) is not None:
        return {"skipped": f"champion v{current['version']} exists"}
    extracted = extract(settings)
    preprocess(settings)
    data_version = version(settings)
    if not has_new_training_data(settings, force=force):
        return {"skipped": "the training set is the champion's", "data_version": data_version}
    trained = retrain(settings, data_version)
    gate = promote(settings, str(trained["version"]))
    return {"extracted": extracted, "data_version": data_version, "trained": trained, "gate": gate}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.pipeline", description=__doc__.splitlines()[0])
    parser.add_argument(
        "stage", choices=["extract", "preprocess", "version", "check", "retrain", "promote", "reload", "all"]
    )
    parser.add_argument("--request-id", type=int, default=None)
    parser.add_argument("--data-version")
    parser.add_argument("--model-version")
    parser.add_argument("--decision", choices=["promoted", "rejected"])
    parser.add_argument("--epochs", type=int, default=None, help="retrain: override RETRAIN_EPOCHS")
    parser.add_argument("--force", action="store_true", help="check/all: train even on unchanged data")
    parser.add_argument("--if-no-champion", action="store_true", help="all: do nothing when a champion exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    needs = {"retrain": ["data_version"], "promote": ["model_version"], "reload": ["decision", "model_version"]}
    missing = [f"--{n.replace('_', '-')}" for n in needs.get(args.stage, []) if getattr(args, n) is None]
    if missing:
        parser.error(f"{args.stage} needs {' and '.join(missing)}")
    try:
        if args.stage == "extract":
            out: object = extract(settings, args.request_id)
        elif args.stage == "preprocess":
            out = preprocess(settings, args.request_id)
        elif args.stage == "version":
            out = version(settings, args.request_id)
        elif args.stage == "check":
            if not has_new_training_data(settings, args.request_id, args.force):
                print("skipped: the training set is identical to the champion's")
                return 3
            out = "new training data"
        elif args.stage == "all":
            out = run_all(settings, args.if_no_champion, args.force)
        elif args.stage == "retrain":
            out = retrain(settings, args.data_version, args.request_id, args.epochs)
        elif args.stage == "promote":
            out = promote(settings, args.model_version, args.request_id)
        else:
            out = reload(settings, args.decision, args.model_version, args.request_id)
    except Exception as exc:  # noqa: BLE001 - recorded on the request, then a non-zero exit
        mark_failed(settings, args.request_id, args.stage, exc)
        print(f"error: {args.stage} failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
