"""`python -m Database_connection migrate|create`: the one command that prepares the schema."""

from __future__ import annotations

import argparse
import logging
import sys

from Database_connection.db import ensure_database, migrate, wait_for_db
from utils.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m Database_connection")
    parser.add_argument("command", choices=["migrate", "create"], help="create also makes the role/database")
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    url = get_settings().database_url
    try:
        if args.command == "create":
            ensure_database(url)
        wait_for_db(url)
        applied = migrate(url)
    except Exception as exc:  # noqa: BLE001 - a CLI turns any failure into one sentence
        print(f"error: could not migrate the database: {exc}", file=sys.stderr)
        return 1
    print(f"migrations applied: {', '.join(applied) or 'none (up to date)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
