"""Delivers retrain requests to Airflow, off the request path.

`/predict` only records a request row (in its own transaction). This dispatcher thread
claims a due row with `FOR UPDATE SKIP LOCKED` and leases it (pushes `next_attempt_at`
forward) in a short transaction, so no row lock is held while Airflow is called; since the
`dag_run_id` is deterministic, a second delivery after an expired lease is Airflow's 409,
which counts as delivered. One session-level advisory lock spans check, claim, call and
outcome, so across every worker and replica at most one delivery is in flight: without it,
a second replica saw no active run while the first was still calling Airflow, delivered a
newer request as well and marked the one in flight superseded (two runs, one of them
booked as never delivered).
If Airflow is down the row stays pending and is retried with capped exponential backoff;
an answer retrying cannot fix (401, 403, 404, a refused conf) fails the request at once
with the reason in `last_error` and counts `rps_retrain_delivery_errors_total{kind="permanent"}`,
which alerts.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
from psycopg_pool import ConnectionPool

from api import metrics
from Database_connection import repository as repo
from utils.settings import Settings

log = logging.getLogger(__name__)


class AirflowUnavailable(RuntimeError):
    """Airflow could not be reached or failed for now; the request stays pending."""


class AirflowRefused(RuntimeError):
    """Airflow answered in a way no retry can fix (bad credentials, no such DAG, bad conf)."""


# Statuses that mean the backend's configuration is wrong, not that Airflow is busy.
PERMANENT_STATUSES = {400: "bad request", 401: "unauthorized", 403: "forbidden", 404: "not found", 422: "invalid"}
# The lease a claimed request gets while it is delivered without a row lock held.
DELIVERY_LEASE_S = 120.0


def _refused(what: str, r: httpx.Response) -> AirflowRefused:
    hint = {
        401: " Check AIRFLOW_USERNAME and AIRFLOW_PASSWORD.",
        403: " The Airflow user may not trigger this DAG.",
        404: " Check AIRFLOW_DAG_ID and that the DAG file is deployed.",
    }.get(r.status_code, "")
    return AirflowRefused(f"Airflow refused {what}: HTTP {r.status_code} {r.text[:300]}.{hint}")


def backoff_delay(attempts: int, initial_s: float, max_s: float) -> float:
    """initial * 2**attempts, capped; the exponent is bounded so no attempt count overflows."""
    return min(max_s, initial_s * 2.0 ** min(max(attempts, 0), 62))


class AirflowClient:
    """The few Airflow 3 REST calls the backend needs, with a cached JWT."""

    def __init__(self, settings: Settings, timeout: float = 10.0) -> None:
        self.base = settings.airflow_url.rstrip("/")
        self.username = settings.airflow_username
        self.password = settings.airflow_password
        self.dag_id = settings.airflow_dag_id
        self.http = httpx.Client(timeout=timeout)
        self._token: str | None = None

    def close(self) -> None:
        self.http.close()

    def _login(self) -> str:
        r = self.http.post(f"{self.base}/auth/token", json={"username": self.username, "password": self.password})
        if r.status_code in PERMANENT_STATUSES:
            raise _refused(f"the login as {self.username!r}", r)
        if r.status_code not in (200, 201):
            raise AirflowUnavailable(f"Airflow login as {self.username!r} failed: HTTP {r.status_code} {r.text[:200]}")
        self._token = r.json()["access_token"]
        return self._token

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            token = self._token or self._login()
            r = self.http.request(method, f"{self.base}{path}", headers={"Authorization": f"Bearer {token}"}, **kwargs)
            if r.status_code == 401:  # expired token: log in once more
                r = self.http.request(
                    method, f"{self.base}{path}", headers={"Authorization": f"Bearer {self._login()}"}, **kwargs
                )
        except httpx.HTTPError as exc:
            raise AirflowUnavailable(f"Airflow at {self.base} is unreachable: {exc}") from exc
        return r

    def trigger(self, dag_run_id: str, conf: dict[str, Any]) -> str:
        """Create the DAG run; returns 'created' or 'exists' (a 409 is success: already delivered)."""
        r = self._call(
            "POST",
            f"/api/v2/dags/{self.dag_id}/dagRuns",
            json={"dag_run_id": dag_run_id, "logical_date": None, "conf": conf},
        )
        if r.status_code == 409:
            return "exists"
        if r.status_code in PERMANENT_STATUSES:
            raise _refused(f"the trigger of DAG {self.dag_id!r}", r)
        if r.status_code >= 300:
            raise AirflowUnavailable(f"Airflow could not take the trigger now: HTTP {r.status_code} {r.text[:300]}")
        return "created"

    def run_state(self, dag_run_id: str) -> str | None:
        r = self._call("GET", f"/api/v2/dags/{self.dag_id}/dagRuns/{dag_run_id}")
        if r.status_code == 404:
            return None
        if r.status_code in (401, 403):
            raise _refused("the run lookup", r)
        if r.status_code >= 300:
            raise AirflowUnavailable(f"Airflow run lookup failed: HTTP {r.status_code}")
        return r.json().get("state")


def dag_run_id_for(row: dict[str, Any]) -> str:
    """Deterministic, so a retried delivery can never start a second run. The request time
    makes it unique across databases: a fresh database's request 1 must not be mistaken
    (a 409) for an old run of another installation's request 1 on the same Airflow."""
    return f"rps-retrain-{row['id']}-{row['requested_at']:%Y%m%dT%H%M%S%f}"


class RetrainDispatcher:
    """A daemon thread: wakes on a new request or every `dispatcher_poll_s`."""

    def __init__(self, settings: Settings, pool: ConnectionPool, current_version) -> None:
        self.settings = settings
        self.pool = pool
        self.current_version = current_version
        self.client = AirflowClient(settings)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="retrain-dispatcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(15)
        self.client.close()

    def notify(self, request_id: int) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                while self.deliver_one():
                    pass
                self.reconcile()
            except Exception:
                log.exception("retrain dispatcher iteration failed")
            self._wake.wait(self.settings.dispatcher_poll_s)
            self._wake.clear()

    def deliver_one(self) -> bool:
        """Deliver the newest due request; True if one was delivered (try the next).

        Under the delivery lock (another dispatcher holding it is delivering: leave it to
        that one): claim and lease in one short transaction, call Airflow with no row lock
        held, then record the outcome."""
        with self.pool.connection() as conn:
            if not repo.try_lock_retrain_delivery(conn):
                return False
            try:
                return self._deliver_locked(conn)
            finally:
                try:
                    repo.unlock_retrain_delivery(conn)
                except psycopg.Error:
                    conn.close()  # a lock that cannot be released must not go back to the pool

    def _deliver_locked(self, conn: psycopg.Connection) -> bool:
        with conn.transaction():
            if repo.retrain_run_active(conn):
                return False  # max_active_runs=1: wait, then deliver the newest request once
            row = repo.claim_due_retrain_request(conn)
            if row is None:
                return False
            repo.postpone_retrain_request(conn, row["id"], DELIVERY_LEASE_S)
        run_id = dag_run_id_for(row)
        try:
            outcome = self.client.trigger(run_id, {"retrain_request_id": row["id"]})
        except AirflowRefused as exc:
            metrics.RETRAIN_DELIVERY_ERRORS.labels(kind="permanent").inc()
            repo.fail_pending_retrain_request(conn, row["id"], str(exc)[:1000])
            log.error("retrain request %s failed: %s", row["id"], exc)
            return False
        except AirflowUnavailable as exc:
            metrics.RETRAIN_DELIVERY_ERRORS.labels(kind="transient").inc()
            delay = backoff_delay(
                row["attempts"], self.settings.retrain_retry_initial_s, self.settings.retrain_retry_max_s
            )
            repo.mark_retrain_retry(conn, row["id"], str(exc)[:1000], delay)
            log.warning("retrain request %s not delivered (retry in %.0fs): %s", row["id"], delay, exc)
            return False
        repo.mark_retrain_triggered(conn, row["id"], run_id, self.current_version())
        log.info("retrain request %s delivered as DAG run %s (%s)", row["id"], run_id, outcome)
        return True

    def reconcile(self) -> None:
        """Close delivered requests whose run ended without the DAG's own bookkeeping (a
        killed worker), is unknown to Airflow, or has run longer than `retrain_max_run_s`.
        Every active request is looked at, however many newer ones there are."""
        with self.pool.connection() as conn:
            active = repo.active_retrain_requests(conn)
        now = datetime.now(UTC)
        max_run = timedelta(seconds=self.settings.retrain_max_run_s)
        for row in active:
            since = row["triggered_at"] or row["requested_at"]
            if now - since > max_run:
                reason = (
                    f"Airflow run {row['dag_run_id']} did not finish within {self.settings.retrain_max_run_s:.0f} s"
                    " (RETRAIN_MAX_RUN_S); marked failed"
                )
                with self.pool.connection() as conn:
                    repo.fail_retrain_if_open(conn, row["id"], reason)
                log.error("retrain request %s: %s", row["id"], reason)
                continue
            try:
                state = self.client.run_state(row["dag_run_id"])
            except (AirflowUnavailable, AirflowRefused) as exc:
                log.warning("cannot reconcile retrain runs now: %s", exc)
                return
            lost = state is None and since < now - timedelta(minutes=10)
            if state == "failed" or lost:
                reason = "failed" if state == "failed" else "is unknown to Airflow"
                with self.pool.connection() as conn:
                    repo.fail_retrain_if_open(conn, row["id"], f"Airflow run {row['dag_run_id']} {reason}")
