"""Browser tests: Debian's Chromium through Playwright, against a real Streamlit process and a
real backend (real model, throwaway PostgreSQL). One backend and one Streamlit per module."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ARTIFACTS_DIR, DATASETS, Backend, start_backend
from tests.support import db as dbs
from tests.support.procs import Proc, free_port, start, wait_http
from tests.ui.media import write_y4m

SCREENSHOTS = ARTIFACTS_DIR / "screenshots"
# The fake camera shows this real photo (seed-drgfreeman: a clear fist on a green background).
CAMERA_PHOTO = DATASETS / "seed-drgfreeman" / "rock" / "1COBZEE1ALiJIivQ.png"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]


@dataclass
class StreamlitApp:
    url: str
    proc: Proc

    def log(self) -> str:
        return self.proc.log_path.read_text(errors="replace")


def start_streamlit(backend_url: str, workdir: Path, **env: str) -> StreamlitApp:
    """`frontend/entrypoint.sh`, the script `make up` runs, on a free port."""
    port = free_port()
    full_env = {
        "BACKEND_URL": backend_url,
        "STREAMLIT_HOST": "127.0.0.1",
        "STREAMLIT_PORT": str(port),
        "RETRAIN_THRESHOLD": "3",
        **env,
    }
    proc = start(f"streamlit-{port}", ["bash", "frontend/entrypoint.sh"], full_env, workdir / "logs")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/_stcore/health", 60, proc)
    except BaseException:
        proc.stop()
        raise
    return StreamlitApp(url, proc)


@pytest.fixture(scope="module")
def ui_backend(template_db: str, model_dir: Path, data_dir: Path, tmp_path_factory) -> Iterator[Backend]:
    """A real backend on its own throwaway database, shared by one test module."""
    name = dbs.unique_name("rps_ui")
    db_url = dbs.create_db(name, template=template_db)
    try:
        backend = start_backend(db_url, model_dir, data_dir, tmp_path_factory.mktemp("ui-backend"))
    except BaseException:
        dbs.drop_db(name)
        raise
    try:
        yield backend
    finally:
        backend.proc.stop()
        dbs.drop_db(name)


@pytest.fixture(scope="module")
def ui_app(ui_backend: Backend, tmp_path_factory) -> Iterator[StreamlitApp]:
    app = start_streamlit(ui_backend.url, tmp_path_factory.mktemp("ui-streamlit"))
    try:
        yield app
    finally:
        app.proc.stop()


@pytest.fixture(scope="session")
def fake_camera(tmp_path_factory) -> Path:
    return write_y4m(CAMERA_PHOTO, tmp_path_factory.mktemp("camera") / "camera.y4m")


@pytest.fixture(scope="session")
def browser(fake_camera: Path):
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("Debian's chromium is not on PATH; `make install` (scripts/install.sh) installs it")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=executable,
            headless=True,
            args=[*CHROMIUM_FLAGS, f"--use-file-for-fake-video-capture={fake_camera}"],
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def wait_for_app(page) -> None:
    """Streamlit has rendered the page and finished running its script."""
    page.wait_for_selector('[data-testid="stAppViewContainer"]')
    page.wait_for_selector('[data-testid="stSidebar"] >> text=Rock · Paper · Scissors')
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=30_000)


@pytest.fixture
def screenshot() -> Callable[..., Path]:
    """Save the whole page (Streamlit scrolls inside its main block, so grow the viewport first)."""

    def shoot(page, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        height = page.evaluate(
            "() => { const m = document.querySelector('[data-testid=\"stMain\"]');"
            " return Math.max(m ? m.scrollHeight : 0, document.body.scrollHeight); }"
        )
        size = page.viewport_size
        page.set_viewport_size({"width": size["width"], "height": max(size["height"], min(int(height), 4000))})
        page.wait_for_timeout(400)
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path))
        page.set_viewport_size(size)
        return path

    return shoot
