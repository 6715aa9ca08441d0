"""Retention against real PostgreSQL: old unlabelled images go (with their predictions),
labelled ones and recently seen ones stay; the database size is a metric."""

from __future__ import annotations

import time

import psycopg
import pytest

from api.metrics import DatabaseCollector
from api.retention import RetentionJob, prune_once
from Database_connection import repository as repo
from Database_connection.db import make_pool
from tests.integration.test_repository import _store


@pytest.fixture
def pool(db_url):
    p = make_pool(db_url, 1, 3)
    yield p
    p.close()


def _age(db_url: str, index: int, days: float, predictions_too: bool = True) -> None:
    sha = f"{index:064x}"
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE images SET created_at = now() - make_interval(days => %s) WHERE sha256 = %s", (days, sha))
        if predictions_too:
            conn.execute(
                "UPDATE predictions SET created_at = now() - make_interval(days => %s) WHERE image_sha256 = %s",
                (days, sha),
            )


def _shas(db_url: str) -> set[int]:
    with psycopg.connect(db_url) as conn:
        return {int(r[0], 16) for r in conn.execute("SELECT sha256 FROM images")}


def _seed(pool, db_url: str) -> None:
    for i in range(1, 6):
        _store(pool, i, threshold=1000)
    _age(db_url, 1, 40)  # old, unlabelled: pruned
    _age(db_url, 2, 40)  # old but labelled: training data, kept
    with pool.connection() as conn:
        repo.upsert_label(conn, image_sha256=f"{2:064x}", label="rock", source="feedback", prediction_id=None)
    _age(db_url, 3, 40, predictions_too=False)  # old image, predicted again recently: kept
    _age(db_url, 4, 10)  # unlabelled but younger than the retention age: kept
    _store(pool, 1, threshold=1000)  # a second prediction of image 1, also old
    _age(db_url, 1, 40)


def test_old_unlabelled_images_are_pruned_with_their_predictions(pool, db_url) -> None:
    _seed(pool, db_url)
    totals = prune_once(pool, older_than_days=30, batch=1)  # batches of one: the loop must go on
    assert totals["images"] == 1 and totals["predictions"] == 2 and totals["bytes"] == 1
    assert _shas(db_url) == {2, 3, 4, 5}
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM predictions").fetchone()[0] == 4
        assert conn.execute("SELECT count(*) FROM labels").fetchone()[0] == 1
    assert prune_once(pool, older_than_days=30)["images"] == 0  # idempotent


def test_the_scheduled_job_prunes_without_being_asked(pool, db_url, settings) -> None:
    _seed(pool, db_url)
    job = RetentionJob(settings.model_copy(update={"unlabelled_image_retention_days": 30.0}), pool)
    job.start()
    try:
        deadline = time.monotonic() + 10
        while 1 in _shas(db_url) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        job.stop()
    assert _shas(db_url) == {2, 3, 4, 5}


def test_database_size_is_a_metric(pool) -> None:
    families = {f.name: f for f in DatabaseCollector(pool, threshold=3).collect()}
    (sample,) = families["rps_database_size_bytes"].samples
    assert sample.value > 1_000_000  # an empty PostgreSQL database is already several MB
