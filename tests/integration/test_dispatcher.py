"""Retrain delivery against real PostgreSQL; Airflow is a recording stand-in (the real one is
exercised in tests/retrain)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from api.retrain import AirflowUnavailable, RetrainDispatcher, dag_run_id_for
from Database_connection import repository as repo
from Database_connection.db import make_pool
from tests.integration.test_repository import _store


class FakeAirflow:
    def __init__(self) -> None:
        self.triggered: list[tuple[str, dict]] = []
        self.down = False

    def trigger(self, dag_run_id: str, conf: dict) -> str:
        if self.down:
            raise AirflowUnavailable("Airflow at http://x is unreachable: connection refused")
        self.triggered.append((dag_run_id, conf))
        return "created"

    def close(self) -> None:
        pass


@pytest.fixture
def dispatcher(settings):
    pool = make_pool(settings.database_url, 1, 4)
    d = RetrainDispatcher(settings, pool, lambda: "v7")
    d.client = FakeAirflow()
    yield d, pool
    pool.close()


def _requests(pool) -> list[dict]:
    with pool.connection() as conn:
        return repo.list_retrain_requests(conn)


def _by_id(pool, request_id: int) -> dict:
    return next(r for r in _requests(pool) if r["id"] == request_id)


def test_requests_piled_up_during_a_run_are_coalesced(dispatcher) -> None:
    d, pool = dispatcher
    for i in range(1, 4):
        _store(pool, i, threshold=1)  # three crossings → three pending requests
    assert d.deliver_one() is True
    [(run_id, conf)] = d.client.triggered
    assert (
        run_id == dag_run_id_for(_by_id(pool, 3))
        and run_id.startswith("rps-retrain-3-")
        and conf == {"retrain_request_id": 3}
    )
    rows = {r["id"]: r for r in _requests(pool)}
    assert rows[3]["state"] == "triggered" and rows[3]["model_version_before"] == "v7"
    assert [(rows[i]["state"], rows[i]["superseded_by"]) for i in (1, 2)] == [("superseded", 3)] * 2

    _store(pool, 4, threshold=1)
    assert d.deliver_one() is False  # a run is active: nothing is sent
    with pool.connection() as conn:
        repo.update_retrain_request(conn, 3, state="succeeded", finished_at=datetime.now(UTC))
    assert d.deliver_one() is True
    assert [t[0] for t in d.client.triggered] == [dag_run_id_for(_by_id(pool, i)) for i in (3, 4)]


def test_airflow_down_keeps_the_request_pending_with_backoff(dispatcher) -> None:
    d, pool = dispatcher
    _store(pool, 1, threshold=1)
    d.client.down = True
    assert d.deliver_one() is False
    row = _requests(pool)[0]
    assert row["state"] == "pending" and row["attempts"] == 1 and "unreachable" in row["last_error"]
    assert row["next_attempt_at"] > datetime.now(UTC)  # backoff: not due again at once
    assert d.deliver_one() is False and d.client.triggered == []
