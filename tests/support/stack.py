"""Real moto (S3), MLflow and Airflow for a test, on free ports, isolated from the dev stack.

Each service runs through the project's own entrypoint (scripts/s3_server.sh,
mlflow/entrypoint.sh, airflow/entrypoint.sh) with settings overridden by environment
variables, so a test exercises the same scripts `make up` runs. Each gets its own throwaway
PostgreSQL database and a folder under `run_dir`; `stop()` ends every process and drops them.

    stack = start_stack(tmp_path, dags_folder=my_dags, env={"DATABASE_URL": db_url})
    try:
        run_backend(env=stack.env)       # the backend talks to these services
    finally:
        stack.stop()
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support import db as dbs
from tests.support.procs import PROJECT_ROOT, Proc, free_port, start, wait_http, wait_until

AIRFLOW_ADMIN = "admin"
AIRFLOW_BACKEND_USER = "backend"
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test-access-key",
    "AWS_SECRET_ACCESS_KEY": "test-secret-key",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class Service:
    """One started service: its URL, the settings variables that point a client at it, its
    processes, and what to undo when it stops."""

    name: str
    url: str
    env: dict[str, str]
    procs: list[Proc] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def logs(self, tail: int = 3000) -> str:
        return "\n".join(f"--- {p.name} ({p.log_path})\n{p.log(tail)}" for p in self.procs)

    def stop(self) -> None:
        _stop_all(self.procs)
        for cleanup in reversed(self.cleanups):
            cleanup()
        self.cleanups.clear()


@dataclass
class Stack:
    """The services of one test. `env` holds the settings variables for other processes (the
    backend, a CLI) so that they use these services; `timings` the cold-start seconds."""

    s3: Service | None = None
    mlflow: Service | None = None
    airflow: Service | None = None
    env: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def services(self) -> list[Service]:
        return [s for s in (self.s3, self.mlflow, self.airflow) if s is not None]

    def stop(self) -> None:
        """Stop every process at once (Airflow takes 5-7 s per process to stop), then clean up."""
        _stop_all([p for s in self.services for p in s.procs])
        for service in reversed(self.services):
            service.stop()

    def logs(self, tail: int = 3000) -> str:
        return "\n".join(s.logs(tail) for s in self.services)


def _stop_all(procs: list[Proc], timeout: float = 20) -> None:
    live = [p for p in procs if p.alive()]
    for p in live:
        try:
            os.killpg(p.popen.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    for p in live:
        try:
            p.popen.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for p in live:
        try:  # also reaches children left behind by a leader that already exited
            os.killpg(p.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if p.popen.poll() is None:
            p.popen.wait(5)


def _env_export():
    spec = importlib.util.spec_from_file_location("env_export", PROJECT_ROOT / "scripts" / "env_export.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _scrub(component: str) -> dict[str, str]:
    """Blank the tool variables (`AIRFLOW__*`, `MLFLOW_*`) this test run inherited, which would
    otherwise win over the computed ones (env_export treats an empty value as unset)."""
    from utils.settings import Settings

    names = _env_export().exports(component, Settings(airflow_jwt_secret="x" * 64), environ={})
    return {k: "" for k in names if k in os.environ and k != "PYTHONPATH"}


def _timed(timings: dict[str, float], key: str, since: float) -> None:
    timings[key] = round(time.monotonic() - since, 2)


def start_s3(run_dir: Path, *, bucket: str = "rps-test", port: int | None = None, timeout: float = 60) -> Service:
    """moto on a free port with `bucket` created, through scripts/s3_server.sh."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"S3_ENDPOINT_URL": url, "S3_BUCKET": bucket, **S3_CREDENTIALS}
    t0 = time.monotonic()
    proc = start(f"s3-{port}", ["bash", "scripts/s3_server.sh"], {**env, "S3_PORT": str(port)}, run_dir / "logs")
    service = Service("s3", url, env, [proc])
    try:
        wait_http(f"{url}/{bucket}", timeout, proc)
    except BaseException:
        service.stop()
        raise
    _timed(service.timings, "s3_ready_s", t0)
    return service


def start_mlflow(
    run_dir: Path,
    *,
    artifacts_destination: str | None = None,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    timeout: float = 120,
    database: str | None = None,
) -> Service:
    """The MLflow server through mlflow/entrypoint.sh: its own database, artifacts in
    `run_dir/mlflow-artifacts` unless `artifacts_destination` (e.g. s3://bucket/mlflow, with the
    S3 service's variables in `env`). With `database` (an existing database's name, kept when
    the service stops) a second server can take over an earlier one's registry: "MLflow
    stopped, then started again"."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    db_name = database or dbs.unique_name("mlflow_t")
    service = Service("mlflow", url, {"MLFLOW_TRACKING_URI": url, "MLFLOW_UI_URL": url})
    t0 = time.monotonic()
    try:
        if database is None:
            db_url = dbs.create_db(db_name)
            service.cleanups.append(lambda: dbs.drop_db(db_name))
        else:
            db_url = dbs.db_url(db_name)
        server_env = {
            **_scrub("mlflow"),
            **(env or {}),
            "MLFLOW_PORT": str(port),
            "MLFLOW_DATABASE_URL": db_url,
            "MLFLOW_ARTIFACTS_DESTINATION": artifacts_destination or str(run_dir / "mlflow-artifacts"),
        }
        proc = start(f"mlflow-{port}", ["bash", "mlflow/entrypoint.sh"], server_env, run_dir / "logs")
        service.procs.append(proc)
        wait_http(f"{url}/health", timeout, proc)
    except BaseException:
        service.stop()
        raise
    _timed(service.timings, "mlflow_health_s", t0)
    return service


def start_airflow(
    run_dir: Path,
    *,
    dags_folder: Path | None = None,
    env: Mapping[str, str] | None = None,
    template_db: str | None = None,
    port: int | None = None,
    timeout: float = 180,
) -> Service:
    """Airflow's api-server, scheduler and dag-processor through airflow/entrypoint.sh, with its
    own metadata database and AIRFLOW_HOME under `run_dir`. `dags_folder` defaults to the
    repository's airflow/dags. `env` reaches all three processes and so the DAG's tasks (point
    them at the test's database, MLflow, S3, backend). With `template_db` (a database already
    migrated by `init`, see `airflow_template_db`) the database is cloned and `init` skipped.

    Returns once the api-server answers and reports the scheduler and dag-processor healthy.
    `extra` holds the admin and backend credentials; `env` the client-side settings variables.
    """
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    home = run_dir / "airflow-home"
    db_name = dbs.unique_name("airflow_t")
    backend_password = secrets.token_urlsafe(16)
    admin_password = secrets.token_urlsafe(16)
    client_env = {
        "AIRFLOW_URL": url,
        "AIRFLOW_UI_URL": url,
        "AIRFLOW_USERNAME": AIRFLOW_BACKEND_USER,
        "AIRFLOW_PASSWORD": backend_password,
    }
    service = Service(
        "airflow",
        url,
        client_env,
        extra={
            "admin": (AIRFLOW_ADMIN, admin_password),
            "backend": (AIRFLOW_BACKEND_USER, backend_password),
            "home": home,
        },
    )
    t0 = time.monotonic()
    try:
        db_url = dbs.create_db(db_name, template=template_db)
        service.cleanups.append(lambda: dbs.drop_db(db_name))
        server_env = {
            **_scrub("airflow"),
            **(env or {}),
            **client_env,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW_PORT": str(port),
            "AIRFLOW_DATABASE_URL": db_url.replace("postgresql://", "postgresql+psycopg2://", 1),
            "AIRFLOW_ADMIN_PASSWORD": admin_password,
            "AIRFLOW_JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder or PROJECT_ROOT / "airflow" / "dags"),
        }
        logs = run_dir / "logs"
        entrypoint = ["bash", "airflow/entrypoint.sh"]
        if template_db is None:
            init = start(f"airflow-init-{port}", [*entrypoint, "init"], server_env, logs)
            service.procs.append(init)
            if init.popen.wait(timeout) != 0:
                raise RuntimeError(f"airflow init failed:\n{init.log()}")
            _timed(service.timings, "airflow_init_s", t0)
        api = start(f"airflow-api-server-{port}", [*entrypoint, "api-server"], server_env, logs)
        scheduler = start(f"airflow-scheduler-{port}", [*entrypoint, "scheduler"], server_env, logs)
        processor = start(f"airflow-dag-processor-{port}", [*entrypoint, "dag-processor"], server_env, logs)
        service.procs += [api, scheduler, processor]
        health = f"{url}/api/v2/monitor/health"
        wait_http(health, timeout, api)
        _timed(service.timings, "airflow_api_health_s", t0)

        def components_healthy() -> bool:
            for proc in (scheduler, processor):
                if not proc.alive():
                    raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.log()}")
            body = httpx.get(health, timeout=5).json()
            return all((body.get(c) or {}).get("status") == "healthy" for c in ("scheduler", "dag_processor"))

        wait_until(components_healthy, timeout, "the Airflow scheduler and dag-processor heartbeats", api)
        _timed(service.timings, "airflow_ready_s", t0)
    except BaseException:
        service.stop()
        raise
    return service


def start_stack(
    run_dir: Path,
    *,
    s3: bool = True,
    mlflow: bool = True,
    airflow: bool = True,
    dags_folder: Path | None = None,
    env: Mapping[str, str] | None = None,
    bucket: str = "rps-test",
    mlflow_artifacts_in_s3: bool = False,
    airflow_template_db: str | None = None,
) -> Stack:
    """moto first, then MLflow and Airflow side by side. Airflow's processes (and so the DAG's
    tasks) get `env` plus the S3 and MLflow variables; `Stack.env` adds Airflow's for clients."""
    run_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack()
    t0 = time.monotonic()
    try:
        if s3:
            stack.s3 = start_s3(run_dir / "s3", bucket=bucket)
            stack.env |= stack.s3.env
        mlflow_port = free_port()
        if mlflow:  # known before MLflow answers, so Airflow's tasks can be told about it
            stack.env |= {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}"}
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {}
            if mlflow:
                futures["mlflow"] = pool.submit(
                    start_mlflow,
                    run_dir / "mlflow",
                    artifacts_destination=f"s3://{bucket}/mlflow" if mlflow_artifacts_in_s3 else None,
                    env={**(env or {}), **stack.env},
                    port=mlflow_port,
                )
            if airflow:
                futures["airflow"] = pool.submit(
                    start_airflow,
                    run_dir / "airflow",
                    dags_folder=dags_folder,
                    env={**(env or {}), **stack.env},
                    template_db=airflow_template_db,
                )
            # Wait for both before raising, so the one that started is kept and then stopped.
            errors = [exc for exc in (f.exception() for f in futures.values()) if exc is not None]
            for name, future in futures.items():
                if future.exception() is None:
                    setattr(stack, name, future.result())
            if errors:
                raise errors[0]
    except BaseException:
        stack.stop()
        raise
    for service in stack.services:
        stack.env |= service.env
        stack.timings |= service.timings
    _timed(stack.timings, "stack_ready_s", t0)
    return stack


# --- Airflow REST helpers (JWT from /auth/token, then Bearer on /api/v2) ---


def airflow_token(url: str, username: str, password: str) -> str:
    r = httpx.post(f"{url}/auth/token", json={"username": username, "password": password}, timeout=10)
    r.raise_for_status()
    return r.json()["access_token"]


def airflow_client(url: str, username: str, password: str) -> httpx.Client:
    """An httpx client on `url` carrying a fresh bearer token (valid 24 h)."""
    token = airflow_token(url, username, password)
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def wait_dag(client: httpx.Client, dag_id: str, timeout: float = 60) -> dict:
    """Until the dag-processor has parsed `dag_id` and the API lists it."""
    found: dict = {}

    def listed() -> bool:
        r = client.get(f"/api/v2/dags/{dag_id}")
        if r.status_code == 200:
            found.update(r.json())
            return True
        return False

    wait_until(listed, timeout, f"DAG {dag_id} to be listed")
    return found


def trigger_dag_run(client: httpx.Client, dag_id: str, run_id: str, conf: dict | None = None) -> httpx.Response:
    """POST a run with a chosen id; 200 when queued, 409 when that run id exists already."""
    return client.post(
        f"/api/v2/dags/{dag_id}/dagRuns",
        json={"logical_date": None, "conf": conf or {}, "dag_run_id": run_id},
    )


def wait_dag_run(client: httpx.Client, dag_id: str, run_id: str, timeout: float = 120) -> dict:
    """Poll until the run finishes (success or failed); returns the run as the API shows it."""
    run: dict = {}

    def finished() -> bool:
        r = client.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        r.raise_for_status()
        run.clear()
        run.update(r.json())
        return run["state"] in ("success", "failed")

    wait_until(finished, timeout, f"DAG run {dag_id}/{run_id} to finish")
    return run
