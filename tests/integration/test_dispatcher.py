"""Retrain delivery against real PostgreSQL; Airflow is a recording stand-in (the real one is
exercised in tests/retrain)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from api import metrics
from api.retrain import AirflowRefused, AirflowUnavailable, RetrainDispatcher, backoff_delay, dag_run_id_for
from Database_connection import repository as repo
from Database_connection.db import make_pool
from tests.integration.test_repository import _store


class FakeAirflow:
    def __init__(self) -> None:
        self.triggered: list[tuple[str, dict]] = []
        self.down = False
        self.refuse: str | None = None
        self.states: dict[str, str | None] = {}
        self.during_trigger = None

    def trigger(self, dag_run_id: str, conf: dict) -> str:
        if self.during_trigger is not None:
            self.during_trigger(conf["retrain_request_id"])
        if self.down:
            raise AirflowUnavailable("Airflow at http://x is unreachable: connection refused")
        if self.refuse:
            raise AirflowRefused(self.refuse)
        self.triggered.append((dag_run_id, conf))
        return "created"

    def run_state(self, dag_run_id: str) -> str | None:
        return self.states.get(dag_run_id, "running")

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


def _set(pool, request_id: int, **fields) -> None:
    assignments = ", ".join(f"{k} = %s" for k in fields)
    with pool.connection() as conn:
        conn.execute(f"UPDATE retrain_requests SET {assignments} WHERE id = %s", (*fields.values(), request_id))


def test_no_row_lock_is_held_while_airflow_is_called(dispatcher, settings) -> None:
    d, pool = dispatcher
    _store(pool, 1, threshold=1)
    seen: list[str] = []

    def lock_from_elsewhere(request_id: int) -> None:
        with psycopg.connect(settings.database_url, autocommit=True) as other:
            other.execute("SET lock_timeout = '200ms'")
            other.execute("SELECT 1 FROM retrain_requests WHERE id = %s FOR UPDATE NOWAIT", (request_id,))
            # ...and the row is leased, so another dispatcher would not claim it meanwhile.
            with other.transaction():
                seen.append(repr(repo.claim_due_retrain_request(other)))

    d.client.during_trigger = lock_from_elsewhere
    assert d.deliver_one() is True
    assert seen == ["None"]
    assert _by_id(pool, 1)["state"] == "triggered"


def test_backoff_is_capped_and_never_overflows(dispatcher, settings) -> None:
    assert backoff_delay(0, 2.0, 60.0) == 2.0 and backoff_delay(3, 2.0, 60.0) == 16.0
    assert backoff_delay(1024, 2.0, 60.0) == backoff_delay(10**9, 2.0, 60.0) == 60.0
    d, pool = dispatcher
    _store(pool, 1, threshold=1)
    _set(pool, 1, attempts=5000)
    d.client.down = True
    assert d.deliver_one() is False  # 2.0 * 2**5000 used to raise OverflowError here
    row = _by_id(pool, 1)
    assert row["state"] == "pending" and row["attempts"] == 5001
    assert row["next_attempt_at"] <= datetime.now(UTC) + timedelta(seconds=settings.retrain_retry_max_s + 1)


def test_a_permanent_refusal_fails_the_request_with_the_reason(dispatcher) -> None:
    d, pool = dispatcher
    _store(pool, 1, threshold=1)
    d.client.refuse = "Airflow refused the trigger of DAG 'x': HTTP 404. Check AIRFLOW_DAG_ID."
    before = metrics.RETRAIN_DELIVERY_ERRORS.labels(kind="permanent")._value.get()
    assert d.deliver_one() is False
    row = _by_id(pool, 1)
    assert row["state"] == "failed" and "AIRFLOW_DAG_ID" in row["last_error"] and row["finished_at"]
    assert metrics.RETRAIN_DELIVERY_ERRORS.labels(kind="permanent")._value.get() == before + 1
    assert d.deliver_one() is False and d.client.triggered == []  # not retried


def test_reconcile_looks_at_every_active_run_not_just_the_newest(dispatcher) -> None:
    d, pool = dispatcher
    for i in range(1, 31):
        _store(pool, i, threshold=1)
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    _set(pool, 1, state="running", dag_run_id="orphan", triggered_at=long_ago)
    for i in range(2, 31):
        _set(pool, i, state="superseded", finished_at=datetime.now(UTC))
    d.client.states["orphan"] = None  # Airflow has never heard of it (its database was reset)
    d.reconcile()
    row = _by_id(pool, 1)
    assert row["state"] == "failed" and "unknown to Airflow" in row["last_error"]


def test_a_run_past_the_maximum_age_is_failed_with_a_reason(dispatcher) -> None:
    d, pool = dispatcher
    _store(pool, 1, threshold=1)
    _store(pool, 2, threshold=1)
    too_old = datetime.now(UTC) - timedelta(seconds=d.settings.retrain_max_run_s + 60)
    _set(pool, 1, state="running", dag_run_id="stuck", triggered_at=too_old)
    _set(pool, 2, state="triggered", dag_run_id="fresh", triggered_at=datetime.now(UTC))
    d.reconcile()  # Airflow still says "running" for both
    stuck, fresh = _by_id(pool, 1), _by_id(pool, 2)
    assert stuck["state"] == "failed" and "RETRAIN_MAX_RUN_S" in stuck["last_error"]
    assert fresh["state"] == "triggered"


def test_a_second_dispatcher_sends_nothing_while_a_delivery_is_in_flight(dispatcher, settings) -> None:
    """Two replicas' dispatchers: while the first is still calling Airflow, the second neither
    delivers a newer request nor marks the one in flight superseded (it used to do both)."""
    d, pool = dispatcher
    other = RetrainDispatcher(settings, pool, lambda: "v7")
    other.client = FakeAirflow()
    _store(pool, 1, threshold=1)
    seen: list[bool] = []

    def newer_crossing_handled_elsewhere(request_id: int) -> None:
        _store(pool, 2, threshold=1)  # a crossing on another replica, mid-delivery
        seen.append(other.deliver_one())

    d.client.during_trigger = newer_crossing_handled_elsewhere
    assert d.deliver_one() is True
    assert seen == [False] and other.client.triggered == []
    assert _by_id(pool, 1)["state"] == "triggered" and _by_id(pool, 2)["state"] == "pending"
    assert other.deliver_one() is False  # request 1's run is active now: nothing to send
