"""Prometheus metrics of the backend.

Counters and histograms are updated on the request path; values that live in
PostgreSQL (counts since the last retrain, retrain states, feedback accuracy) are
read at scrape time by a collector, so they are right whichever worker answers.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.responses import Response

log = logging.getLogger(__name__)

PREDICTIONS = Counter("rps_predictions_total", "Predictions served, by predicted class", ["label"])
PREDICTION_LATENCY = Histogram(
    "rps_prediction_latency_seconds",
    "Model time per prediction (preprocess + inference)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
PREDICTION_CONFIDENCE = Histogram(
    "rps_prediction_confidence",
    "Confidence of the predicted class",
    buckets=(0.34, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
)
REJECTED_INPUTS = Counter("rps_rejected_inputs_total", "Inputs refused with a 4xx, by reason", ["reason"])
MODEL_INFO = Gauge("rps_model_info", "The model version being served (value 1)", ["version", "source"])
MODEL_RELOADS = Counter("rps_model_reloads_total", "Model (re)loads, by outcome", ["outcome"])
FEEDBACK = Counter("rps_feedback_total", "User feedback received, by whether the prediction was right", ["correct"])


def set_model_info(version: str, source: str) -> None:
    MODEL_INFO.clear()
    MODEL_INFO.labels(version=version, source=source).set(1)


class DatabaseCollector(Collector):
    """Reads the shared state from PostgreSQL at scrape time."""

    def __init__(self, pool, threshold: int, feedback_window: int = 100) -> None:
        self.pool = pool
        self.threshold = threshold
        self.feedback_window = feedback_window

    def collect(self):
        from Database_connection import repository as repo

        pool_stats = self.pool.get_stats()
        in_use = pool_stats.get("pool_size", 0) - pool_stats.get("pool_available", 0)
        yield GaugeMetricFamily("rps_db_pool_connections_in_use", "DB pool connections checked out", value=in_use)
        yield GaugeMetricFamily("rps_db_pool_size", "DB pool connections open", value=pool_stats.get("pool_size", 0))
        yield GaugeMetricFamily("rps_retrain_threshold", "Predictions that trigger a retrain", value=self.threshold)
        try:
            with self.pool.connection(timeout=2) as conn:
                since = repo.count_predictions_since_retrain(conn)
                states = repo.retrain_state_counts(conn)
                last_duration = repo.last_retrain_duration(conn)
                acc, n = repo.feedback_accuracy(conn, self.feedback_window)
                labelled = repo.stats(conn)["labelled_images"]
        except Exception:
            log.warning("metrics: database unavailable during scrape", exc_info=True)
            yield GaugeMetricFamily("rps_database_up", "Whether the DB answered the scrape", value=0)
            return
        yield GaugeMetricFamily("rps_database_up", "Whether the DB answered the scrape", value=1)
        yield GaugeMetricFamily(
            "rps_predictions_since_retrain", "Predictions since the last retrain request", value=since
        )
        yield GaugeMetricFamily("rps_labelled_images", "Images with a human-confirmed label", value=labelled)
        family = GaugeMetricFamily("rps_retrain_requests", "Retrain requests, by state", labels=["state"])
        for state in ("pending", "triggered", "running", "succeeded", "failed"):
            family.add_metric([state], states.get(state, 0))
        yield family
        if last_duration is not None:
            yield GaugeMetricFamily(
                "rps_last_retrain_duration_seconds", "Duration of the last finished retrain", value=last_duration
            )
        yield GaugeMetricFamily("rps_feedback_window_size", "Confirmed predictions in the accuracy window", value=n)
        if acc is not None:
            yield GaugeMetricFamily("rps_feedback_accuracy", "Share of recent predictions users confirmed", value=acc)


def install(app: FastAPI) -> None:
    """Expose `/metrics` (and, from the monitoring work, request instrumentation)."""

    @app.get(
        "/metrics",
        tags=["ops"],
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}},
    )
    def prometheus_metrics() -> Response:
        """Prometheus exposition of the backend's metrics."""
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
