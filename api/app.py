"""Application factory: wait for the DB, migrate, load the model, then serve."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import REGISTRY

from api import metrics
from api.body_limit import BodySizeLimit
from api.errors import install_error_handlers
from api.model_sync import ModelSync, record_load
from api.ratelimit import RateLimiter
from api.retention import RetentionJob
from api.retrain import RetrainDispatcher
from api.routes import router
from Database_connection.db import make_pool, migrate, wait_for_db
from inference.model_holder import ModelHolder, ModelLoadError
from utils.settings import Settings, get_settings

log = logging.getLogger(__name__)


def load_initial_model(app: FastAPI) -> None:
    """The registry's champion when MLflow is the model source, else (or as a fallback) the
    local model directory. A failure leaves the app up but not ready."""
    settings: Settings = app.state.settings
    holder: ModelHolder = app.state.holder
    sync: ModelSync | None = app.state.model_sync
    if sync is not None:
        try:
            sync.reload_champion()
            return
        except Exception as exc:  # noqa: BLE001 - registry down or empty: fall back to the local model
            log.warning("champion not loaded at start-up (%s); falling back to %s", exc, settings.model_dir)
    try:
        model = holder.load_and_swap(settings.model_dir, source=f"local:{settings.model_dir}")
    except ModelLoadError as exc:
        log.error("no model loaded at start-up: %s", exc)
        metrics.MODEL_RELOADS.labels(outcome="failed").inc()
        return
    record_load(app.state.pool, model.version, model.source, "loaded")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    wait_for_db(settings.database_url)
    migrate(settings.database_url)
    app.state.pool = pool = make_pool(
        settings.database_url, settings.db_pool_min, settings.db_pool_max, timeout=settings.db_timeout_s
    )
    collector = metrics.DatabaseCollector(pool, settings.retrain_threshold)
    REGISTRY.register(collector)
    use_registry = settings.model_source == "mlflow" and bool(settings.mlflow_tracking_uri)
    app.state.model_sync = ModelSync(settings, app.state.holder, pool) if use_registry else None
    dispatcher = None
    if settings.airflow_url:
        holder: ModelHolder = app.state.holder
        dispatcher = RetrainDispatcher(settings, pool, lambda: m.version if (m := holder.peek()) else None)
        app.state.on_retrain_requested = dispatcher.notify
    retention = RetentionJob(settings, pool) if settings.unlabelled_image_retention_days > 0 else None
    try:
        load_initial_model(app)
        if app.state.model_sync is not None:
            app.state.model_sync.start()
        if dispatcher is not None:
            dispatcher.start()
        if retention is not None:
            retention.start()
        yield
    finally:
        if retention is not None:
            retention.stop()
        if dispatcher is not None:
            dispatcher.stop()
        if app.state.model_sync is not None:
            app.state.model_sync.stop()
        REGISTRY.unregister(collector)
        pool.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = FastAPI(
        title="Rock-Paper-Scissors classifier",
        version="1.0.0",
        description="Serves a MobileNet gesture classifier, stores every prediction and label, and "
        "triggers retraining through Airflow.",
        lifespan=lifespan,
        root_path=settings.backend_root_path,
    )
    app.state.settings = settings
    app.state.holder = ModelHolder(settings.max_concurrent_predictions, settings.prediction_queue_s)
    app.state.rate_limiter = RateLimiter()
    install_error_handlers(app)

    app.add_middleware(BodySizeLimit, limit=settings.max_upload_bytes)
    app.include_router(router)

    metrics.install(app)
    return app
