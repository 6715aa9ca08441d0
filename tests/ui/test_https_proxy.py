"""The one HTTPS entrypoint (proxy/Caddyfile in Debian's Caddy) in front of the real backend,
Streamlit and Prometheus: redirects, paths, the operator login, and the UI's WebSocket and the
live page's WebRTC signalling in Chromium."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Backend
from tests.support import db as dbs
from tests.support.https_proxy import OPERATOR, HttpsProxy, start_https_proxy
from tests.support.procs import free_port, start, wait_http, wait_until
from tests.support.stack import start_mlflow
from tests.ui.conftest import StreamlitApp, start_streamlit, wait_for_app
from tests.ui.test_pages_in_browser import live_stats

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("the Debian package prometheus is not installed (make install)")
    work = tmp_path_factory.mktemp("prometheus")
    (work / "prometheus.yml").write_text("global:\n  scrape_interval: 15s\n")
    port = free_port()
    args = [
        binary,
        f"--config.file={work / 'prometheus.yml'}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--storage.tsdb.path={work / 'data'}",
        "--web.external-url=/prometheus/",
        "--web.route-prefix=/",
    ]
    proc = start(f"prometheus-{port}", args, {}, work)
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", 30, proc)
        yield f"127.0.0.1:{port}"
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def mlflow_admin(tmp_path_factory) -> Iterator[tuple[str, str]]:
    """MLflow with its basic-auth app, as deployed: (host:port, admin password)."""
    password = secrets.token_hex(16)
    service = start_mlflow(
        tmp_path_factory.mktemp("proxied-mlflow"),
        env={
            "MLFLOW_AUTH": "true",
            "MLFLOW_ADMIN_PASSWORD": password,
            "MLFLOW_READER_PASSWORD": secrets.token_hex(16),
            "MLFLOW_WRITER_PASSWORD": secrets.token_hex(16),
        },
    )
    try:
        yield service.url.removeprefix("http://"), password
    finally:
        service.stop()


@pytest.fixture(scope="module")
def airflow_admin(tmp_path_factory) -> Iterator[tuple[str, str]]:
    """Airflow's api-server (airflow/entrypoint.sh) served under /airflow/ as deployed:
    (host:port, admin password). No scheduler: only the UI and API are under test here."""
    work = tmp_path_factory.mktemp("proxied-airflow")
    port, name, password = free_port(), dbs.unique_name("airflow_px"), secrets.token_hex(16)
    url = dbs.create_db(name)
    env = {
        "AIRFLOW_HOME": str(work / "home"),
        "AIRFLOW_PORT": str(port),
        "AIRFLOW_DATABASE_URL": url.replace("postgresql://", "postgresql+psycopg2://", 1),
        "AIRFLOW_ADMIN_PASSWORD": password,
        "AIRFLOW_PASSWORD": secrets.token_hex(16),
        "AIRFLOW_JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW_UI_URL": "https://localhost/airflow",
    }
    procs = []
    try:
        init = start(f"airflow-init-{port}", ["bash", "airflow/entrypoint.sh", "init"], env, work)
        procs.append(init)
        assert init.popen.wait(300) == 0, init.log()
        api = start(f"airflow-api-{port}", ["bash", "airflow/entrypoint.sh", "api-server"], env, work)
        procs.append(api)
        wait_http(f"http://127.0.0.1:{port}/airflow/api/v2/monitor/health", 120, api)
        yield f"127.0.0.1:{port}", password
    finally:
        for proc in procs:
            proc.stop()
        dbs.drop_db(name)


@pytest.fixture(scope="module")
def behind_proxy(
    ui_backend: Backend,
    prometheus_url: str,
    mlflow_admin: tuple[str, str],
    airflow_admin: tuple[str, str],
    tmp_path_factory,
) -> Iterator[tuple[HttpsProxy, StreamlitApp]]:
    """Streamlit plain HTTP on 127.0.0.1 (the proxy terminates TLS), trusting the proxy's
    X-Forwarded-For like the deployed backend does."""
    app = start_streamlit(ui_backend.url, tmp_path_factory.mktemp("proxied-streamlit"))
    upstreams = {
        "STREAMLIT": app.url.removeprefix("http://"),
        "BACKEND": ui_backend.url.removeprefix("http://"),
        "PROMETHEUS": prometheus_url,
        "MLFLOW": mlflow_admin[0],
        "AIRFLOW": airflow_admin[0],
    }
    try:
        proxy = start_https_proxy(Path(tmp_path_factory.mktemp("caddy")), upstreams, secrets.token_hex(16))
    except BaseException:
        app.proc.stop()
        raise
    try:
        yield proxy, app
    finally:
        proxy.proc.stop()
        app.proc.stop()


def test_http_redirects_to_https(behind_proxy) -> None:
    proxy, _ = behind_proxy
    r = httpx.get(f"{proxy.http_url}/system?x=1", follow_redirects=False)
    assert r.status_code in (301, 308)
    assert r.headers["location"] == f"{proxy.url}/system?x=1"


def test_paths_and_logins(behind_proxy) -> None:
    proxy, _ = behind_proxy
    with proxy.client() as c:
        home = c.get("/")
        assert home.status_code == 200 and "<title>Streamlit</title>" in home.text
        assert home.headers["strict-transport-security"].startswith("max-age=")
        assert c.get("/api/ready").json()["status"] == "ready"
        assert c.get("/api/metrics").status_code == 404, "the backend's metrics stay internal"
        assert c.get("/api/predictions").status_code == 401, "per-request history needs the operator login"
        assert c.get("/prometheus/-/healthy").status_code == 401
        wrong = c.get("/prometheus/-/healthy", auth=(OPERATOR, "wrong"))
        assert wrong.status_code == 401
        ok = c.get("/prometheus/-/healthy", auth=(OPERATOR, proxy.operator_password))
        assert ok.status_code == 200
        graph = c.get("/prometheus/", auth=(OPERATOR, proxy.operator_password), follow_redirects=True)
        assert graph.status_code == 200 and "/prometheus/" in graph.text


def test_mlflow_under_its_path_with_its_own_login(behind_proxy, mlflow_admin) -> None:
    proxy, _ = behind_proxy
    _, password = mlflow_admin
    search = "/mlflow/ajax-api/2.0/mlflow/experiments/search?max_results=5"
    with proxy.client() as c:
        assert c.get(search).status_code == 401
        r = c.get(search, auth=("admin", password))
        assert r.status_code == 200 and r.json()["experiments"][0]["name"] == "Default"
        ui = c.get("/mlflow/", auth=("admin", password))
        assert ui.status_code == 200 and "<html" in ui.text.lower()


def test_airflow_under_its_path_with_its_own_login(behind_proxy, airflow_admin) -> None:
    proxy, _ = behind_proxy
    _, password = airflow_admin
    with proxy.client() as c:
        ui = c.get("/airflow/")
        assert ui.status_code == 200 and '<base href="/airflow/"' in ui.text
        assert c.get("/airflow/api/v2/dags").status_code == 401
        assert c.post("/airflow/auth/token", json={"username": "admin", "password": "wrong"}).status_code == 401
        token = c.post("/airflow/auth/token", json={"username": "admin", "password": password})
        assert token.status_code == 201
        dags = c.get("/airflow/api/v2/dags", headers={"Authorization": f"Bearer {token.json()['access_token']}"})
        assert dags.status_code == 200


def test_ui_websocket_and_live_webrtc_signalling_through_the_proxy(browser, behind_proxy, ui_backend) -> None:
    proxy, app = behind_proxy
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, ignore_https_errors=True)
    context.set_default_timeout(30_000)
    page = context.new_page()
    try:
        page.goto(f"{proxy.url}/live")
        wait_for_app(page)  # rendered through Streamlit's WebSocket, upgraded by the proxy
        component = page.frame_locator("iframe").first
        component.get_by_role("button", name="START").click()
        page.wait_for_function(
            "() => { const f = document.querySelector('iframe'); const v = f && f.contentDocument"
            " && f.contentDocument.querySelector('video'); return v && v.videoWidth > 0; }",
            timeout=45_000,
        )
        wait_until(lambda: live_stats(app.log()).get("frames", 0) >= 10, 45, "10 annotated frames", app.proc)
        assert live_stats(app.log())["errors"] == 0
    finally:
        context.close()
