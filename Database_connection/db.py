"""Connection pool, wait-for-database and the numbered-SQL migration runner."""

from __future__ import annotations

import logging
import math
import re
import time
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

log = logging.getLogger(__name__)
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_MIGRATION_LOCK = 72_410_001  # advisory lock key: one migrator at a time across workers
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def libpq_url(url: str) -> str:
    """Accept SQLAlchemy-style URLs (`postgresql+psycopg2://`) as well as libpq ones."""
    return re.sub(r"^postgresql\+\w+://", "postgresql://", url)


# A request waits for a connection in slices this long: each new slice lets the pool start a
# connection attempt if the one before gave up while the server was still down.
_WAIT_SLICE_S = 0.5


class RestartTolerantPool(ConnectionPool):
    """A pool that hands out only connections that answer, and recovers from a PostgreSQL
    restart or outage within its timeout.

    - After a restart every idle connection is stale. psycopg_pool's own check loop discards
      them one at a time with a back-off sleep between (1 s, then 2 s): with three idle
      connections and a 1.5 s timeout the request fails although the server is back. Here the
      first stale connection drains the pool (every connection opened before it is replaced,
      none checked in turn) and the request waits only for a fresh one.
    - psycopg_pool retries a failed connection attempt after 1, 2, 4, 8 ... s, and while one
      waits out its delay no request starts another: after a 10 s outage it would not try
      again for up to 8 s. `make_pool` gives up an attempt after the pool's timeout
      (`reconnect_timeout`), and a request waits in slices, so each slice can start a new one.
    """

    def getconn(self, timeout: float | None = None) -> psycopg.Connection:
        budget = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        while True:
            remaining = deadline - time.monotonic()
            try:
                # a non-positive timeout makes the pool raise PoolTimeout at once
                conn = super().getconn(timeout=min(remaining, _WAIT_SLICE_S))
            except PoolTimeout:
                if remaining > _WAIT_SLICE_S:
                    continue
                raise PoolTimeout(f"couldn't get a connection after {budget:.2f} sec") from None
            try:
                self.check_connection(conn)
            except psycopg.Error as exc:
                log.warning("replacing the pool's connections: one opened before was broken (%s)", exc)
                self.putconn(conn)
                self.drain()
                continue
            return conn


def make_pool(url: str, min_size: int = 1, max_size: int = 10, timeout: float = 30.0) -> ConnectionPool:
    """An open pool of autocommit connections returning dict rows; multi-statement work
    opens `conn.transaction()` explicitly.

    `timeout` bounds the wait for a connection, a new connection's handshake and how long the
    pool keeps retrying one connection attempt, so an outage fails fast and the pool is
    serving again within about a second of PostgreSQL's return (`RestartTolerantPool`)."""
    pool = RestartTolerantPool(
        libpq_url(url),
        min_size=min_size,
        max_size=max_size,
        kwargs={"row_factory": dict_row, "autocommit": True, "connect_timeout": max(1, math.ceil(timeout))},
        timeout=timeout,
        reconnect_timeout=timeout,
        open=False,
        name="rps",
    )
    pool.open(wait=True, timeout=30)
    return pool


def wait_for_db(url: str, timeout: float = 30.0) -> None:
    """Retry until PostgreSQL answers, so a service never dies because it started first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(libpq_url(url), connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL at {_redact(url)} is unreachable: {exc}") from exc
            time.sleep(0.5)


def _redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def migration_files() -> list[tuple[int, Path]]:
    found = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise RuntimeError(f"migration file {path.name} is not named NNNN_name.sql")
        found.append((int(match.group(1)), path))
    return found


def migrate(url: str) -> list[str]:
    """Apply every migration not yet recorded, each in its own transaction; return their names."""
    applied: list[str] = []
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            for version, path in migration_files():
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(path.read_text())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (version, path.name),
                    )
                log.info("applied migration %s", path.name)
                applied.append(path.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied


def ensure_database(url: str) -> bool:
    """Create the role and database named in `url` if missing (needs a superuser on the
    maintenance database, as the local trust-auth server gives). Returns True if created."""
    params = conninfo_to_dict(libpq_url(url))
    dbname, user, password = params.get("dbname"), params.get("user"), params.get("password")
    admin = make_conninfo(libpq_url(url), dbname="postgres", user="postgres", password="")
    created = False
    with psycopg.connect(admin, autocommit=True) as conn:
        if user and not conn.execute("SELECT 1 FROM pg_roles WHERE rolname=%s", (user,)).fetchone():
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(user), sql.Literal(password or user))
            )
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname=%s", (dbname,)).fetchone():
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(dbname), sql.Identifier(user or "postgres")
                )
            )
            created = True
    return created


def drop_database(url: str) -> None:
    """Drop a (throwaway) database, disconnecting its sessions first."""
    params = conninfo_to_dict(libpq_url(url))
    admin = make_conninfo(libpq_url(url), dbname="postgres", user="postgres", password="")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(params["dbname"])))
