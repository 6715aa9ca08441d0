"""Retrain delivery against a real Airflow (api-server, scheduler, dag-processor): answers
that no retry can fix fail the request at once with a reason an operator can act on, and an
Airflow that is stopped leaves the request pending with backoff."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from api.retrain import RetrainDispatcher
from Database_connection import repository as repo
from Database_connection.db import make_pool
from tests.integration.test_repository import _store
from tests.support.fixtures import airflow_template_db  # noqa: F401
from tests.support.stack import Service, start_airflow

pytestmark = [pytest.mark.slow, pytest.mark.services]


@pytest.fixture(scope="module")
def airflow(tmp_path_factory, airflow_template_db) -> Iterator[Service]:  # noqa: F811
    """Airflow with an empty DAG folder: the backend's DAG id is unknown to it."""
    run_dir = tmp_path_factory.mktemp("airflow-faults")
    (run_dir / "dags").mkdir()
    service = start_airflow(run_dir, dags_folder=run_dir / "dags", template_db=airflow_template_db)
    try:
        yield service
    finally:
        service.stop()


def _dispatcher(settings, airflow: Service, **overrides) -> RetrainDispatcher:
    user, password = airflow.extra["backend"]
    configured = settings.model_copy(
        update={"airflow_url": airflow.url, "airflow_username": user, "airflow_password": password, **overrides}
    )
    return RetrainDispatcher(configured, make_pool(settings.database_url, 1, 2), lambda: "v1")


def _request(pool, request_id: int) -> dict:
    with pool.connection() as conn:
        return next(r for r in repo.list_retrain_requests(conn) if r["id"] == request_id)


@pytest.mark.parametrize(
    ("overrides", "status", "hint"),
    [({"airflow_password": "wrong-password"}, "401", "AIRFLOW_PASSWORD"), ({}, "404", "AIRFLOW_DAG_ID")],
    ids=["bad-credentials", "unknown-dag"],
)
def test_permanent_refusals_fail_the_request_with_a_reason(settings, airflow, overrides, status, hint) -> None:
    d = _dispatcher(settings, airflow, **overrides)
    try:
        _store(d.pool, 1, threshold=1)
        assert d.deliver_one() is False
        row = _request(d.pool, 1)
        assert row["state"] == "failed", row
        assert f"HTTP {status}" in row["last_error"] and hint in row["last_error"]
    finally:
        d.client.close()
        d.pool.close()


def test_an_orphaned_run_is_failed_by_reconcile(settings, airflow) -> None:
    d = _dispatcher(settings, airflow)
    try:
        _store(d.pool, 1, threshold=1)
        with d.pool.connection() as conn:
            conn.execute(
                "UPDATE retrain_requests SET state = 'running', dag_run_id = 'rps-retrain-lost',"
                " triggered_at = %s WHERE id = 1",
                (datetime.now(UTC) - timedelta(hours=1),),
            )
        d.reconcile()
        row = _request(d.pool, 1)
        assert row["state"] == "failed" and "unknown to Airflow" in row["last_error"]
    finally:
        d.client.close()
        d.pool.close()


def test_a_stopped_airflow_leaves_the_request_pending_with_backoff(settings, airflow, tmp_path: Path) -> None:
    d = _dispatcher(settings, airflow)
    try:
        _store(d.pool, 1, threshold=1)
        airflow.stop()
        assert d.deliver_one() is False
        row = _request(d.pool, 1)
        assert row["state"] == "pending" and row["attempts"] == 1 and "unreachable" in row["last_error"]
        assert row["next_attempt_at"] > datetime.now(UTC)
    finally:
        d.client.close()
        d.pool.close()
