"""Turn on MLflow's basic-auth app (MLFLOW_AUTH=true): write its config and provision users.

    python mlflow/provision_auth.py CONFIG_PATH     # then: mlflow server --app-name basic-auth

Three identities, passwords from the settings (docs/deploy.md, "Security model"):
- `admin` (MLFLOW_ADMIN_PASSWORD): operators, in the UI behind the HTTPS proxy;
- `rps-writer` (MLFLOW_WRITER_PASSWORD): the DAG and the trainer; MANAGE on the project's
  experiment and registered model, so only they can log runs, register versions and move
  `@champion` (MLflow also gives MANAGE to whoever creates them, i.e. this user);
- `rps-reader` (MLFLOW_READER_PASSWORD): the backend; READ, MLflow's default permission.
Users and grants live in the MLflow database (their own tables and migration version table)
and are brought in line with the settings on every start, so rotating a password is a restart.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # the project, after mlflow's own

import psycopg

from Database_connection.db import libpq_url
from utils.settings import Settings

ADMIN, READER, WRITER = "admin", "rps-reader", "rps-writer"
CONFIG = """[mlflow]
default_permission = READ
database_uri = {db}
admin_username = {admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
"""


def write_config(path: Path, db_uri: str) -> None:
    """The auth app's ini; it names the database URL, so only this user may read it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(CONFIG.format(db=db_uri.replace("%", "%%"), admin=ADMIN))


def ensure_user(store: Any, username: str, password: str, is_admin: bool = False) -> None:
    if store.has_user(username):
        store.update_user(username, password=password, is_admin=is_admin)
    else:
        store.create_user(username, password, is_admin=is_admin)


def project_resources(db_uri: str, experiment: str, model: str) -> tuple[str | None, str | None]:
    """The experiment id and registered model name, when they exist yet (none on a fresh server)."""
    try:
        with psycopg.connect(libpq_url(db_uri)) as conn:
            exp = conn.execute(
                "SELECT experiment_id FROM experiments WHERE name = %s AND lifecycle_stage = 'active'", (experiment,)
            ).fetchone()
            reg = conn.execute("SELECT name FROM registered_models WHERE name = %s", (model,)).fetchone()
    except psycopg.errors.UndefinedTable:
        return None, None
    return (str(exp[0]) if exp else None), (reg[0] if reg else None)


def grant_writer(store: Any, experiment_id: str | None, model: str | None) -> None:
    if experiment_id is not None:
        try:
            store.update_experiment_permission(experiment_id, WRITER, "MANAGE")
        except Exception:  # noqa: BLE001 - no grant yet
            store.create_experiment_permission(experiment_id, WRITER, "MANAGE")
    if model is not None:
        try:
            store.update_registered_model_permission(model, WRITER, "MANAGE")
        except Exception:  # noqa: BLE001 - no grant yet
            store.create_registered_model_permission(model, WRITER, "MANAGE")


def main(config_path: str) -> None:
    s = Settings()
    db_uri = libpq_url(s.mlflow_database_url)
    write_config(Path(config_path), db_uri)
    # Imported only now: importing MLflow's auth package reads the file just written.
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(db_uri)
    ensure_user(store, ADMIN, s.mlflow_admin_password, is_admin=True)
    ensure_user(store, READER, s.mlflow_reader_password)
    ensure_user(store, WRITER, s.mlflow_writer_password)
    grant_writer(store, *project_resources(db_uri, s.mlflow_experiment, s.registered_model_name))


if __name__ == "__main__":
    main(sys.argv[1])
