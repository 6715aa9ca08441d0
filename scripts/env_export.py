"""Print `export KEY=VALUE` lines for a service's shell entrypoint, computed from Settings.

    eval "$(python scripts/env_export.py airflow)"    # or: mlflow, s3
    python scripts/env_export.py airflow --get AIRFLOW__API__PORT
    python scripts/env_export.py airflow --passwords-json   # the simple auth manager's file

Shell entrypoints get the values Python code gets (environment first, then `.env`). A tool's
own variable that is already set and non-empty in the environment wins over the computed one,
so Compose (or a test) can pin e.g. `AIRFLOW__CORE__EXECUTION_API_SERVER_URL` directly.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from utils.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPONENTS = ("airflow", "mlflow", "s3")
# The role the backend user gets in Airflow's simple auth manager: "user" may trigger and read
# DAG runs (DAG resources need USER for writes), nothing more (no connections, variables, pools).
AIRFLOW_BACKEND_ROLE = "user"
MIN_JWT_SECRET_BYTES = 32
# Computed from the environment already (PYTHONPATH gains the project root in front).
_DERIVED_FROM_ENVIRON = frozenset({"PYTHONPATH"})


class ConfigError(ValueError):
    """A setting the services cannot start with."""


def _airflow(s: Settings, environ: Mapping[str, str]) -> dict[str, str]:
    if len(s.airflow_jwt_secret.encode()) < MIN_JWT_SECRET_BYTES:
        raise ConfigError(
            f"AIRFLOW_JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes and the same for every Airflow "
            "process (unset, each process would sign tokens with its own random key)"
        )
    home = Path(environ.get("AIRFLOW_HOME") or ROOT / ".run" / "airflow")
    port = s.airflow_port
    base_path = urlsplit(s.airflow_ui_url).path.rstrip("/")
    pythonpath = [str(ROOT), *(p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(ROOT))]
    return {
        "AIRFLOW_HOME": str(home),
        "PYTHONPATH": os.pathsep.join(pythonpath),  # DAG tasks import `src`
        "AIRFLOW__CORE__EXECUTOR": s.airflow_executor,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "airflow" / "dags"),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__PARALLELISM": str(s.airflow_parallelism),  # default 32 forks 32 workers
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": s.airflow_database_url,
        "AIRFLOW__API__HOST": environ.get("AIRFLOW_API_HOST") or "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__BASE_URL": s.airflow_ui_url,  # only its path is served; the host is for links
        # A path in the UI URL (the deployed /airflow/ behind the proxy) moves every route under it.
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}{base_path}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": s.airflow_jwt_secret,
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"admin:admin,{s.airflow_username}:{AIRFLOW_BACKEND_ROLE}",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "simple_auth_manager_passwords.json"),
        # A new DAG file is listed within seconds (default: every 300 s).
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        **(_celery(s) if s.airflow_executor == "CeleryExecutor" else {}),
    }


def _celery(s: Settings) -> dict[str, str]:
    # Task states travel back through Airflow's own database (Celery's SQLAlchemy backend, the
    # same URL with `db+` in front): nothing but the broker is added to the stack.
    return {
        "AIRFLOW__CELERY__BROKER_URL": s.airflow_celery_broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{s.airflow_database_url}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(s.airflow_worker_concurrency),
    }


def _mlflow(s: Settings, environ: Mapping[str, str]) -> dict[str, str]:
    port = s.mlflow_port
    hosts = [f"{h}{p}" for h in ("localhost", "127.0.0.1", "mlflow") for p in ("", f":{port}")]
    hosts += [h.strip() for h in environ.get("MLFLOW_ALLOWED_HOSTS", "").split(",") if h.strip()]
    out = {
        "MLFLOW_BACKEND_STORE_URI": s.mlflow_database_url,
        "MLFLOW_ARTIFACTS_DESTINATION": s.mlflow_artifacts_destination,
        "MLFLOW_HOST": environ.get("MLFLOW_HOST") or "127.0.0.1",
        "MLFLOW_PORT": str(port),
        "MLFLOW_WORKERS": "1",
        "MLFLOW_SERVER_ALLOWED_HOSTS": ",".join(dict.fromkeys(hosts)),
        # The job consumers cost ~3 GB and nothing here submits jobs.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        # Basic-auth app: mlflow/provision_auth.py writes this file (it names the database URL).
        "MLFLOW_BASIC_AUTH_APP": "1" if s.mlflow_auth else "0",
        "MLFLOW_AUTH_CONFIG_PATH": environ.get("MLFLOW_AUTH_CONFIG_PATH")
        or str(Path(environ.get("TMPDIR") or "/tmp") / f"rps-mlflow-auth-{port}.ini"),
    }
    if s.mlflow_auth:
        # The UI's CSRF key, stable across restarts: derived from the admin password (one
        # secret fewer to hand out); MLflow refuses to start the auth app without one.
        digest = hashlib.sha256(f"rps-mlflow-csrf:{s.mlflow_admin_password}".encode()).hexdigest()
        out["MLFLOW_FLASK_SERVER_SECRET_KEY"] = digest
    if s.mlflow_artifacts_destination.startswith("s3://"):
        out |= _aws(s)
        if s.s3_endpoint_url:
            out["MLFLOW_S3_ENDPOINT_URL"] = s.s3_endpoint_url
    return out


def _aws(s: Settings) -> dict[str, str]:
    keys = {
        "AWS_ACCESS_KEY_ID": s.aws_access_key_id,
        "AWS_SECRET_ACCESS_KEY": s.aws_secret_access_key,
        "AWS_DEFAULT_REGION": s.aws_default_region,
    }
    return {k: v for k, v in keys.items() if v}


def _s3(s: Settings, environ: Mapping[str, str]) -> dict[str, str]:
    host = urlsplit(s.s3_endpoint_url).hostname or ""
    return {
        "S3_ENDPOINT_URL": s.s3_endpoint_url,
        "S3_PORT": str(s.s3_port),
        "S3_BUCKET": s.s3_bucket,
        # moto is started only for an endpoint on this machine; real S3 needs no server.
        "S3_LOCAL": "1" if host in ("127.0.0.1", "localhost", "::1") else "0",
        **_aws(s),
    }


def exports(
    component: str, settings: Settings | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The variables for `component`; a non-empty one already in `environ` is kept as it is."""
    environ = os.environ if environ is None else environ
    if settings is None:
        from utils.settings import Settings

        settings = Settings()
    computed = {"airflow": _airflow, "mlflow": _mlflow, "s3": _s3}[component](settings, environ)
    return {k: v if k in _DERIVED_FROM_ENVIRON else environ.get(k) or v for k, v in computed.items()}


def airflow_passwords(settings: Settings | None = None) -> dict[str, str]:
    """The simple auth manager's user → password file, from AIRFLOW_ADMIN_PASSWORD/AIRFLOW_PASSWORD."""
    if settings is None:
        from utils.settings import Settings

        settings = Settings()
    return {"admin": settings.airflow_admin_password, settings.airflow_username: settings.airflow_password}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("component", choices=COMPONENTS)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--get", metavar="KEY", help="print one value instead of export lines")
    mode.add_argument("--passwords-json", action="store_true", help="print the Airflow passwords file")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    try:
        if args.passwords_json:
            sys.stdout.write(json.dumps(airflow_passwords()) + "\n")
            return 0
        values = exports(args.component)
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    if args.get:
        if args.get not in values:
            sys.stderr.write(f"error: {args.get} is not one of the {args.component} variables\n")
            return 2
        sys.stdout.write(values[args.get] + "\n")
        return 0
    sys.stdout.write("".join(f"export {k}={shlex.quote(v)}\n" for k, v in values.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
