"""Make sure a service's PostgreSQL database exists before the service migrates it.

    python scripts/ensure_service_db.py postgresql+psycopg2://airflow:airflow@127.0.0.1:5432/airflow

If the service's own credentials connect, there is nothing to do (Compose's PostgreSQL creates
its databases at init, and its superuser has a password). Otherwise the role and database are
created through the local trust-auth superuser (Database_connection.db.ensure_database).
Retries while PostgreSQL is still starting.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent


def ensure(url: str, timeout: float = 30.0) -> str:
    """'exists' or 'created'; raises after `timeout` seconds of failures."""
    plain = re.sub(r"^postgresql\+\w+://", "postgresql://", url)  # psycopg takes libpq URLs only
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(plain, connect_timeout=3):
                return "exists"
        except psycopg.OperationalError:
            pass
        # Imported here: an image whose database already exists needs no Database_connection.
        sys.path.insert(0, str(ROOT))
        from Database_connection.db import ensure_database

        try:
            ensure_database(url)
            return "created"
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: ensure_service_db.py DATABASE_URL\n")
        return 2
    sys.stderr.write(f"database {ensure(argv[0])}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
