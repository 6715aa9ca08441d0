"""One error shape for every 4xx/5xx: `{code, message}` a person can act on."""

from __future__ import annotations

import logging

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from api import metrics
from inference.model_holder import ModelBusy, ModelNotLoaded
from utils.images import ImageRejected
from utils.settings import CLASS_NAMES

log = logging.getLogger(__name__)
# Seconds a client should wait before retrying a request refused because the backend is busy.
BUSY_RETRY_AFTER_S = 1


class ErrorBody(BaseModel):
    code: str
    message: str


class APIError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"code": code, "message": message}, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, str]:
    parts, code = [], "invalid_request"
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(loc) or "request"
        if loc and loc[-1] == "label":
            code = "unknown_label"
            parts.append(f"label must be one of {', '.join(CLASS_NAMES)}")
        elif err.get("type") == "missing":
            parts.append(f"{field} is required")
        else:
            parts.append(f"{field}: {err.get('msg')}")
    return code, "; ".join(dict.fromkeys(parts)) or "The request is malformed."


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(ImageRejected)
    async def _image_rejected(_: Request, exc: ImageRejected) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message)

    @app.exception_handler(ModelNotLoaded)
    async def _not_loaded(_: Request, exc: ModelNotLoaded) -> JSONResponse:
        return error_response(503, "model_not_loaded", str(exc))

    @app.exception_handler(ModelBusy)
    async def _busy(_: Request, exc: ModelBusy) -> JSONResponse:
        metrics.OVERLOAD_REJECTIONS.inc()
        return error_response(
            503,
            "busy",
            f"The backend is busy ({exc}); try again in {BUSY_RETRY_AFTER_S} s.",
            headers={"Retry-After": str(BUSY_RETRY_AFTER_S)},
        )

    # An outage of PostgreSQL: a bounded wait for a connection, then a clear 503. Nothing is
    # half-stored: every write is one transaction.
    @app.exception_handler(PoolTimeout)
    @app.exception_handler(psycopg.OperationalError)
    async def _database_down(_: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        return error_response(
            503,
            "database_unavailable",
            "The database is unavailable, so nothing was stored; try again in a minute.",
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        code, message = _validation_message(exc)
        return error_response(422, code, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))


ERROR_RESPONSES = {
    400: {"model": ErrorBody, "description": "Bad input (empty file)"},
    413: {"model": ErrorBody, "description": "Upload over the size or pixel limit"},
    415: {"model": ErrorBody, "description": "Not a JPEG or PNG image"},
    422: {"model": ErrorBody, "description": "Corrupt, truncated or otherwise unusable input"},
}
