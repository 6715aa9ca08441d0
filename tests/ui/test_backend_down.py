"""With the backend stopped, the UI says so in words: no traceback, no spinner forever."""

from __future__ import annotations

import pytest

from tests.conftest import start_backend
from tests.ui.conftest import start_streamlit, wait_for_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def stopped_backend_app(db_url, model_dir, data_dir, tmp_path):
    """A Streamlit app whose real backend answered once and was then stopped."""
    backend = start_backend(db_url, model_dir, data_dir, tmp_path / "backend")
    try:
        app = start_streamlit(backend.url, tmp_path / "streamlit")
    finally:
        backend.proc.stop()
    try:
        yield app
    finally:
        app.proc.stop()


def test_upload_with_the_backend_stopped_says_backend_unavailable(page, stopped_backend_app, sample_images, screenshot):
    page.goto(stopped_backend_app.url)
    wait_for_app(page)
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(str(sample_images["paper"][0]))
    alert = page.locator('[data-testid="stMain"] [data-testid="stAlertContentError"]')
    alert.wait_for()
    assert "Backend unavailable" in alert.inner_text()
    assert page.locator('[data-testid="stSidebar"]').get_by_text("Backend unavailable").is_visible()
    assert not page.locator('[data-testid="stException"]').count()
    screenshot(page, "backend-unavailable")
