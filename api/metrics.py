"""Prometheus metrics of the backend.

- HTTP requests (count and duration by route template, method and status) come from
  prometheus-fastapi-instrumentator, installed by `install`.
- Model and input metrics are updated on the request path (routes, reloads).
- Values that live in PostgreSQL (counts since the last retrain, retrain runs, feedback
  accuracy, labels waiting for a retrain) are read at scrape time by `DatabaseCollector`,
  so they are right whichever worker or backend instance answers.

Several uvicorn workers: `main.run` calls `use_multiprocess_dir` before the workers start;
each worker then writes its values to files there and `/metrics` merges them
(prometheus-client's multiprocess mode). docs/monitoring.md explains the choices.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

from fastapi import FastAPI, Request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client import generate_latest as _generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator import metrics as http_metrics
from prometheus_fastapi_instrumentator.metrics import Info
from starlette.responses import Response

from utils.settings import CLASS_NAMES

log = logging.getLogger(__name__)

# prometheus-client reads this variable itself, once, when it is first imported: it is the
# library's switch, so it is read here rather than through Settings.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# `*_created` series double the series count and no dashboard or rule reads them.
disable_created_metrics()

HTTP_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RETRAIN_DURATION_BUCKETS = [60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0]

PREDICTIONS = Counter("rps_predictions_total", "Predictions served, by predicted class", ["label"])
PREDICTION_LATENCY = Histogram(
    "rps_prediction_latency_seconds",
    "Time per prediction: decode + preprocess + inference (ModelHolder.predict)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
PREDICTION_CONFIDENCE = Histogram(
    "rps_prediction_confidence",
    "Confidence of the predicted class",
    buckets=(0.34, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
)
OVERLOAD_REJECTIONS = Counter(
    "rps_overload_rejections_total", "Requests answered 503 busy: no prediction slot freed within the queue wait"
)
REJECTED_INPUTS = Counter("rps_rejected_inputs_total", "Inputs refused with a 4xx, by reason", ["reason"])
MODEL_INFO = Gauge(
    "rps_model_info",
    "The model version being served: 1 for the current one (0 for earlier ones in multiprocess mode)",
    ["version", "source"],
    multiprocess_mode="liveall",
)
MODEL_LOADED = Gauge(
    "rps_model_loaded", "1 when a model is being served (by every live worker)", multiprocess_mode="livemin"
)
MODEL_RELOADS = Counter("rps_model_reloads_total", "Model (re)loads, by outcome", ["outcome"])
RETRAIN_DELIVERY_ERRORS = Counter(
    "rps_retrain_delivery_errors_total",
    "Failed retrain triggers: transient (retried with backoff) or permanent (request failed)",
    ["kind"],
)
PRUNED_IMAGES = Counter(
    "rps_pruned_images_total", "Unlabelled stored images deleted by the retention job (with their predictions)"
)
FEEDBACK = Counter("rps_feedback_total", "User feedback received, by whether the prediction was right", ["correct"])
DB_POOL_IN_USE = Gauge("rps_db_pool_connections_in_use", "DB pool connections checked out", multiprocess_mode="livesum")
DB_POOL_SIZE = Gauge("rps_db_pool_size", "DB pool connections open", multiprocess_mode="livesum")

# Known label values are exported at 0 from the start, so a rate() over them is right from
# the first event and dashboards show "0", not "no data".
for _label in CLASS_NAMES:
    PREDICTIONS.labels(label=_label)
for _correct in ("true", "false"):
    FEEDBACK.labels(correct=_correct)
for _outcome in ("loaded", "failed"):
    MODEL_RELOADS.labels(outcome=_outcome)
for _kind in ("transient", "permanent"):
    RETRAIN_DELIVERY_ERRORS.labels(kind=_kind)

# Created once per process: the instrumentator's helpers register their metric when called,
# and every app built in this process (tests build many) shares these two.
_HTTP_REQUESTS = http_metrics.requests(
    metric_name="http_requests_total",
    metric_doc="HTTP requests, by route template, method and status",
)
_HTTP_DURATION = http_metrics.latency(
    metric_name="http_request_duration_seconds",
    metric_doc="HTTP request duration in seconds, by route template, method and status",
    buckets=HTTP_DURATION_BUCKETS,
)

_served: tuple[str, str] | None = None
_served_lock = threading.Lock()


def multiprocess_dir() -> str | None:
    """The shared metrics directory when this process runs in multiprocess mode."""
    return os.environ.get(MULTIPROC_ENV) or None


def use_multiprocess_dir() -> Path:
    """Give the uvicorn workers about to start an empty, shared metrics directory.

    Called in the supervisor before it spawns workers. The supervisor imported
    prometheus-client already, so its own (idle) metrics stay in memory and the directory
    holds only the workers' files. A directory set by the operator is emptied; otherwise a
    temporary one is made and removed at exit.
    """
    configured = multiprocess_dir()
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
    else:
        path = Path(tempfile.mkdtemp(prefix="rps-metrics-"))
        atexit.register(shutil.rmtree, path, ignore_errors=True)
    os.environ[MULTIPROC_ENV] = str(path)
    log.info("metrics: multiprocess mode, shared directory %s", path)
    return path


def set_model_info(version: str, source: str) -> None:
    """Record the model now served; call after every successful load or swap."""
    global _served
    with _served_lock:
        if _served is not None and _served != (version, source):
            MODEL_INFO.labels(*_served).set(0)
            if not multiprocess_dir():  # removal is not implemented for multiprocess files
                MODEL_INFO.remove(*_served)
        MODEL_INFO.labels(version=version, source=source).set(1)
        _served = (version, source)
    MODEL_LOADED.set(1)


def sample_pool(app: FastAPI) -> None:
    """Copy the pool's checked-out and open connections into this worker's gauges."""
    pool = getattr(app.state, "pool", None)
    if pool is None:
        return
    stats = pool.get_stats()
    DB_POOL_SIZE.set(stats.get("pool_size", 0))
    DB_POOL_IN_USE.set(stats.get("pool_size", 0) - stats.get("pool_available", 0))


def _sample_pool_after_request(info: Info) -> None:
    sample_pool(info.request.app)


class DatabaseCollector(Collector):
    """Reads the shared state from PostgreSQL at scrape time."""

    def __init__(self, pool, threshold: int, feedback_window: int = 100) -> None:
        self.pool = pool
        self.threshold = threshold
        self.feedback_window = feedback_window

    def describe(self) -> Iterable[Metric]:
        # Registering with the default registry then needs no database round trip.
        return [
            GaugeMetricFamily(name, doc)
            for name, doc in (
                ("rps_database_up", "Whether the DB answered the scrape"),
                ("rps_database_size_bytes", "Size of the backend's PostgreSQL database on disk"),
                ("rps_retrain_threshold", "Predictions that trigger a retrain"),
                ("rps_predictions_since_retrain", "Predictions since the last retrain request"),
                ("rps_labelled_images", "Images with a human-confirmed label"),
                ("rps_retrain_requests", "Retrain requests, by state"),
                ("rps_last_retrain_duration_seconds", "Duration of the last finished retrain"),
                ("rps_last_retrain_finished_timestamp_seconds", "When the last retrain finished"),
                ("rps_last_retrain_failed", "1 when the most recent finished retrain failed"),
                ("rps_labels_awaiting_retrain", "Human labels given since the last successful retrain"),
                ("rps_oldest_label_awaiting_retrain_timestamp_seconds", "When the oldest of those was given"),
                ("rps_feedback_window_size", "Confirmed predictions in the accuracy window"),
                ("rps_feedback_accuracy", "Share of recent predictions users confirmed"),
            )
        ] + [HistogramMetricFamily("rps_retrain_duration_seconds", "Finished retrains, by outcome")]

    def collect(self) -> Iterable[Metric]:
        from Database_connection import repository as repo

        yield GaugeMetricFamily("rps_retrain_threshold", "Predictions that trigger a retrain", value=self.threshold)
        try:
            with self.pool.connection(timeout=2) as conn:
                since = repo.count_predictions_since_retrain(conn)
                states = repo.retrain_state_counts(conn)
                last = repo.last_finished_retrain(conn)
                durations = repo.retrain_duration_histogram(conn, RETRAIN_DURATION_BUCKETS)
                awaiting, oldest_awaiting = repo.labels_awaiting_retrain(conn)
                acc, n = repo.feedback_accuracy(conn, self.feedback_window)
                labelled = repo.stats(conn)["labelled_images"]
                size = repo.database_size_bytes(conn)
        except Exception:
            log.warning("metrics: database unavailable during scrape", exc_info=True)
            yield GaugeMetricFamily("rps_database_up", "Whether the DB answered the scrape", value=0)
            return
        yield GaugeMetricFamily("rps_database_up", "Whether the DB answered the scrape", value=1)
        yield GaugeMetricFamily(
            "rps_database_size_bytes", "Size of the backend's PostgreSQL database on disk", value=size
        )
        yield GaugeMetricFamily(
            "rps_predictions_since_retrain", "Predictions since the last retrain request", value=since
        )
        yield GaugeMetricFamily("rps_labelled_images", "Images with a human-confirmed label", value=labelled)
        family = GaugeMetricFamily("rps_retrain_requests", "Retrain requests, by state", labels=["state"])
        for state in ("pending", "triggered", "running", "succeeded", "failed", "superseded", "skipped"):
            family.add_metric([state], states.get(state, 0))
        yield family

        histogram = HistogramMetricFamily(
            "rps_retrain_duration_seconds",
            "Finished retrains (request to end of run), by outcome: failed, promoted or rejected by the gate",
            labels=["outcome"],
        )
        for outcome, h in sorted(durations.items()):
            buckets = [(floatToGoString(le), n) for le, n in h["buckets"]] + [("+Inf", h["count"])]
            histogram.add_metric([outcome], buckets, h["sum"])
        yield histogram
        if last is not None:
            yield GaugeMetricFamily(
                "rps_last_retrain_duration_seconds", "Duration of the last finished retrain", value=last["duration"]
            )
            yield GaugeMetricFamily(
                "rps_last_retrain_finished_timestamp_seconds",
                "When the last retrain finished",
                value=last["finished_at"],
            )
            yield GaugeMetricFamily(
                "rps_last_retrain_failed",
                "1 when the most recent finished retrain failed",
                value=1 if last["state"] == "failed" else 0,
            )
        yield GaugeMetricFamily(
            "rps_labels_awaiting_retrain", "Human labels given since the last successful retrain", value=awaiting
        )
        if oldest_awaiting is not None:
            yield GaugeMetricFamily(
                "rps_oldest_label_awaiting_retrain_timestamp_seconds",
                "When the oldest of those was given",
                value=oldest_awaiting,
            )
        yield GaugeMetricFamily("rps_feedback_window_size", "Confirmed predictions in the accuracy window", value=n)
        if acc is not None:
            yield GaugeMetricFamily("rps_feedback_accuracy", "Share of recent predictions users confirmed", value=acc)


def _worker_pids(path: Path, pattern: str = "*.db") -> set[int]:
    """Pids of the processes that wrote metric files (`<kind>_<pid>.db`) in `path`."""
    return {int(tail) for f in path.glob(pattern) if (tail := f.stem.rsplit("_", 1)[-1]).isdigit()}


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def forget_dead_workers(path: str | Path) -> list[int]:
    """Drop the live gauges (model info, loaded, pool) of workers that are gone.

    prometheus-client expects `mark_process_dead` to be called when a worker exits, but
    uvicorn ends its workers by re-raising SIGTERM (no atexit) and a crashed worker calls
    nothing, so each scrape checks instead. Their counters and histograms stay in the totals.
    """
    dead = sorted(pid for pid in _worker_pids(Path(path), "gauge_live*.db") if not _alive(pid))
    for pid in dead:
        with contextlib.suppress(FileNotFoundError):  # another worker's scrape got there first
            mark_process_dead(pid, str(path))
    return dead


class WorkerProcessCollector(Collector):
    """`process_*` (CPU, memory, file descriptors) of every live worker, labelled by pid.

    In multiprocess mode the standard process collector would describe only the worker that
    happens to answer the scrape. Workers are found by the pids in the metric file names.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def live_pids(self) -> list[int]:
        return [pid for pid in _worker_pids(self.path) if _alive(pid)]

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        for pid in self.live_pids():
            for family in ProcessCollector(pid=lambda pid=pid: pid, registry=None).collect():
                out = merged.setdefault(family.name, Metric(family.name, family.documentation, family.type))
                for sample in family.samples:
                    out.add_sample(sample.name, {**sample.labels, "pid": str(pid)}, sample.value)
        return list(merged.values())


def generate_latest(app: FastAPI) -> bytes:
    """The exposition for one scrape of `app`."""
    sample_pool(app)
    path = multiprocess_dir()
    if path is None:
        # One process: the default registry holds everything, including the
        # DatabaseCollector the app registers in its lifespan.
        return _generate_latest(REGISTRY)
    forget_dead_workers(path)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path)
    registry.register(WorkerProcessCollector(path))
    if getattr(app.state, "pool", None) is not None:
        registry.register(DatabaseCollector(app.state.pool, app.state.settings.retrain_threshold))
    return _generate_latest(registry)


def install(app: FastAPI) -> None:
    """Instrument every request and expose `GET /metrics`."""
    Instrumentator(should_group_status_codes=False).add(
        _HTTP_REQUESTS, _HTTP_DURATION, _sample_pool_after_request
    ).instrument(app)

    @app.get(
        "/metrics",
        tags=["ops"],
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}},
    )
    def prometheus_metrics(request: Request) -> Response:
        """Prometheus exposition of the backend's metrics."""
        return Response(generate_latest(request.app), media_type=CONTENT_TYPE_LATEST)
