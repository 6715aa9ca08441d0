"""Retrain bookkeeping in PostgreSQL: one request per threshold crossing, even concurrently."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import psycopg

from Database_connection import repository as repo
from Database_connection.db import make_pool, migrate


def _store(pool, i: int, threshold: int) -> int | None:
    sha = f"{i:064x}"
    with pool.connection() as conn:
        stored = repo.record_prediction(
            conn,
            sha256=sha,
            content=b"x",
            fmt="png",
            width=1,
            height=1,
            original_name=None,
            label="rock",
            confidence=0.9,
            probabilities={"rock": 0.9, "paper": 0.05, "scissors": 0.05},
            model_version="v",
            latency_ms=1.0,
            threshold=threshold,
        )
    return stored.retrain_request_id


def test_one_request_per_crossing_under_concurrency(db_url) -> None:
    pool = make_pool(db_url, 1, 12)
    try:
        with ThreadPoolExecutor(12) as ex:
            ids = list(ex.map(lambda i: _store(pool, i, 5), range(1, 51)))
        created = [i for i in ids if i is not None]
        with pool.connection() as conn:
            rows = repo.list_retrain_requests(conn)
            since = repo.count_predictions_since_retrain(conn)
    finally:
        pool.close()
    assert len(created) == 10 == len(rows)
    assert all(r["prediction_count"] == 5 and r["state"] == "pending" for r in rows)
    assert since == 0


def test_migrations_are_idempotent(db_url) -> None:
    assert migrate(db_url) == []
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] >= 1
