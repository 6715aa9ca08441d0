"""Delivers retrain requests to Airflow, off the request path.

`/predict` only records a request row (in its own transaction). This dispatcher thread
claims due rows with `FOR UPDATE SKIP LOCKED` — so several workers or replicas never
send the same one twice — and triggers the DAG with a deterministic `dag_run_id`;
Airflow's 409 for an existing run counts as delivered. If Airflow is down the row stays
pending and is retried with exponential backoff.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from psycopg_pool import ConnectionPool

from Database_connection import repository as repo
from utils.settings import Settings

log = logging.getLogger(__name__)


class AirflowUnavailable(RuntimeError):
    """Airflow could not be reached or refused the trigger; the request stays pending."""


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
        if r.status_code >= 300:
            raise AirflowUnavailable(f"Airflow refused the trigger: HTTP {r.status_code} {r.text[:300]}")
        return "created"

    def run_state(self, dag_run_id: str) -> str | None:
        r = self._call("GET", f"/api/v2/dags/{self.dag_id}/dagRuns/{dag_run_id}")
        if r.status_code == 404:
            return None
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
        """Deliver the oldest due request; True if one was delivered (try the next)."""
        with self.pool.connection() as conn, conn.transaction():
            if repo.retrain_run_active(conn):
                return False  # max_active_runs=1: wait, then deliver the newest request once
            row = repo.claim_due_retrain_request(conn)
            if row is None:
                return False
            run_id = dag_run_id_for(row)
            try:
                outcome = self.client.trigger(run_id, {"retrain_request_id": row["id"]})
            except AirflowUnavailable as exc:
                delay = min(
                    self.settings.retrain_retry_initial_s * 2 ** row["attempts"], self.settings.retrain_retry_max_s
                )
                repo.mark_retrain_retry(conn, row["id"], str(exc)[:1000], delay)
                log.warning("retrain request %s not delivered (retry in %.0fs): %s", row["id"], delay, exc)
                return False
            repo.mark_retrain_triggered(conn, row["id"], run_id, self.current_version())
            log.info("retrain request %s delivered as DAG run %s (%s)", row["id"], run_id, outcome)
            return True

    def reconcile(self) -> None:
        """Catch runs that ended without the DAG's own bookkeeping (e.g. a killed worker)."""
        with self.pool.connection() as conn:
            open_rows = [r for r in repo.list_retrain_requests(conn, 20) if r["state"] in ("triggered", "running")]
        for row in open_rows:
            try:
                state = self.client.run_state(row["dag_run_id"])
            except AirflowUnavailable:
                return
            lost = state is None and row["triggered_at"] < datetime.now(UTC) - timedelta(minutes=10)
            if state == "failed" or lost:
                reason = "failed" if state == "failed" else "is unknown to Airflow"
                with self.pool.connection() as conn:
                    repo.fail_retrain_if_open(conn, row["id"], f"Airflow run {row['dag_run_id']} {reason}")
