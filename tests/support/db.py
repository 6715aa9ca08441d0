"""Throwaway PostgreSQL databases cloned from a migrated template."""

from __future__ import annotations

import uuid

import psycopg
from psycopg import sql

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def db_url(name: str) -> str:
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


def create_db(name: str, template: str | None = None) -> str:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
        conn.execute(query)
    return db_url(name)


def drop_db(name: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"
