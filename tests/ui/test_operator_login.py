"""The System and Label review pages against the real backend process: visitors see aggregates
only, the operator login shows photos and history (Streamlit's AppTest, no browser)."""

from __future__ import annotations

import httpx
import psycopg
import pytest
from streamlit.testing.v1 import AppTest

from frontend.client import BackendClient
from frontend.ui import CLIENT_KEY
from tests.conftest import start_backend
from tests.support.auth import operator_headers
from tests.support.procs import PROJECT_ROOT

pytestmark = pytest.mark.filterwarnings("ignore")


def system_page(backend_url: str) -> AppTest:
    at = AppTest.from_file(str(PROJECT_ROOT / "frontend" / "views" / "system.py"), default_timeout=30)
    at.session_state[CLIENT_KEY] = BackendClient(backend_url)
    return at


def images(at: AppTest) -> list:
    return [e for e in at.main if type(e).__name__ == "Image"]


def log_in(at: AppTest, token: str) -> AppTest:
    at.text_input[0].input(token)
    return next(b for b in at.button if b.label == "Log in").click().run()


def test_system_page_photos_need_the_operator_login(backend_server, sample_images) -> None:
    url, _ = backend_server
    with httpx.Client(base_url=url, timeout=30) as c:
        for label in ("rock", "paper"):
            photo = sample_images[label][0]
            c.post("/predict", files={"file": (photo.name, photo.read_bytes())}).raise_for_status()

    at = system_page(url).run()
    assert not at.exception
    assert at.metric[0].value  # aggregates are public
    assert not images(at), "a visitor must not see users' photos"
    assert "log in as an operator" in "\n".join(i.value for i in at.info)

    at = log_in(at, "not-the-operator-token")
    assert "wrong" in "\n".join(e.value for e in at.error)
    assert not images(at)

    token = operator_headers()["Authorization"].removeprefix("Bearer ")
    at = log_in(at, token)
    assert not at.exception
    assert len(images(at)) == 2  # both users' thumbnails, fetched with the login
    assert any("#2" in c.value for c in at.caption)


def test_label_review_page_approves_a_quarantined_label(db_url, model_dir, data_dir, tmp_path, sample_images) -> None:
    backend = start_backend(db_url, model_dir, data_dir, tmp_path, LABEL_QUARANTINE="true")
    try:
        photo = sample_images["scissors"][0]
        with httpx.Client(base_url=backend.url, timeout=30) as c:
            r = c.post("/upload", files={"file": (photo.name, photo.read_bytes())}, data={"label": "scissors"})
            assert r.json()["review"] == "pending"

        at = AppTest.from_file(str(PROJECT_ROOT / "frontend" / "views" / "review.py"), default_timeout=30)
        at.session_state[CLIENT_KEY] = BackendClient(backend.url)
        at.run()
        assert "needs the operator login" in "\n".join(i.value for i in at.info)
        at = log_in(at, operator_headers()["Authorization"].removeprefix("Bearer "))
        assert not at.exception
        assert len(images(at)) == 1  # the photo, fetched with the login
        at.radio[0].set_value("approve").run()
        next(b for b in at.button if b.label.startswith("Apply 1")).click().run()
        assert not at.exception
        assert "Nothing waits for review." in "\n".join(s.value for s in at.success)
    finally:
        backend.proc.stop()
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT label, review FROM labels").fetchall() == [("scissors", "approved")]
