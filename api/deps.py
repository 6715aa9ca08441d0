"""Typed dependencies: routes declare what they need, tests override it.

Cross-cutting concerns live here rather than in handlers: the database connection (with
a bounded wait), admin authentication, the model sync behind `/admin/reload`, and the
retrain notifier that wakes the dispatcher. The ones that only read `app.state` are `async`:
FastAPI runs a plain `def` dependency in its thread pool, one hand-off per dependency and
request, which `/predict` (four of them) paid on every call.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from psycopg import Connection
from psycopg_pool import ConnectionPool

from api.errors import APIError
from api.model_sync import ModelSync
from inference.model_holder import ModelHolder
from utils.settings import Settings

RetrainNotifier = Callable[[int], None]


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


async def get_pool(request: Request) -> ConnectionPool:
    return request.app.state.pool


async def get_holder(request: Request) -> ModelHolder:
    return request.app.state.holder


def get_conn(pool: Annotated[ConnectionPool, Depends(get_pool)]) -> Iterator[Connection]:
    """A pooled, checked autocommit connection; handlers open `conn.transaction()` for
    multi-statement work. Waits at most the pool's timeout (`DB_TIMEOUT_S`); an outage
    becomes a 503 through the error handlers."""
    with pool.connection() as conn:
        yield conn


async def require_admin(
    settings: Annotated[Settings, Depends(get_settings_dep)],
    authorization: Annotated[str | None, Header(description="Bearer <ADMIN_TOKEN>")] = None,
) -> None:
    """Operator endpoints: the admin token as a bearer token, compared in constant time."""
    if not authorization:
        raise APIError(401, "unauthorized", "Send the admin token as 'Authorization: Bearer <ADMIN_TOKEN>'.")
    expected = f"Bearer {settings.admin_token}"
    if not hmac.compare_digest(authorization.encode(), expected.encode()):
        raise APIError(403, "forbidden", "The admin token is wrong.")


async def get_model_sync(request: Request) -> ModelSync:
    """The registry sync; 409 when this backend serves a local model directory instead."""
    sync = getattr(request.app.state, "model_sync", None)
    if sync is None:
        raise APIError(409, "registry_not_configured", "MODEL_SOURCE is not mlflow or MLFLOW_TRACKING_URI is unset.")
    return sync


def _no_dispatcher(request_id: int) -> None:
    """No Airflow configured: the request row waits in the database for a dispatcher."""


async def get_retrain_notifier(request: Request) -> RetrainNotifier:
    """Wakes the retrain dispatcher for a new request (a no-op when none runs here)."""
    return getattr(request.app.state, "on_retrain_requested", None) or _no_dispatcher


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
PoolDep = Annotated[ConnectionPool, Depends(get_pool)]
HolderDep = Annotated[ModelHolder, Depends(get_holder)]
ConnDep = Annotated[Connection, Depends(get_conn)]
AdminDep = Annotated[None, Depends(require_admin)]
ModelSyncDep = Annotated[ModelSync, Depends(get_model_sync)]
RetrainNotifierDep = Annotated[RetrainNotifier, Depends(get_retrain_notifier)]
