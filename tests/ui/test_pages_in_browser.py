"""Every page in a real browser against the real backend and model (Chromium's fake camera
shows a real photo from the shared dataset)."""

from __future__ import annotations

import hashlib
import re
import time

import httpx
import psycopg
import pytest

from tests.support.auth import operator_headers
from tests.support.procs import wait_until
from tests.ui.conftest import wait_for_app
from utils.settings import get_settings

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CLASSES = ("rock", "paper", "scissors")


def shown_label(page) -> str:
    text = page.locator('[data-testid="rps-prediction"]').inner_text()
    return next(c for c in CLASSES if c in text.lower())


def query(db_url: str, sql: str, *params):
    with psycopg.connect(db_url) as conn:
        return conn.execute(sql, params).fetchall()


def test_upload_shows_the_prediction_and_stores_the_correction(page, ui_app, ui_backend, sample_images, screenshot):
    photo = sample_images["rock"][0]
    sha = hashlib.sha256(photo.read_bytes()).hexdigest()
    page.goto(ui_app.url)
    wait_for_app(page)
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(str(photo))
    page.wait_for_selector('[data-testid="rps-prediction"]')

    predicted = shown_label(page)
    [(prediction_id, stored_label)] = query(
        ui_backend.db_url, "SELECT id, label FROM predictions WHERE image_sha256 = %s", sha
    )
    assert predicted == stored_label
    assert page.get_by_text("Confidence").is_visible()
    # rendered after the prediction card in the same script run: wait for it (is_visible() does not)
    page.get_by_text(re.compile(r"until the next retrain|a retrain has been requested")).wait_for(state="visible")

    correction = next(c for c in CLASSES if c != predicted)
    page.get_by_role("button", name=f"No, it's {correction}").click()
    page.get_by_text("Saved: corrected to").wait_for()
    assert query(ui_backend.db_url, "SELECT label, source, prediction_id FROM labels WHERE image_sha256 = %s", sha) == [
        (correction, "feedback", prediction_id)
    ]
    screenshot(page, "upload")


def test_camera_page_takes_a_photo_and_classifies_it(page, ui_app, ui_backend, screenshot):
    page.goto(f"{ui_app.url}/camera")
    wait_for_app(page)
    page.wait_for_function("() => { const v = document.querySelector('video'); return v && v.videoWidth > 0; }")
    page.get_by_role("button", name="Take Photo").click()
    page.wait_for_selector('[data-testid="rps-prediction"]')
    rows = query(
        ui_backend.db_url,
        "SELECT p.label FROM predictions p JOIN images i ON i.sha256 = p.image_sha256"
        " WHERE i.original_name = 'webcam-photo.jpg'",
    )
    assert [r[0] for r in rows] == [shown_label(page)]
    page.get_by_role("button", name=re.compile(r"Yes, ")).wait_for()
    screenshot(page, "webcam-capture")


def live_stats(log: str) -> dict[str, float]:
    found = re.findall(r"live stream stats: frames=(\d+) predictions=(\d+) errors=(\d+) fps=([\d.]+)", log)
    if not found:
        return {}
    frames, predictions, errors, fps = found[-1]
    return {"frames": int(frames), "predictions": int(predictions), "errors": int(errors), "fps": float(fps)}


def backend_predictions(url: str) -> float:
    """Predictions the backend served, stored or not (its Prometheus counter)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("rps_predictions_total{"))


def test_live_page_streams_annotated_frames(page, ui_app, ui_backend, screenshot):
    served_before, started = backend_predictions(ui_backend.url), time.monotonic()
    page.goto(f"{ui_app.url}/live")
    wait_for_app(page)
    component = page.frame_locator("iframe").first
    component.get_by_role("button", name="START").click()
    # The annotated stream comes back from the server into the component's <video>.
    component.locator("video").first.wait_for()
    page.wait_for_function(
        "() => { const f = document.querySelector('iframe'); const v = f && f.contentDocument"
        " && f.contentDocument.querySelector('video'); return v && v.videoWidth > 0; }",
        timeout=45_000,
    )

    # Counted on the server: the frame callback logs what it annotated.
    wait_until(lambda: live_stats(ui_app.log()).get("frames", 0) >= 30, 45, "30 annotated frames", ui_app.proc)
    stats = live_stats(ui_app.log())
    assert stats["errors"] == 0 and stats["predictions"] >= 1 and stats["fps"] > 3, stats

    # Throttled: the backend answered at most LIVE_MAX_PREDICTIONS_PER_SECOND live predictions a second...
    served, elapsed = backend_predictions(ui_backend.url) - served_before, time.monotonic() - started
    assert 1 <= served <= get_settings().live_max_predictions_per_second * elapsed + 1, (served, elapsed)
    # ...and stored none of them: live previews must not count toward a retrain (store=false).
    stored = query(ui_backend.db_url, "SELECT count(*) FROM images WHERE original_name = 'live-frame.jpg'")
    assert stored == [(0,)]
    page.locator('[data-testid="rps-live-label"]').wait_for()
    screenshot(page, "live")

    page.locator('[data-testid="stButtonGroup"] button', has_text="Paper").click()
    page.get_by_role("button", name="Save current frame").click()
    page.get_by_text("Frame saved as").wait_for()
    saved = query(
        ui_backend.db_url,
        "SELECT l.label, l.source FROM labels l JOIN images i ON i.sha256 = l.image_sha256"
        " WHERE i.source = 'upload' AND i.original_name = 'live-frame.jpg'",
    )
    assert saved == [("paper", "upload")]
    component.get_by_role("button", name="STOP").click()


def test_system_page_lists_the_retrain_request(page, ui_app, ui_backend, sample_images, screenshot):
    with httpx.Client(base_url=ui_backend.url, timeout=30) as http:
        for label in CLASSES:  # three predictions reach RETRAIN_THRESHOLD=3
            photo = sample_images[label][5]
            http.post("/predict", files={"file": (photo.name, photo.read_bytes(), "image/png")}).raise_for_status()
        response = http.get("/retrains")
    page.goto(f"{ui_app.url}/system")
    wait_for_app(page)
    page.get_by_role("heading", name="Recent predictions").wait_for()
    page.get_by_text("log in as an operator").wait_for()  # visitors: aggregates only
    assert page.locator('[data-testid="stMain"] [data-testid="stImage"] img').count() == 0
    page.get_by_label("Operator token", exact=True).fill(operator_headers()["Authorization"].removeprefix("Bearer "))
    page.get_by_role("button", name="Log in").click()
    page.locator('[data-testid="stMain"] [data-testid="stImage"] img').nth(2).wait_for()  # thumbnails
    assert page.get_by_role("link", name="MLflow").is_visible()
    if response.status_code == 404:
        page.get_by_text("does not list retrain requests").wait_for()
        screenshot(page, "system")
        pytest.skip("the backend has no GET /retrains yet: the page says so; the listing is untested")
    response.raise_for_status()
    body = response.json()
    requests = body if isinstance(body, list) else body.get("items", [])
    assert requests, "three predictions at threshold 3 create a retrain request"
    newest = max(requests, key=lambda r: r["id"])
    page.get_by_text(f"Request #{newest['id']}").wait_for()
    # With no Airflow running the request stays pending (or waits to retry the trigger).
    assert page.get_by_text(re.compile(r"pending|triggered|running|succeeded|failed")).first.is_visible()
    screenshot(page, "system")


def test_pages_render_within_a_few_seconds(page, ui_app):
    for path in ("", "camera", "live", "system"):
        start = time.monotonic()
        page.goto(f"{ui_app.url}/{path}")
        wait_for_app(page)
        assert not page.locator('[data-testid="stException"]').count(), path
        assert time.monotonic() - start < 15, path
