"""PostgreSQL outages against the real backend process and a PostgreSQL of the test's own,
stopped and restarted by the test: clear 503s fast, nothing half-stored, no failure after
the database is back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg_pool import PoolTimeout

from Database_connection.db import make_pool
from tests.conftest import Backend, start_backend
from tests.support.auth import operator_headers
from tests.support.postgres import OwnPostgres

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def own_pg() -> Iterator[OwnPostgres]:
    pg = OwnPostgres()
    pg.start()
    try:
        yield pg
    finally:
        pg.destroy()


@pytest.fixture(scope="module")
def backend(own_pg: OwnPostgres, model_dir: Path, data_dir: Path, tmp_path_factory) -> Iterator[Backend]:
    url = own_pg.create_database("rps_faults")
    started = start_backend(url, model_dir, data_dir, tmp_path_factory.mktemp("faults"), DB_POOL_MIN="3")
    try:
        yield started
    finally:
        started.proc.stop()


@pytest.fixture
def pg_up(own_pg: OwnPostgres) -> Iterator[OwnPostgres]:
    """Whatever a test does to the server, the next one starts with it running."""
    yield own_pg
    if not own_pg.answers():
        own_pg.start()


def _image(sample_images) -> tuple[str, bytes]:
    path = sample_images["rock"][0]
    return path.name, path.read_bytes()


def _stored_predictions(backend: Backend) -> int:
    with psycopg.connect(backend.db_url) as conn:
        return conn.execute("SELECT count(*) FROM predictions").fetchone()[0]


def test_database_down_gives_503_json_fast_and_store_false_still_works(backend, pg_up, sample_images) -> None:
    name, data = _image(sample_images)
    with httpx.Client(base_url=backend.url, timeout=30) as c:
        assert c.post("/predict", files={"file": (name, data)}).status_code == 200  # warm pooled connections
        before = _stored_predictions(backend)
        pg_up.stop()
        calls = {
            "predict": lambda: c.post("/predict", files={"file": (name, data)}),
            "upload": lambda: c.post("/upload", files={"file": (name, data)}, data={"label": "rock"}),
            "feedback": lambda: c.post("/feedback", json={"prediction_id": 1, "label": "rock"}),
            "stats": lambda: c.get("/stats"),
        }
        for route, call in calls.items():
            start = time.perf_counter()
            r = call()
            elapsed = time.perf_counter() - start
            assert r.status_code == 503, (route, r.status_code, r.text)
            assert r.json()["code"] == "database_unavailable", (route, r.text)
            assert elapsed < 2.0, f"{route} took {elapsed:.2f} s to answer during the outage"
        ready = c.get("/ready")
        assert ready.status_code == 503 and ready.json()["code"] == "database_unavailable"
        assert c.get("/health").status_code == 200
        preview = c.post("/predict", params={"store": "false"}, files={"file": (name, data)})
        assert preview.status_code == 200 and preview.json()["label"] == "rock", preview.text

        pg_up.start()
        r = c.post("/predict", files={"file": (name, data)})
        assert r.status_code == 200, r.text
        assert c.get("/ready").status_code == 200
    assert _stored_predictions(backend) == before + 1  # the refused ones left nothing behind


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_no_request_fails_once_postgres_is_back_after_a_restart(backend, pg_up, sample_images, mode) -> None:
    """Stale pooled connections (the server restarted under them) are replaced, not used."""
    name, data = _image(sample_images)
    with httpx.Client(base_url=backend.url, timeout=30) as c:
        for _ in range(3):  # every pooled connection has been used and is idle
            assert c.post("/predict", files={"file": (name, data)}).status_code == 200
        before = _stored_predictions(backend)
        pg_up.stop(mode)
        pg_up.start()
        answers = [c.post("/predict", files={"file": (name, data)}) for _ in range(6)]
        answers += [c.get("/stats"), c.get("/predictions", headers=operator_headers())]
    assert [r.status_code for r in answers] == [200] * len(answers), [r.text for r in answers if r.status_code != 200]
    assert _stored_predictions(backend) == before + 6


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_pool_whose_every_connection_went_stale_hands_out_a_working_one(pg_up, mode) -> None:
    """After a restart each idle connection is stale. psycopg_pool's own check loop sleeps 1 s,
    then 2 s, between stale ones, so four idle connections outlast a 1.5 s timeout (the
    backend's default DB_TIMEOUT_S); the first stale one must replace them all instead."""
    pool = make_pool(pg_up.url(), min_size=4, max_size=6, timeout=1.5)
    try:
        idle = [pool.getconn() for _ in range(4)]
        for conn in idle:
            pool.putconn(conn)
        pg_up.stop(mode)
        pg_up.start()
        for _ in range(6):
            with pool.connection() as conn:
                assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}
        stats = pool.get_stats()
        assert stats.get("connections_lost", 0) + stats.get("returns_bad", 0) >= 1
    finally:
        pool.close()


def test_a_pool_reconnects_within_its_timeout_once_postgres_is_back_after_a_long_outage(pg_up) -> None:
    """psycopg_pool retries a failed connection attempt after 1, 2, 4, 8 ... s for up to 5
    minutes, and while one attempt waits out its delay no request starts another: after an
    outage of 10 s the pool would not try again for up to 8 s, answering 503 with the server
    back. Requests keep failing fast during the outage and the first one after it succeeds."""
    pool = make_pool(pg_up.url(), min_size=2, max_size=4, timeout=1.5)
    try:
        with pool.connection() as conn:
            conn.execute("SELECT 1")
        pg_up.stop("immediate")
        down_until = time.monotonic() + 10
        while time.monotonic() < down_until:  # requests during the outage, as a backend sees them
            start = time.monotonic()
            with pytest.raises(PoolTimeout), pool.connection() as conn:
                conn.execute("SELECT 1")
            assert time.monotonic() - start < 2.5, "a request during the outage must fail within the timeout"
        pg_up.start()
        with pool.connection() as conn:
            assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}
    finally:
        pool.close()
