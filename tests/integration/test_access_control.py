"""Privacy, rate limits and the label quarantine, against the real backend and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from Database_connection import repository as repo
from Database_connection.db import libpq_url
from tests.conftest import start_backend


def operator(settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.operator_token}"}


@pytest.fixture
def app_with(settings) -> Iterator:
    """Start the in-process app with some settings changed."""
    clients: list[TestClient] = []

    def make(**changes) -> TestClient:
        c = TestClient(create_app(settings.model_copy(update=changes)))
        c.__enter__()
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.__exit__(None, None, None)


def upload(c: httpx.Client, path, label: str, **kw) -> httpx.Response:
    return c.post("/upload", files={"file": (path.name, path.read_bytes())}, data={"label": label}, **kw)


def test_photos_and_history_need_the_operator_login(client, settings, sample_images) -> None:
    path = sample_images["rock"][0]
    sha = client.post("/predict", files={"file": (path.name, path.read_bytes())}).json()["image_sha256"]
    for url in (f"/images/{sha}", "/predictions"):
        anonymous = client.get(url)
        assert anonymous.status_code == 401, url
        assert anonymous.json()["code"] == "operator_login_required"
        wrong = client.get(url, headers={"Authorization": "Bearer not-the-operator-token"})
        assert wrong.status_code == 403
        admin = client.get(url, headers={"Authorization": f"Bearer {settings.admin_token}"})
        assert admin.status_code == 403, "the machines' ADMIN_TOKEN is not an operator login"
    assert client.get(f"/images/{sha}", headers=operator(settings)).content == path.read_bytes()
    assert client.get("/predictions", headers=operator(settings)).json()[0]["image_sha256"] == sha
    # aggregates stay public
    assert client.get("/stats").json()["predictions"] == 1


def test_raw_errors_only_with_the_operator_login(client, settings, db_url) -> None:
    raw = "HTTPConnectionPool(host='airflow-api-server', port=8080): connection refused"
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO retrain_requests (last_prediction_id, prediction_count, state, last_error)"
            " VALUES (1, 3, 'failed', %s)",
            (raw,),
        )
    anonymous = client.get("/retrains").json()[0]
    assert anonymous["state"] == "failed" and "airflow-api-server" not in anonymous["last_error"]
    assert client.get("/retrains", headers=operator(settings)).json()[0]["last_error"] == raw


def test_uploads_are_limited_per_client_with_429_and_retry_after(db_url, model_dir, data_dir, tmp_path, sample_images):
    """A real uvicorn process: clients behind the trusted proxy (here 127.0.0.1) are told apart by
    the X-Forwarded-For it sets; the refused upload stores nothing."""
    backend = start_backend(db_url, model_dir, data_dir, tmp_path, RATE_LIMIT_UPLOAD="2")
    try:
        with httpx.Client(base_url=backend.url, timeout=30) as c:
            alice, bob = {"X-Forwarded-For": "198.51.100.1"}, {"X-Forwarded-For": "198.51.100.2"}
            paths = sample_images["paper"]
            assert [upload(c, p, "paper", headers=alice).status_code for p in paths[:2]] == [200, 200]
            refused = upload(c, paths[2], "paper", headers=alice)
            assert refused.status_code == 429
            assert refused.json()["code"] == "rate_limited" and "2 a minute" in refused.json()["message"]
            assert 1 <= int(refused.headers["Retry-After"]) <= 30
            assert upload(c, paths[3], "paper", headers=bob).status_code == 200
            metrics = c.get("/metrics").text
            assert 'rps_rejected_inputs_total{reason="rate_limited"} 1.0' in metrics
    finally:
        backend.proc.stop()
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM labels").fetchone()[0] == 3


def test_predictions_and_previews_and_feedback_have_their_own_limits(app_with, sample_images) -> None:
    c = app_with(rate_limit_predict=1, rate_limit_preview=3, rate_limit_feedback=1)
    path = sample_images["scissors"][0]
    files = {"file": (path.name, path.read_bytes())}
    pid = c.post("/predict", files=files).json()["prediction_id"]
    assert c.post("/predict", files=files).status_code == 429
    assert [c.post("/predict?store=false", files=files).status_code for _ in range(4)] == [200, 200, 200, 429]
    assert c.post("/feedback", json={"prediction_id": pid, "label": "scissors"}).status_code == 200
    second = c.post("/feedback", json={"prediction_id": pid, "label": "rock"})
    assert second.status_code == 429 and int(second.headers["Retry-After"]) == 60


def trainable(db_url: str) -> set[str]:
    """What the DAG's extract stage reads (the repository query it uses)."""
    with psycopg.connect(libpq_url(db_url), row_factory=psycopg.rows.dict_row) as conn, conn.transaction():
        return {row["sha256"].strip() for row in repo.iter_labelled_images(conn)}


def test_quarantined_labels_are_not_trained_on_until_an_operator_approves(app_with, settings, db_url, sample_images):
    c = app_with(label_quarantine=True)
    shas = []
    for path, label in ((sample_images["rock"][1], "rock"), (sample_images["paper"][1], "scissors")):
        r = upload(c, path, label)
        assert r.status_code == 200 and r.json()["review"] == "pending"
        shas.append(r.json()["image_sha256"])
    assert trainable(db_url) == set()
    assert c.get("/stats").json()["labels_awaiting_review"] == 2

    assert c.get("/admin/labels").status_code == 401
    queue = c.get("/admin/labels", headers=operator(settings)).json()
    assert [q["image_sha256"] for q in queue] == shas and {q["review"] for q in queue} == {"pending"}
    assert c.post("/admin/labels/review", json={"image_sha256s": shas, "decision": "approved"}).status_code == 401

    approve = {"image_sha256s": [shas[0]], "decision": "approved"}
    assert c.post("/admin/labels/review", json=approve, headers=operator(settings)).json()["updated"] == 1
    reject = {"image_sha256s": [shas[1]], "decision": "rejected"}
    assert c.post("/admin/labels/review", json=reject, headers=operator(settings)).json()["updated"] == 1
    assert trainable(db_url) == {shas[0]}
    assert c.get("/stats").json()["labels_awaiting_review"] == 0

    # a new anonymous answer for an approved image needs approving again
    pid = c.post("/predict", files={"file": ("x.png", sample_images["rock"][1].read_bytes())}).json()["prediction_id"]
    assert c.post("/feedback", json={"prediction_id": pid, "label": "paper"}).json()["review"] == "pending"
    assert trainable(db_url) == set()


def test_without_quarantine_labels_are_trainable_at_once(client, db_url, sample_images) -> None:
    r = upload(client, sample_images["rock"][2], "rock")
    assert r.json()["review"] == "approved"
    assert trainable(db_url) == {r.json()["image_sha256"]}
