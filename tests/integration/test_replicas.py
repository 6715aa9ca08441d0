"""Three backend processes on one PostgreSQL database and one MLflow registry: what scaling out
must not break. Each replica is `python main.py`, as a Deployment or a Compose replica runs it.

* Every stored prediction is stored and counted once, and each threshold crossing makes one
  retrain request, whichever replica served the request that crossed it.
* A retrain request is delivered to Airflow once, and never while another delivery or run is in
  flight, however many dispatchers (one per replica) race for it. Airflow here is a recorder
  (tests/support/airflow_recorder.py) because the real one hides a duplicate behind a 409.
* After a promotion (`@champion` moved in the real registry) every replica serves the new
  version within the poll interval (MODEL_POLL_SECONDS), with no failed request meanwhile.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from Database_connection import repository as repo
from Database_connection.db import migration_files
from tests.conftest import DATASETS, Backend, start_backend
from tests.support import db as dbs
from tests.support.airflow_recorder import AirflowRecorder
from tests.support.procs import wait_until
from tests.support.stack import start_mlflow

pytestmark = pytest.mark.slow

REPLICAS = 3
THRESHOLD = 5
PREDICTIONS = 50
MODEL_NAME = "rps-classifier"
# Under load a prediction can wait for a slot longer than the default 2 s; a 503 `busy` would
# store nothing and make the count test about the machine, not about replicas.
PATIENT = {"PREDICTION_QUEUE_S": "60", "MAX_CONCURRENT_PREDICTIONS": "4"}


def distinct_images(n: int) -> list[Path]:
    """`n` different photos (different hashes), taken from every class of both datasets."""
    pools = [
        sorted(p for p in (DATASETS / ds / label).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        for ds in ("seed-drgfreeman", "roboflow-sxsw")
        for label in ("rock", "paper", "scissors")
    ]
    picked: list[Path] = []
    for i in range(n):
        pool = pools[i % len(pools)]
        picked.append(pool[i // len(pools)])
    return picked


@pytest.fixture
def replicas(model_dir: Path, data_dir: Path, tmp_path: Path) -> Iterator[Callable[..., list[Backend]]]:
    """`replicas(db_url, n, **env)` starts n backends at once on one database; all stop at the end."""
    started: list[Backend] = []

    def start(db_url: str, n: int = REPLICAS, **env: str) -> list[Backend]:
        base = len(started)
        with ThreadPoolExecutor(n) as ex:
            futures = [
                ex.submit(start_backend, db_url, model_dir, data_dir, tmp_path / f"replica{base + i}", **env)
                for i in range(n)
            ]
        for f in futures:
            if f.exception() is None:
                started.append(f.result())
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            raise errors[0]
        return started[base:]

    yield start
    with ThreadPoolExecutor(max(1, len(started))) as ex:
        list(ex.map(lambda b: b.proc.stop(), started))


@pytest.fixture
def empty_db() -> Iterator[str]:
    """A database nobody has migrated yet: the replicas race to migrate it themselves."""
    name = dbs.unique_name("rps_replicas")
    url = dbs.create_db(name)
    yield url
    dbs.drop_db(name)


def _rows(db_url: str, query: str) -> list[dict]:
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        return conn.execute(query).fetchall()


def _retrain_rows(db_url: str) -> list[dict]:
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        return sorted(repo.list_retrain_requests(conn, limit=1000), key=lambda r: r["id"])


def _settled(recorder: AirflowRecorder, db_url: str, runs: int, quiet_s: float) -> None:
    """Wait until `runs` runs were created and a delivered request is marked triggered, then
    `quiet_s` more so that a dispatcher that would deliver again has had its chance."""

    def delivered() -> bool:
        rows = _retrain_rows(db_url)
        return len(recorder.created()) >= runs and any(r["state"] == "triggered" for r in rows)

    wait_until(delivered, 60, f"{runs} delivered retrain run(s)")
    time.sleep(quiet_s)


def test_predictions_over_three_replicas_are_counted_once_and_each_crossing_delivered_once(
    replicas, empty_db: str
) -> None:
    recorder = AirflowRecorder(trigger_delay_s=3.0).start()
    try:
        backends = replicas(
            empty_db,
            AIRFLOW_URL=recorder.url,
            AIRFLOW_PASSWORD="recorder-password",
            RETRAIN_THRESHOLD=str(THRESHOLD),
            DISPATCHER_POLL_S="0.3",
            **PATIENT,
        )
        # Three processes migrated one empty database at once: each migration applied once.
        applied = _rows(empty_db, "SELECT version, count(*) AS n FROM schema_migrations GROUP BY version")
        assert sorted(r["version"] for r in applied) == [v for v, _ in migration_files()]
        assert all(r["n"] == 1 for r in applied)

        images = distinct_images(PREDICTIONS)
        assert len({p.read_bytes() for p in images}) == PREDICTIONS

        def predict(i: int) -> tuple[int, dict]:
            backend = backends[i % REPLICAS]
            path = images[i]
            r = httpx.post(f"{backend.url}/predict", files={"file": (path.name, path.read_bytes())}, timeout=120)
            return i % REPLICAS, {"status": r.status_code, **(r.json() if r.status_code == 200 else {"body": r.text})}

        with ThreadPoolExecutor(4 * REPLICAS) as ex:
            answers = list(ex.map(predict, range(PREDICTIONS)))

        assert [a["status"] for _, a in answers] == [200] * PREDICTIONS, [a for _, a in answers if a["status"] != 200]
        assert Counter(replica for replica, _ in answers) == {0: 17, 1: 17, 2: 16}
        ids = [a["prediction_id"] for _, a in answers]
        assert len(set(ids)) == PREDICTIONS

        # Stored once each: one image row per photo, one prediction row per request.
        [totals] = _rows(
            empty_db,
            "SELECT (SELECT count(*) FROM predictions) AS predictions, (SELECT count(*) FROM images) AS images,"
            " (SELECT count(DISTINCT image_sha256) FROM predictions) AS predicted_images",
        )
        assert totals == {"predictions": PREDICTIONS, "images": PREDICTIONS, "predicted_images": PREDICTIONS}
        assert sorted(ids) == [r["id"] for r in _rows(empty_db, "SELECT id FROM predictions ORDER BY id")]

        # Counted once each: the counts the replicas answered are 1..THRESHOLD-1, 0 at each
        # crossing, exactly PREDICTIONS / THRESHOLD times each, as if one process had served all.
        crossings = PREDICTIONS // THRESHOLD
        assert Counter(a["predictions_since_retrain"] for _, a in answers) == dict.fromkeys(range(THRESHOLD), crossings)

        # One request per crossing, each covering the next THRESHOLD stored predictions.
        rows = _retrain_rows(empty_db)
        assert len(rows) == crossings
        assert [r["prediction_count"] for r in rows] == [THRESHOLD] * crossings
        assert [r["last_prediction_id"] for r in rows] == sorted(ids)[THRESHOLD - 1 :: THRESHOLD]

        # While the first delivery is held open (3 s) and then while its run is active, no
        # other replica delivers anything: one run created, no request sent twice.
        _settled(recorder, empty_db, runs=1, quiet_s=3.0)
        first = recorder.created()
        assert len(first) == 1, [(t.dag_run_id, t.started, t.finished) for t in recorder.triggers]
        rows = {r["id"]: r for r in _retrain_rows(empty_db)}
        first_id = first[0].conf["retrain_request_id"]
        assert rows[first_id]["state"] == "triggered" and rows[first_id]["dag_run_id"] == first[0].dag_run_id
        assert all(r["state"] in ("pending", "superseded") for i, r in rows.items() if i != first_id)

        # The run ends (what the DAG records): the newest request is delivered once, the ones
        # that piled up meanwhile are superseded by it.
        recorder.run_states[first[0].dag_run_id] = "success"
        with psycopg.connect(empty_db, row_factory=dict_row, autocommit=True) as conn:
            repo.update_retrain_request(conn, first_id, state="succeeded", finished_at=datetime.now(UTC))
        _settled(recorder, empty_db, runs=2, quiet_s=3.0)
    finally:
        recorder.stop()

    created = recorder.created()
    assert len(created) == 2 and len(recorder.triggers) == 2, [(t.dag_run_id, t.status) for t in recorder.triggers]
    assert created[0].finished <= created[1].started  # never two deliveries in flight at once
    rows = {r["id"]: r for r in _retrain_rows(empty_db)}
    newest = max(rows)
    assert created[1].conf["retrain_request_id"] == newest and rows[newest]["state"] == "triggered"
    delivered = {t.conf["retrain_request_id"] for t in created}
    for i, r in rows.items():
        if i not in delivered:
            assert r["state"] == "superseded" and r["superseded_by"] in delivered and r["superseded_by"] > i, r


def _register(client, experiment: str, model_dir: Path, *, champion: bool) -> str:
    """Log the serving files as a run's `serving/` folder and register a version (what the
    training stage does, without training); optionally move `@champion` to it."""
    run = client.create_run(experiment)
    client.log_artifacts(run.info.run_id, str(model_dir), artifact_path="serving")
    client.set_terminated(run.info.run_id)
    version = client.create_model_version(MODEL_NAME, f"runs:/{run.info.run_id}/serving", run_id=run.info.run_id)
    if champion:
        client.set_registered_model_alias(MODEL_NAME, "champion", version.version)
    return version.version


@pytest.mark.services
def test_every_replica_serves_a_new_champion_within_the_poll_interval(
    replicas, db_url: str, model_dir: Path, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    poll_s = 5.0
    load_allowance_s = 15.0  # one download + load + warm-up on a loaded 2-core machine
    mlflow = start_mlflow(tmp_path / "mlflow")
    try:
        client = MlflowClient(mlflow.url)
        experiment = client.create_experiment("replicas")
        client.create_registered_model(MODEL_NAME)
        first = _register(client, experiment, model_dir, champion=True)
        backends = replicas(
            db_url,
            MODEL_SOURCE="mlflow",
            MLFLOW_TRACKING_URI=mlflow.url,
            MODEL_DIR=str(tmp_path / "no-local-model"),  # only the registry can give a model
            MODEL_POLL_SECONDS=str(poll_s),
            **PATIENT,
        )
        for b in backends:
            assert httpx.get(f"{b.url}/ready", timeout=10).json()["model_version"] == f"v{first}"

        # Traffic on every replica throughout the promotion: nothing may fail during the swap.
        seen: dict[int, list[tuple[int, str | None]]] = {i: [] for i in range(REPLICAS)}
        stop = threading.Event()
        photo = distinct_images(1)[0]

        def traffic(i: int) -> None:
            with httpx.Client(timeout=120) as http:
                while not stop.is_set():
                    r = http.post(
                        f"{backends[i].url}/predict",
                        params={"store": "false"},
                        files={"file": (photo.name, photo.read_bytes())},
                    )
                    seen[i].append((r.status_code, r.json().get("model_version") if r.status_code == 200 else None))
                    time.sleep(0.2)

        threads = [threading.Thread(target=traffic, args=(i,), daemon=True) for i in range(REPLICAS)]
        for t in threads:
            t.start()
        second = _register(client, experiment, model_dir, champion=False)
        promoted = time.monotonic()
        client.set_registered_model_alias(MODEL_NAME, "champion", second)

        converged: dict[int, float] = {}
        while len(converged) < REPLICAS and time.monotonic() - promoted < poll_s + load_allowance_s + 30:
            for i, b in enumerate(backends):
                if i not in converged and httpx.get(f"{b.url}/ready", timeout=10).json().get("model_version") == (
                    f"v{second}"
                ):
                    converged[i] = time.monotonic() - promoted
            time.sleep(0.1)
        time.sleep(1.0)  # traffic after the swap too
        stop.set()
        for t in threads:
            t.join(130)
    finally:
        mlflow.stop()

    times = ", ".join(f"replica {i}: {converged[i]:.2f} s" for i in sorted(converged))
    print(f"\nconvergence after moving @champion to v{second} (MODEL_POLL_SECONDS={poll_s:g}): {times}")
    assert len(converged) == REPLICAS, f"only {sorted(converged)} served v{second}: {times}"
    assert max(converged.values()) <= poll_s + load_allowance_s, times

    for i, answers in seen.items():
        assert answers and all(status == 200 for status, _ in answers), (i, answers)
        versions = [v for _, v in answers]
        # Old version, then the new one, never back: the swap is atomic per replica.
        assert versions == sorted(versions, key=lambda v: v != f"v{first}"), (i, versions)
        assert versions[-1] == f"v{second}", (i, versions)
    loads = _rows(db_url, "SELECT model_version, outcome FROM model_loads WHERE model_source LIKE 'models:/%'")
    assert Counter((r["model_version"], r["outcome"]) for r in loads) == {
        (f"v{first}", "loaded"): REPLICAS,
        (f"v{second}", "loaded"): REPLICAS,
    }
