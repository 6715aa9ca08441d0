"""Route handlers in isolation: the model, the pool, the registry sync and the retrain
notifier are replaced through FastAPI's dependency overrides (no lifespan runs)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from psycopg_pool import PoolTimeout

from api import deps
from api.app import create_app
from Database_connection import repository as repo
from inference.model_holder import ModelBusy, ModelLoadError, Prediction
from utils.images import ImageInfo, ImageRejected
from utils.settings import Settings

TOKEN = "unit-test-admin-token"


class FakeHolder:
    """Answers like ModelHolder.predict; `error` makes it raise instead."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls = 0

    def predict(self, data: bytes, **limits: int) -> Prediction:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return Prediction(
            label="rock",
            confidence=0.9,
            probabilities={"rock": 0.9, "paper": 0.05, "scissors": 0.05},
            model_version="v7",
            latency_ms=4.2,
            image=ImageInfo("jpeg", 640, 480, "ab" * 32),
        )

    @contextmanager
    def slot(self) -> Iterator[None]:
        yield

    def peek(self) -> None:
        return None


class RecordingPool:
    """A pool that counts checkouts; `down` makes every checkout time out, as psycopg_pool
    does when PostgreSQL is unreachable."""

    def __init__(self, down: bool = False) -> None:
        self.down = down
        self.checkouts = 0

    @contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[Any]:
        self.checkouts += 1
        if self.down:
            raise PoolTimeout("couldn't get a connection after 2.00 sec")
        yield object()


@pytest.fixture
def make_client():
    def make(holder: Any = None, pool: Any = None, **overrides: Any) -> TestClient:
        app = create_app(Settings(admin_token=TOKEN, mlflow_tracking_uri="", airflow_url=""))
        app.dependency_overrides[deps.get_holder] = lambda: holder or FakeHolder()
        app.dependency_overrides[deps.get_pool] = lambda: pool or RecordingPool()
        for dependency, value in overrides.items():
            app.dependency_overrides[getattr(deps, dependency)] = lambda value=value: value
        return TestClient(app)  # not entered: the lifespan (database, model) does not run

    return make


def _post_image(client: TestClient, **params: str):
    return client.post("/predict", params=params, files={"file": ("hand.jpg", b"\xff\xd8\xff fake")})


def test_store_false_never_touches_the_database(make_client) -> None:
    pool = RecordingPool(down=True)
    r = _post_image(make_client(pool=pool), store="false")
    assert r.status_code == 200, r.text
    assert r.json()["prediction_id"] is None and r.json()["predictions_since_retrain"] is None
    assert pool.checkouts == 0


@pytest.mark.parametrize("route", ["predict", "upload", "feedback"])
def test_database_outage_is_a_503_json(make_client, route: str) -> None:
    client = make_client(pool=RecordingPool(down=True))
    if route == "predict":
        r = _post_image(client)
    elif route == "upload":
        r = client.post("/upload", files={"file": ("h.png", _tiny_png())}, data={"label": "rock"})
    else:
        r = client.post("/feedback", json={"prediction_id": 1, "label": "rock"})
    assert r.status_code == 503, r.text
    assert r.json()["code"] == "database_unavailable" and "nothing was stored" in r.json()["message"]
    assert r.headers["Retry-After"]


def test_busy_backend_answers_503_with_retry_after(make_client) -> None:
    r = _post_image(make_client(holder=FakeHolder(ModelBusy("all 4 prediction slots stayed busy for 2 s"))))
    assert r.status_code == 503 and r.json()["code"] == "busy"
    assert int(r.headers["Retry-After"]) >= 1


def test_rejected_input_keeps_its_status_and_code(make_client) -> None:
    r = _post_image(make_client(holder=FakeHolder(ImageRejected("truncated_image", "The JPEG is truncated.", 422))))
    assert r.status_code == 422 and r.json() == {"code": "truncated_image", "message": "The JPEG is truncated."}


def test_stored_prediction_wakes_the_retrain_notifier(make_client, monkeypatch) -> None:
    woken: list[int] = []
    stored = repo.StoredPrediction(id=11, created_at=None, retrain_request_id=5, predictions_since_retrain=0)
    monkeypatch.setattr(repo, "record_prediction", lambda conn, **kw: stored)
    r = _post_image(make_client(get_retrain_notifier=woken.append))
    assert r.status_code == 200 and r.json()["prediction_id"] == 11
    assert woken == [5]


class FakeSync:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    def reload_champion(self, force: bool = False):
        if self.error:
            raise self.error
        model = type("M", (), {"version": "v8", "source": "models:/rps-classifier@champion"})()
        return model, type("M", (), {"version": "v7"})()


@pytest.mark.parametrize(
    ("header", "status", "code"),
    [(None, 401, "unauthorized"), ("Bearer wrong", 403, "forbidden"), ("Basic " + TOKEN, 403, "forbidden")],
)
def test_admin_reload_refuses_without_the_token(make_client, header, status, code) -> None:
    headers = {"Authorization": header} if header else {}
    r = make_client(get_model_sync=FakeSync()).post("/admin/reload", headers=headers)
    assert (r.status_code, r.json()["code"]) == (status, code)


def test_admin_reload_swaps_through_the_sync_dependency(make_client) -> None:
    r = make_client(get_model_sync=FakeSync()).post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.json()["version"] == "v8" and r.json()["previous_version"] == "v7"
    failing = make_client(get_model_sync=FakeSync(ModelLoadError("v9 could not be fetched")))
    r = failing.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 502 and r.json()["code"] == "model_load_failed"


def test_admin_reload_without_a_registry_is_a_409(make_client) -> None:
    r = make_client().post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 409 and r.json()["code"] == "registry_not_configured"


def _tiny_png() -> bytes:
    import cv2
    import numpy as np

    return cv2.imencode(".png", np.full((32, 32, 3), 90, np.uint8))[1].tobytes()


def _docs_client(root_path: str) -> TestClient:
    app = create_app(Settings(admin_token=TOKEN, mlflow_tracking_uri="", airflow_url="", backend_root_path=root_path))
    app.dependency_overrides[deps.get_holder] = FakeHolder
    return TestClient(app)


def test_docs_load_the_schema_from_the_root_natively() -> None:
    client = _docs_client("")
    assert "url: '/openapi.json'" in client.get("/docs").text
    assert "servers" not in client.get("/openapi.json").json()


def test_docs_behind_a_prefix_stripping_proxy_load_the_schema_under_the_prefix() -> None:
    """The proxy forwards /api/docs as /docs: the page must ask for /api/openapi.json, which
    the proxy forwards as /openapi.json. Unprefixed paths (Streamlit, Prometheus) still work."""
    client = _docs_client("/api")
    assert "url: '/api/openapi.json'" in client.get("/docs").text
    schema = client.get("/openapi.json").json()
    assert schema["servers"] == [{"url": "/api"}]
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/api/openapi.json").status_code == 200


@pytest.mark.parametrize("bad", ["api", "/api/", "/a pi"])
def test_root_path_must_be_a_clean_prefix(bad: str) -> None:
    with pytest.raises(ValueError):
        Settings(backend_root_path=bad)
