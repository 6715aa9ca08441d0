"""Typed dependencies: routes declare what they need, tests override it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from psycopg import Connection
from psycopg_pool import ConnectionPool

from inference.model_holder import ModelHolder
from utils.settings import Settings


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_pool(request: Request) -> ConnectionPool:
    return request.app.state.pool


def get_holder(request: Request) -> ModelHolder:
    return request.app.state.holder


def get_conn(pool: Annotated[ConnectionPool, Depends(get_pool)]) -> Iterator[Connection]:
    """A pooled autocommit connection; handlers open `conn.transaction()` for multi-statement work."""
    with pool.connection() as conn:
        yield conn


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
PoolDep = Annotated[ConnectionPool, Depends(get_pool)]
HolderDep = Annotated[ModelHolder, Depends(get_holder)]
ConnDep = Annotated[Connection, Depends(get_conn)]
