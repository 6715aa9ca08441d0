"""The one settings object: environment over .env, and production secrets checked per role."""

from __future__ import annotations

import secrets
import subprocess
import sys

import pytest
from pydantic import ValidationError

from utils import secret_policy
from utils.secret_policy import ROLE_SECRETS, InsecureSecrets, weakness
from utils.settings import PLACEHOLDER, PROJECT_ROOT, Settings


def strong() -> str:
    return secrets.token_hex(32)


def db_url(user: str, password: str) -> str:
    return f"postgresql://{user}:{password}@postgres:5432/{user}"


def good_values() -> dict[str, str]:
    """Every secret of every role, each random."""
    return {
        "admin_token": strong(),
        "operator_token": strong(),
        "airflow_password": strong(),
        "airflow_admin_password": strong(),
        "airflow_jwt_secret": strong(),
        "database_url": db_url("rps", strong()),
        "airflow_database_url": db_url("airflow", strong()).replace("postgresql:", "postgresql+psycopg2:"),
        "mlflow_database_url": db_url("mlflow", strong()),
        "aws_access_key_id": "AKIAIOSFODNN7EXAMPLQ",
        "aws_secret_access_key": strong(),
        "mlflow_tracking_password": strong(),
        "mlflow_admin_password": strong(),
        "mlflow_reader_password": strong(),
        "mlflow_writer_password": strong(),
        "postgres_password": strong(),
        "grafana_admin_password": strong(),
        "ops_proxy_password": strong(),
    }


def only_role(role: str) -> dict[str, str]:
    """The role's own secrets strong, every other secret left at its (weak) default."""
    values = good_values()
    return {k: v for k, v in values.items() if k in ROLE_SECRETS[role]}


@pytest.mark.parametrize("role", ["backend", "airflow", "trainer", "mlflow", "frontend"])
def test_each_role_starts_with_only_its_own_secrets(role) -> None:
    s = Settings(_env_file=None, environment="production", service_role=role, **only_role(role))
    assert s.service_role == role


def test_the_frontend_needs_no_secret_and_the_backend_no_airflow_admin_secret() -> None:
    assert ROLE_SECRETS["frontend"] == ()
    assert "airflow_jwt_secret" not in ROLE_SECRETS["backend"]
    assert "airflow_admin_password" not in ROLE_SECRETS["backend"]
    assert "aws_secret_access_key" not in ROLE_SECRETS["backend"]
    assert "admin_token" not in ROLE_SECRETS["trainer"]


@pytest.mark.parametrize(
    ("field", "bad", "reason"),
    [
        ("admin_token", PLACEHOLDER, "not set"),
        ("admin_token", "x", "shorter than 16"),
        ("operator_token", "a" * 40, "distinct characters"),
        ("airflow_password", "dev-backend-password", "'dev'"),
        ("database_url", "postgresql://rps:rps@postgres:5432/rps", "password in DATABASE_URL is shorter"),
        ("database_url", "postgresql://rps@postgres:5432/rps", "password in DATABASE_URL is not set"),
        ("mlflow_tracking_password", "", "not set"),
    ],
)
def test_backend_refuses_each_weak_secret_by_name(field, bad, reason) -> None:
    values = {**only_role("backend"), field: bad}
    with pytest.raises(InsecureSecrets) as info:
        Settings(_env_file=None, environment="production", service_role="backend", **values)
    message = str(info.value)
    assert reason in message
    if field != "database_url":
        assert field.upper() in message
    if len(bad) > 3:
        assert bad not in message  # never echoes the value


def test_airflow_role_covers_the_urls_and_aws_keys() -> None:
    values = {
        **only_role("airflow"),
        "airflow_database_url": "postgresql+psycopg2://airflow:airflow@postgres:5432/airflow",
        "aws_secret_access_key": "dev-secret-key-0123456789",
    }
    with pytest.raises(InsecureSecrets) as info:
        Settings(_env_file=None, environment="production", service_role="airflow", **values)
    assert "AIRFLOW_DATABASE_URL" in str(info.value) and "AWS_SECRET_ACCESS_KEY" in str(info.value)


def test_random_tokens_containing_dev_are_accepted() -> None:
    for token in ("9f3devb2c1a4e5d6f7a8b9c0d1e2f3a4", "Qx7-devIce_8kLm2Pz", "abcdev0123456789xyz"):
        assert weakness(token) is None, token
    # and 2,000 fresh tokens of the kinds docs/deploy.md suggests never fail
    for _ in range(1000):
        assert weakness(secrets.token_hex(32)) is None
        assert weakness(secrets.token_urlsafe(32)) is None


def test_development_is_not_checked_and_the_committed_env_fails_in_production() -> None:
    assert Settings(environment="development").admin_token  # the committed .env's dev values are fine
    with pytest.raises(InsecureSecrets, match="ADMIN_TOKEN"):
        Settings(environment="production", service_role="backend")


def test_deploy_check_covers_postgres_and_grafana_passwords() -> None:
    values = good_values()
    secret_policy.check(values, "deploy")
    for name in ("postgres_password", "grafana_admin_password", "ops_proxy_password"):
        with pytest.raises(InsecureSecrets, match=name.upper()):
            secret_policy.check({**values, name: "dev-password-1234567"}, "deploy")


def test_deploy_check_cli_exits_non_zero_with_a_sentence() -> None:
    """What docker-compose.deploy.yml's `secrets-check` runs: the committed .env must fail."""
    proc = subprocess.run(
        [sys.executable, "-m", "utils.secret_policy", "deploy"], cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert "POSTGRES_PASSWORD" in proc.stderr and "GRAFANA_ADMIN_PASSWORD" in proc.stderr
    assert "dev-postgres-password" not in proc.stderr


def test_environment_overrides_dotenv(monkeypatch) -> None:
    monkeypatch.setenv("RETRAIN_THRESHOLD", "7")
    monkeypatch.setenv("RPS_DATASET_DIRS", "/a:/b,/c")
    s = Settings()
    assert s.retrain_threshold == 7
    assert [str(p) for p in s.dataset_dirs] == ["/a", "/b", "/c"]
    with pytest.raises(ValidationError):
        Settings(retrain_threshold=0)


def test_hand_model_complexity_comes_from_the_environment(monkeypatch) -> None:
    from pydantic import ValidationError

    from utils.settings import Settings

    monkeypatch.setenv("HAND_MODEL_COMPLEXITY", "0")
    assert Settings().hand_model_complexity == 0
    monkeypatch.setenv("HAND_MODEL_COMPLEXITY", "2")
    with pytest.raises(ValidationError):
        Settings()
