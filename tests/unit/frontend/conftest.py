"""A fake backend behind httpx's MockTransport, so page logic runs in AppTest without servers."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from frontend.client import BackendClient
from frontend.ui import CLIENT_KEY
from tests.support.procs import PROJECT_ROOT

FRONTEND = PROJECT_ROOT / "frontend"


def jpeg(color: tuple[int, int, int] = (40, 160, 40), size: int = 64) -> bytes:
    img = np.full((size, size, 3), color, np.uint8)
    return cv2.imencode(".jpg", img)[1].tobytes()


@pytest.fixture
def photo() -> bytes:
    """A small real JPEG (its content does not matter to the fake backend)."""
    return jpeg()


@dataclass
class FakeBackend:
    """Answers like the real API; records what the UI sent. `down=True` refuses connections."""

    label: str = "rock"
    threshold: int = 3
    down: bool = False
    retrains: list[dict[str, Any]] | None = field(default_factory=list)
    reject_predict: tuple[int, str, str] | None = None
    calls: list[tuple[str, str]] = field(default_factory=list)
    feedback: list[dict[str, Any]] = field(default_factory=list)
    uploads: list[dict[str, Any]] = field(default_factory=list)
    predictions: int = 0
    hand: dict[str, Any] | None = None  # what a hand-aware model answers in `hand`

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        self.calls.append((request.method, request.url.path))
        route = getattr(self, f"_{request.method.lower()}_{request.url.path.strip('/').split('/')[0]}", None)
        if route is None:
            return httpx.Response(404, json={"code": "not_found", "message": "Not Found"})
        return route(request)

    def _post_predict(self, request: httpx.Request) -> httpx.Response:
        if self.reject_predict:
            status, code, message = self.reject_predict
            return httpx.Response(status, json={"code": code, "message": message})
        self.predictions += 1
        probs = {"rock": 0.05, "paper": 0.05, "scissors": 0.05}
        probs[self.label] = 0.9
        return httpx.Response(
            200,
            json={
                "prediction_id": self.predictions,
                "label": self.label,
                "confidence": 0.9,
                "probabilities": probs,
                "model_version": "v-test",
                "latency_ms": 3.2,
                "image_sha256": hashlib.sha256(request.content).hexdigest(),
                "predictions_since_retrain": self.predictions % self.threshold,
                "retrain_threshold": self.threshold,
                "hand": self.hand,
            },
        )

    def _post_feedback(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.feedback.append(body)
        return httpx.Response(
            200,
            json={
                "prediction_id": body["prediction_id"],
                "image_sha256": "a" * 64,
                "label": body["label"],
                "predicted_label": self.label,
                "correct": body["label"] == self.label,
            },
        )

    def _post_upload(self, request: httpx.Request) -> httpx.Response:
        text = request.content.decode("latin-1")
        label = next(c for c in ("rock", "paper", "scissors") if f'name="label"\r\n\r\n{c}' in text)
        self.uploads.append({"label": label, "size": len(request.content)})
        return httpx.Response(200, json={"image_sha256": "b" * 64, "label": label, "new_image": True})

    def _get_ready(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"status": "ready", "model_version": "v-test", "database": "ok"})

    def _get_model(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "version": "v-test",
                "source": "local:/models/v-test",
                "path": "/models/v-test",
                "loaded_at": "2026-11-26T08:00:00Z",
                "created_at": "2026-11-26T07:00:00Z",
                "architecture": {"backbone": "mobilenet", "alpha": 0.25, "input_size": 224, "weights": "w.h5"},
                "runtime": "tflite",
                "class_names": ["rock", "paper", "scissors"],
                "metrics": {
                    "accuracy": 0.91,
                    "macro_f1": 0.9,
                    "n": 120,
                    "per_class": {
                        c: {"precision": 0.9, "recall": 0.9, "f1": 0.9, "support": 40}
                        for c in ("rock", "paper", "scissors")
                    },
                },
                "data_version": "abc123",
                "last_reload_error": None,
            },
        )

    def _get_stats(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "predictions": 7,
                "images": 7,
                "labelled_images": 2,
                "feedback_labels": 2,
                "labels_by_class": {"rock": 1, "paper": 1},
                "predictions_since_retrain": 1,
                "retrain_threshold": self.threshold,
                "retrain_requests": len(self.retrains or []),
                "feedback_accuracy": 0.5,
                "feedback_window": 2,
            },
        )

    def _get_predictions(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json=[
                {
                    "id": 7 - i,
                    "image_sha256": f"{i:064d}",
                    "label": "rock",
                    "confidence": 0.9,
                    "model_version": "v-test",
                    "latency_ms": 3.0,
                    "created_at": "2026-11-26T08:00:00Z",
                    "confirmed_label": ["rock", "paper", None][i % 3],
                }
                for i in range(3)
            ],
        )

    def _get_images(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=jpeg(), headers={"content-type": "image/jpeg"})

    def _get_retrains(self, request: httpx.Request) -> httpx.Response:
        if self.retrains is None:
            return httpx.Response(404, json={"code": "not_found", "message": "Not Found"})
        return httpx.Response(200, json=self.retrains)


@pytest.fixture
def fake_backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def page(fake_backend: FakeBackend) -> Callable[[str], AppTest]:
    """An AppTest of one page script, wired to the fake backend through the session's client."""

    def make(script: str) -> AppTest:
        at = AppTest.from_file(str(FRONTEND / script), default_timeout=30)
        at.session_state[CLIENT_KEY] = BackendClient("http://backend.test", transport=httpx.MockTransport(fake_backend))
        return at

    return make
