"""scripts/env_export.py: the variables the service entrypoints run with."""

from __future__ import annotations

import importlib.util
import json
import shlex
import subprocess
import sys

import pytest

from tests.support.procs import PROJECT_ROOT
from utils.settings import Settings

SCRIPT = PROJECT_ROOT / "scripts" / "env_export.py"
_spec = importlib.util.spec_from_file_location("env_export", SCRIPT)
env_export = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(env_export)

SECRET = "s" * 64


def settings(**overrides) -> Settings:
    return Settings(_env_file=None, airflow_jwt_secret=SECRET, **overrides)


def test_airflow_variables_follow_the_settings() -> None:
    s = settings(
        airflow_port=8111,
        airflow_username="svc",
        airflow_parallelism=2,
        airflow_database_url="postgresql+psycopg2://a:b@127.0.0.1:5432/af",
    )
    env = env_export.exports("airflow", s, environ={})
    assert env["AIRFLOW__API__PORT"] == "8111"
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8111/execution/"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin,svc:user"
    assert env["AIRFLOW__CORE__PARALLELISM"] == "2"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == "postgresql+psycopg2://a:b@127.0.0.1:5432/af"
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == SECRET
    assert env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "False"
    assert env["AIRFLOW_HOME"] == str(PROJECT_ROOT / ".run" / "airflow")
    assert env["PYTHONPATH"] == str(PROJECT_ROOT)
    # Served under a path (the deployed /airflow/ behind the proxy): so is the execution API.
    under = env_export.exports("airflow", settings(airflow_port=8111, airflow_ui_url="https://h/airflow/"), environ={})
    assert under["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8111/airflow/execution/"


def test_the_executor_setting_selects_local_or_celery() -> None:
    local = env_export.exports("airflow", settings(), environ={})
    assert local["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert not any(k.startswith("AIRFLOW__CELERY__") for k in local), "one machine needs no broker"

    celery = env_export.exports(
        "airflow",
        settings(
            airflow_executor="CeleryExecutor",
            airflow_celery_broker_url="redis://redis:6379/0",
            airflow_worker_concurrency=3,
            airflow_database_url="postgresql+psycopg2://a:b@postgres:5432/af",
        ),
        environ={},
    )
    assert celery["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert celery["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0"
    # Results in Airflow's own database, through Celery's SQLAlchemy backend.
    assert celery["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+postgresql+psycopg2://a:b@postgres:5432/af"
    assert celery["AIRFLOW__CELERY__WORKER_CONCURRENCY"] == "3"


def test_an_unknown_executor_is_refused() -> None:
    with pytest.raises(ValueError, match="airflow_executor"):
        settings(airflow_executor="SequentialExecutor")


def test_a_tool_variable_set_in_the_environment_wins_and_an_empty_one_does_not() -> None:
    environ = {
        "AIRFLOW_HOME": "/opt/airflow",
        "AIRFLOW_API_HOST": "0.0.0.0",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "http://airflow-api-server:8080/execution/",
        "AIRFLOW__CORE__PARALLELISM": "",
        "PYTHONPATH": "/elsewhere",
    }
    env = env_export.exports("airflow", settings(), environ=environ)
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-api-server:8080/execution/"
    assert env["AIRFLOW__API__HOST"] == "0.0.0.0"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == "/opt/airflow/simple_auth_manager_passwords.json"
    assert env["AIRFLOW__CORE__PARALLELISM"] == "4"
    assert env["PYTHONPATH"] == f"{PROJECT_ROOT}:/elsewhere"


def test_a_short_jwt_secret_is_refused() -> None:
    with pytest.raises(env_export.ConfigError, match="AIRFLOW_JWT_SECRET"):
        env_export.exports("airflow", Settings(_env_file=None, airflow_jwt_secret="change-me"), environ={})


def test_mlflow_allowed_hosts_and_s3_artifacts() -> None:
    local = env_export.exports("mlflow", settings(mlflow_port=5111), environ={"MLFLOW_ALLOWED_HOSTS": "rps.example"})
    hosts = local["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert {"localhost:5111", "127.0.0.1:5111", "mlflow:5111", "mlflow", "rps.example"} <= set(hosts)
    assert local["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false" and local["MLFLOW_WORKERS"] == "1"
    assert "MLFLOW_S3_ENDPOINT_URL" not in local

    s3 = env_export.exports(
        "mlflow",
        settings(
            mlflow_artifacts_destination="s3://b/mlflow",
            s3_endpoint_url="http://127.0.0.1:9000",
            aws_access_key_id="k",
            aws_secret_access_key="s",
        ),
        environ={},
    )
    assert s3["MLFLOW_S3_ENDPOINT_URL"] == "http://127.0.0.1:9000"
    assert (s3["AWS_ACCESS_KEY_ID"], s3["AWS_SECRET_ACCESS_KEY"]) == ("k", "s")


@pytest.mark.parametrize(
    ("endpoint", "local"),
    [
        ("http://127.0.0.1:9000", "1"),
        ("http://localhost:9", "1"),
        ("https://s3.eu-west-1.amazonaws.com", "0"),
        ("", "0"),
    ],
)
def test_s3_is_served_locally_only_for_a_local_endpoint(endpoint: str, local: str) -> None:
    assert env_export.exports("s3", settings(s3_endpoint_url=endpoint), environ={})["S3_LOCAL"] == local


def test_the_cli_prints_shell_quoted_exports_and_the_passwords_file() -> None:
    env = {"PATH": "/usr/bin:/bin", "AIRFLOW_JWT_SECRET": SECRET, "AIRFLOW_PASSWORD": "it's $secret"}
    out = subprocess.run([sys.executable, str(SCRIPT), "airflow"], env=env, capture_output=True, text=True, check=True)
    exported = dict(line.removeprefix("export ").split("=", 1) for line in out.stdout.splitlines())
    assert shlex.split(exported["AIRFLOW__API_AUTH__JWT_SECRET"]) == [SECRET]
    one = subprocess.run(
        [sys.executable, str(SCRIPT), "airflow", "--get", "AIRFLOW__API__PORT"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert one.stdout.strip().isdigit()
    pw = subprocess.run(
        [sys.executable, str(SCRIPT), "airflow", "--passwords-json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(pw.stdout)["backend"] == "it's $secret"
    bad = subprocess.run(
        [sys.executable, str(SCRIPT), "airflow"],
        env={**env, "AIRFLOW_JWT_SECRET": "short"},
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "AIRFLOW_JWT_SECRET" in bad.stderr
