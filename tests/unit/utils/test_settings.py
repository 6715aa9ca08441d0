"""The one settings object: environment over .env, and no placeholder secrets in production."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from utils.settings import PLACEHOLDER, Settings

SECRETS = {
    "admin_token": "a" * 40,
    "airflow_password": "b" * 20,
    "airflow_admin_password": "c" * 20,
    "airflow_jwt_secret": "d" * 64,
}


def test_production_refuses_placeholder_secrets() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(environment="production", **{**SECRETS, "admin_token": PLACEHOLDER})
    assert "ADMIN_TOKEN" in str(info.value) and "placeholder" in str(info.value)
    with pytest.raises(ValidationError, match="AIRFLOW_PASSWORD"):
        Settings(environment="production", **{**SECRETS, "airflow_password": "dev-backend-password"})


def test_production_starts_with_real_secrets_and_development_with_defaults() -> None:
    assert Settings(environment="production", **SECRETS).environment == "production"
    assert Settings(environment="development").admin_token  # the committed .env's dev values are fine


def test_environment_overrides_dotenv(monkeypatch) -> None:
    monkeypatch.setenv("RETRAIN_THRESHOLD", "7")
    monkeypatch.setenv("RPS_DATASET_DIRS", "/a:/b,/c")
    s = Settings()
    assert s.retrain_threshold == 7
    assert [str(p) for p in s.dataset_dirs] == ["/a", "/b", "/c"]
    with pytest.raises(ValidationError):
        Settings(retrain_threshold=0)
