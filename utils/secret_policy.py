"""Which secrets each service holds, and what makes a secret good enough for production.

Every process checks only the secrets of its own role (`SERVICE_ROLE`), so a service never
has to be handed another service's secret just to start. The `deploy` role is the one-off
check of the whole host `.env` (`python -m utils.secret_policy`), which also covers the
passwords only third-party containers read (PostgreSQL's superuser, Grafana's admin).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal
from urllib.parse import urlsplit

Role = Literal["all", "backend", "airflow", "trainer", "mlflow", "frontend", "deploy"]

MIN_SECRET_LENGTH = 16
MIN_DISTINCT_CHARACTERS = 8
# Whole words (split on anything that is not a letter or digit) that mark a hand-made value.
# A random token never forms one of these as a separate word: "x9devq" is not "dev".
WEAK_WORDS = frozenset(
    {"dev", "development", "test", "example", "changeme", "change", "placeholder", "password", "secret", "default"}
)

# Settings field names. `*_url` fields are database URLs: the password inside is checked.
ROLE_SECRETS: dict[str, tuple[str, ...]] = {
    # Serves the API: its database, the Airflow user that triggers runs, its own tokens, and
    # the read-only MLflow identity it loads the champion with.
    "backend": ("database_url", "admin_token", "operator_token", "airflow_password", "mlflow_tracking_password"),
    # Runs the DAG: reads labels and writes retrain states (rps database), its own metadata
    # database, the simple auth manager's passwords and JWT key, DVC's S3 keys, MLflow writes,
    # and ADMIN_TOKEN for the final `POST /admin/reload`.
    "airflow": (
        "database_url",
        "airflow_database_url",
        "airflow_password",
        "airflow_admin_password",
        "airflow_jwt_secret",
        "admin_token",
        "aws_access_key_id",
        "aws_secret_access_key",
        "mlflow_tracking_password",
    ),
    # One-off first model: DVC pull of Data/raw and MLflow writes.
    "trainer": ("aws_access_key_id", "aws_secret_access_key", "mlflow_tracking_password"),
    # The tracking server: its database, the artifact bucket, and the users it provisions.
    "mlflow": (
        "mlflow_database_url",
        "aws_access_key_id",
        "aws_secret_access_key",
        "mlflow_admin_password",
        "mlflow_reader_password",
        "mlflow_writer_password",
    ),
    # The public UI holds no secret: an operator types the login into the page.
    "frontend": (),
}
ROLE_SECRETS["all"] = tuple(dict.fromkeys(name for names in ROLE_SECRETS.values() for name in names))
ROLE_SECRETS["deploy"] = (*ROLE_SECRETS["all"], "postgres_password", "grafana_admin_password", "ops_proxy_password")

PLACEHOLDERS = frozenset({"", "change-me"})


class InsecureSecrets(RuntimeError):
    """Production settings with a missing or weak secret. Not a ValueError on purpose: pydantic
    would wrap it and print the settings' input values, secrets included."""


def weakness(value: str | None) -> str | None:
    """Why `value` is not a production secret, or None when it is fine."""
    if value is None or value.strip() in PLACEHOLDERS:
        return "is not set"
    if len(value) < MIN_SECRET_LENGTH:
        return f"is shorter than {MIN_SECRET_LENGTH} characters"
    if len(set(value)) < MIN_DISTINCT_CHARACTERS:
        return f"uses fewer than {MIN_DISTINCT_CHARACTERS} distinct characters"
    words = {w.lower() for w in re.split(r"[^A-Za-z0-9]+", value)}
    marked = sorted(words & WEAK_WORDS)
    if marked:
        return f"contains the word {marked[0]!r} (a development or example value)"
    return None


def url_password(url: str) -> str | None:
    """The password inside a database URL (None when it has none)."""
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def problems(values: Mapping[str, str | None], role: str) -> list[str]:
    """`NAME reason` for each of the role's secrets that is missing or weak; no value is echoed."""
    out = []
    for name in ROLE_SECRETS[role]:
        value = values.get(name)
        if name.endswith("_url"):
            reason = weakness(url_password(value or ""))
            label = f"the password in {name.upper()}"
        else:
            reason = weakness(value)
            label = name.upper()
        if reason:
            out.append(f"{label} {reason}")
    return out


def check(values: Mapping[str, str | None], role: str) -> None:
    """Raise `InsecureSecrets` naming every weak secret of `role`."""
    found = problems(values, role)
    if found:
        raise InsecureSecrets(
            f"refusing to start in production (service role {role!r}): "
            + "; ".join(found)
            + ". Generate each with `openssl rand -hex 32`."
        )


def main(argv: list[str] | None = None) -> int:
    """`python -m utils.secret_policy [ROLE]`: check the environment (and .env) for ROLE, default
    `deploy` (every secret of the host's .env). Exit status 1 with a sentence when one is weak."""
    import argparse
    import sys

    from utils.settings import Settings

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("role", nargs="?", default="deploy", choices=sorted(ROLE_SECRETS))
    args = parser.parse_args(argv)
    settings = Settings(environment="development")  # load without the start-up check, then check the role
    try:
        check(settings.model_dump(), args.role)
    except InsecureSecrets as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    print(f"every secret of role {args.role!r} looks random and long enough")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
