"""docker-compose.deploy.yml started for real on the project's Docker Engine, with the images
docker-compose.build.yml builds from this checkout and the override of
`tests/support/compose.py::deploy_override_for` (stand-in images, the proxy on ephemeral
127.0.0.1 ports, no Grafana, the first model from a folder). Everything a visitor or an
operator does goes through the real proxy container (Caddy, proxy/Caddyfile) over HTTPS; the
network checks are real TCP connections from inside the containers.

One module-scoped stack (minutes to start), several tests on it.
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import ARTIFACTS_DIR, TEST_RUN_DIR
from tests.retrain.test_loop import DAG_ID
from tests.support import compose as c
from tests.support.procs import wait_until

pytestmark = [pytest.mark.compose, pytest.mark.slow, pytest.mark.timeout(1800)]

# Services of the deploy file that run all the time here (Grafana is left out: no image).
LONG_RUNNING = {
    "postgres", "mlflow", "airflow-api-server", "airflow-scheduler", "airflow-dag-processor",
    "backend", "streamlit", "proxy", "prometheus",
}  # fmt: skip
# What Streamlit (on `public` only) must never reach, and where each listens.
PRIVATE = {"postgres": 5432, "mlflow": 5000, "airflow-api-server": 8080, "prometheus": 9090}

# Run inside a container: a TCP connection to each (host, port) at once; prints true/false each.
PROBE = """
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
def tcp(target):
    try:
        socket.create_connection(tuple(target), 3).close()
        return True
    except OSError:
        return False
targets = json.loads(sys.argv[1])
with ThreadPoolExecutor(len(targets)) as pool:
    print(json.dumps(list(pool.map(tcp, targets))))
"""


@dataclass
class DeployStack:
    project: c.ComposeProject
    url: str  # https://localhost:PORT, the proxy's 443
    http_url: str  # http://localhost:PORT, the proxy's 80
    cert: Path

    def secret(self, name: str) -> str:
        return self.project.env[name]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=str(self.cert), timeout=60)

    def reaches(self, source: str, targets: list[tuple[str, int]]) -> dict[tuple[str, int], bool]:
        """TCP connections from inside `source`'s container (python in the project's images)."""
        args = ["docker", "exec", self.project.container(source), "python", "-c", PROBE, json.dumps(targets)]
        out = subprocess.run(args, env=self.project.env, capture_output=True, text=True, timeout=60, check=True)
        return dict(zip(targets, json.loads(out.stdout), strict=True))

    def proxy_reaches(self, host: str, port: int) -> bool:
        """The proxy image has no Python: its `nc`, as its health check uses."""
        args = ["docker", "exec", self.project.container("proxy"), "nc", "-z", "-w", "3", host, str(port)]
        return subprocess.run(args, env=self.project.env, capture_output=True, timeout=60).returncode == 0

    def addresses(self, service: str) -> list[str]:
        info = c.inspect_json(self.project.env, "inspect", self.project.container(service))[0]
        return [n["IPAddress"] for n in info["NetworkSettings"]["Networks"].values() if n["IPAddress"]]


@pytest.fixture(scope="module")
def deploy_stack(model_dir: Path) -> Iterator[DeployStack]:
    phases = c.Phases("deploy stack test")
    engine, images, base = c.prepared_engine(phases)
    project = c.ComposeProject.create_deploy(TEST_RUN_DIR / "deploy-stack", engine, images, base, model_dir)
    with c.torn_down(project, phases, ARTIFACTS_DIR / "deploy-stack.log"):
        project.build()
        phases.done("four images (docker-compose.build.yml)")
        project.compose("up", "-d", "--wait", "--wait-timeout", "600", timeout=900)
        phases.done("every service healthy")
        https, http = project.port("proxy", 443), project.port("proxy", 80)
        cert = project.workdir / "tls" / "tls.crt"
        yield DeployStack(project, f"https://localhost:{https}", f"http://localhost:{http}", cert)


def test_every_service_healthy_and_only_the_proxy_published_on_loopback(deploy_stack: DeployStack) -> None:
    project = deploy_stack.project
    states = [json.loads(line) for line in project.compose("ps", "-a", "--format", "json").splitlines() if line.strip()]
    health = {s["Service"]: s["Health"] for s in states if s["State"] == "running"}
    assert set(health) == LONG_RUNNING and set(health.values()) == {"healthy"}, health
    one_offs = {s["Service"]: (s["State"], s["ExitCode"]) for s in states if s["State"] != "running"}
    assert one_offs == {"secrets-check": ("exited", 0), "airflow-init": ("exited", 0)}, one_offs
    # Published ports: the proxy's two, here on 127.0.0.1 only.
    published = {}
    for s in states:
        info = c.inspect_json(project.env, "inspect", s["ID"])[0]
        bindings = info["HostConfig"]["PortBindings"] or {}
        if bindings:
            published[s["Service"]] = {port: [b["HostIp"] for b in bs] for port, bs in bindings.items()}
    assert published == {"proxy": {"80/tcp": ["127.0.0.1"], "443/tcp": ["127.0.0.1"]}}, published


def test_http_redirects_to_https(deploy_stack: DeployStack) -> None:
    r = httpx.get(f"{deploy_stack.http_url}/system?x=1", follow_redirects=False, timeout=30)
    assert r.status_code in (301, 308), r.status_code
    # Clients see 443 in production, so the redirect names no port.
    assert r.headers["location"] == "https://localhost/system?x=1"


def test_streamlit_at_the_root_and_its_websocket_through_the_proxy(deploy_stack: DeployStack) -> None:
    from websockets.sync.client import connect

    with deploy_stack.client() as client:
        home = client.get("/")
        assert home.status_code == 200 and "<title>Streamlit</title>" in home.text
        assert home.headers["strict-transport-security"].startswith("max-age=")
        assert client.get("/_stcore/health").text == "ok"
    context = ssl.create_default_context(cafile=str(deploy_stack.cert))
    ws_url = deploy_stack.url.replace("https://", "wss://") + "/_stcore/stream"
    with connect(ws_url, ssl=context, origin=deploy_stack.url, open_timeout=30) as ws:
        assert ws.response.status_code == 101


def test_backend_api_under_api_with_its_docs(deploy_stack: DeployStack, sample_images) -> None:
    with deploy_stack.client() as client:
        ready = client.get("/api/ready")
        assert ready.status_code == 200 and ready.json()["status"] == "ready", ready.text
        photo = sample_images["paper"][0]
        r = client.post("/api/predict", params={"store": "false"}, files={"file": (photo.name, photo.read_bytes())})
        assert r.status_code == 200 and r.json()["label"] in ("rock", "paper", "scissors"), r.text
        assert client.get("/api/metrics").status_code == 404, "the backend's metrics stay internal"
        assert client.get("/api/predictions").status_code == 401, "per-request history needs the operator login"
        operator = {"Authorization": f"Bearer {deploy_stack.secret('OPERATOR_TOKEN')}"}
        assert client.get("/api/predictions", headers=operator).status_code == 200
        # The docs page asks for its schema where the proxy serves it (BACKEND_ROOT_PATH=/api).
        docs = client.get("/api/docs")
        assert docs.status_code == 200, docs.status_code
        found = re.search(r"url: '([^']+)'", docs.text)
        assert found, docs.text[:500]
        schema = client.get(found.group(1))
        # Any other path is Streamlit's page (200, HTML): the status alone would prove nothing.
        assert schema.status_code == 200, (found.group(1), schema.status_code)
        assert schema.headers["content-type"].startswith("application/json"), (found.group(1), schema.text[:200])
        assert "/predict" in schema.json()["paths"] and schema.json()["servers"] == [{"url": "/api"}]


def test_airflow_under_its_path_with_its_own_login(deploy_stack: DeployStack) -> None:
    with deploy_stack.client() as client:
        ui = client.get("/airflow/")
        assert ui.status_code == 200 and '<base href="/airflow/"' in ui.text
        assert client.get("/airflow/api/v2/dags").status_code == 401
        wrong = client.post("/airflow/auth/token", json={"username": "admin", "password": "wrong"})
        assert wrong.status_code == 401
        token = client.post(
            "/airflow/auth/token", json={"username": "admin", "password": deploy_stack.secret("AIRFLOW_ADMIN_PASSWORD")}
        )
        assert token.status_code == 201, token.text
        bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
        dags = client.get("/airflow/api/v2/dags", headers=bearer)
        assert dags.status_code == 200, dags.text[:300]

        def dag_listed() -> bool:
            listed = client.get("/airflow/api/v2/dags", headers=bearer).json()["dags"]
            return DAG_ID in {d["dag_id"] for d in listed}

        wait_until(dag_listed, 60, "the dag-processor container to parse the DAG")


def test_mlflow_under_its_path_with_its_own_login(deploy_stack: DeployStack) -> None:
    search = "/mlflow/ajax-api/2.0/mlflow/experiments/search?max_results=5"
    admin = ("admin", deploy_stack.secret("MLFLOW_ADMIN_PASSWORD"))
    with deploy_stack.client() as client:
        assert client.get(search).status_code == 401
        assert client.get(search, auth=("admin", "wrong")).status_code == 401
        r = client.get(search, auth=admin)
        assert r.status_code == 200 and r.json()["experiments"], r.text
        ui = client.get("/mlflow/", auth=admin)
        assert ui.status_code == 200 and "<html" in ui.text.lower()


def test_prometheus_behind_the_proxys_login_scrapes_the_backend(deploy_stack: DeployStack) -> None:
    operator = ("operator", deploy_stack.secret("OPS_PROXY_PASSWORD"))
    with deploy_stack.client() as client:
        assert client.get("/prometheus/-/healthy").status_code == 401
        assert client.get("/prometheus/-/healthy", auth=("operator", "wrong")).status_code == 401
        assert client.get("/prometheus/-/healthy", auth=operator).status_code == 200

        def backend_up() -> bool:
            targets = client.get("/prometheus/api/v1/targets", auth=operator).json()["data"]["activeTargets"]
            return any(t["labels"]["job"] == "backend" and t["health"] == "up" for t in targets)

        # Prometheus (ops) scrapes the backend over the internal network every 15 s.
        wait_until(backend_up, 60, "Prometheus to scrape the backend container")


def test_streamlit_cannot_open_a_connection_to_postgres_mlflow_or_airflow(deploy_stack: DeployStack) -> None:
    targets = [("backend", 8000), ("proxy", 443)]
    for service, port in PRIVATE.items():
        targets.append((service, port))
        targets += [(address, port) for address in deploy_stack.addresses(service)]
    reached = deploy_stack.reaches("streamlit", targets)
    assert reached.pop(("backend", 8000)) and reached.pop(("proxy", 443)), "streamlit must reach the backend and proxy"
    assert not any(reached.values()), {t: ok for t, ok in reached.items() if ok}
    # The same probe from the backend (public, app and ops) does reach them: the probe can succeed.
    assert all(deploy_stack.reaches("backend", list(PRIVATE.items())).values())


def test_the_proxy_reaches_what_it_serves_and_not_the_database(deploy_stack: DeployStack) -> None:
    for service, port in {"streamlit": 8501, "backend": 8000, **PRIVATE}.items():
        if service != "postgres":
            assert deploy_stack.proxy_reaches(service, port), f"the proxy cannot reach {service}"
    assert not deploy_stack.proxy_reaches("postgres", 5432)
    for address in deploy_stack.addresses("postgres"):
        assert not deploy_stack.proxy_reaches(address, 5432), f"the proxy reached postgres at {address}"
