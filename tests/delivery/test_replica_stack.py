"""Backend replicas in docker-compose.deploy.yml for real: BACKEND_REPLICAS=3 behind the
proxy container (Caddy, proxy/Caddyfile with BACKEND_DISCOVERY=dns) and scraped one by one by
Prometheus (dns_sd_configs on the service name). Everything goes through the proxy over HTTPS,
as a visitor's or an operator's requests do.

The stack is the deploy stack test's (the same images, stand-ins and override,
`tests/support/compose.py::deploy_override_for`), started without Airflow, which nothing here
needs, plus what a promotion needs: an S3 stand-in (moto, from the MLflow image) for MLflow's
artifacts and `MODEL_POLL_SECONDS=5` on the backend. The replicas start on the session model
from a folder, as in the deploy stack test; the test then registers versions in the real MLflow
(through the proxy, as the operator) and moves `@champion`.

One module-scoped stack; the tests run in file order and the last one stops and kills replicas.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import httpx
import pytest

from tests.conftest import ARTIFACTS_DIR, TEST_RUN_DIR
from tests.support import compose as c
from tests.support.procs import wait_until

pytestmark = [pytest.mark.compose, pytest.mark.slow, pytest.mark.timeout(1800)]

REPLICAS = 3
POLL_S = 5.0
# On top of the poll: each replica's download through MLflow's one worker (one CPU; the three
# replicas' downloads queue there) and its load + warm-up, on 2 cores shared with other work.
# Measured here 23-27 s past the poll; without the poll a replica never gets the new version.
LOAD_ALLOWANCE_S = 45.0
MODEL_NAME = "rps-classifier"
# Services started: what the proxy, the backend and Prometheus need; no Airflow.
STARTED = ("proxy", "prometheus", "moto")
MOTO_HEALTH = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9000/moto-api/data.json', timeout=4)"
CREATE_BUCKET = (
    "import sys, boto3; boto3.client('s3', endpoint_url='http://127.0.0.1:9000', region_name='us-east-1',"
    " aws_access_key_id='moto', aws_secret_access_key='moto').create_bucket(Bucket=sys.argv[1])"
)


@dataclass
class ReplicaStack:
    project: c.ComposeProject
    url: str  # https://localhost:PORT, the proxy's 443
    cert: Path

    def secret(self, name: str) -> str:
        return self.project.env[name]

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=str(self.cert), timeout=60, **kwargs)

    def replicas(self) -> dict[str, dict]:
        """Each running backend container by its host name (what /ready reports as `replica`)."""
        found = {}
        for cid in self.project.containers("backend"):
            info = c.inspect_json(self.project.env, "inspect", cid)[0]
            networks = {
                name.split("_", 1)[1]: n["IPAddress"] for name, n in info["NetworkSettings"]["Networks"].items()
            }
            found[info["Config"]["Hostname"]] = {"id": cid, "networks": networks}
        return found

    def prometheus_targets(self) -> list[dict]:
        operator = ("operator", self.secret("OPS_PROXY_PASSWORD"))
        with self.client() as client:
            active = client.get("/prometheus/api/v1/targets", auth=operator).json()["data"]["activeTargets"]
        return [t for t in active if t["labels"]["job"] == "backend"]

    def prometheus_value(self, query: str) -> float | None:
        operator = ("operator", self.secret("OPS_PROXY_PASSWORD"))
        with self.client() as client:
            result = client.get("/prometheus/api/v1/query", params={"query": query}, auth=operator).json()
        series = result["data"]["result"]
        return float(series[0]["value"][1]) if series else None


@pytest.fixture(scope="module")
def replica_stack(model_dir: Path) -> Iterator[ReplicaStack]:
    phases = c.Phases("replica stack test")
    engine, images, base = c.prepared_engine(phases)
    workdir = TEST_RUN_DIR / "replica-stack"

    def services(tag: str) -> dict[str, dict]:
        return {
            # MLflow's artifacts in an S3 stand-in on the internal network, instead of AWS.
            "moto": {
                "image": f"localhost/rps-mlflow:{tag}",
                "entrypoint": ["moto_server", "-H", "0.0.0.0", "-p", "9000"],
                "networks": ["app"],
                "healthcheck": {"test": ["CMD", "python", "-c", MOTO_HEALTH], "interval": "3s", "retries": 20},
            },
            "mlflow": {"environment": {"S3_ENDPOINT_URL": "http://moto:9000"}},
            "backend": {"environment": {"MODEL_POLL_SECONDS": str(POLL_S)}},
        }

    project = c.ComposeProject.create_deploy(
        workdir, engine, images, base, model_dir, variables={"BACKEND_REPLICAS": str(REPLICAS)}, services=services
    )
    with c.torn_down(project, phases, ARTIFACTS_DIR / "replica-stack.log"):
        project.build()
        phases.done("four images (docker-compose.build.yml)")
        project.compose("up", "-d", "--wait", "--wait-timeout", "600", *STARTED, timeout=900)
        phases.done(f"proxy, Prometheus, MLflow and {REPLICAS} backends healthy")
        c._run(
            ["docker", "exec", project.container("moto"), "python", "-c", CREATE_BUCKET, project.env["S3_BUCKET"]],
            project.env,
            60,
        )
        stack = ReplicaStack(project, f"https://localhost:{project.port('proxy', 443)}", workdir / "tls" / "tls.crt")
        yield stack


def _ready_answers(stack: ReplicaStack, n: int) -> list[dict]:
    with stack.client() as client:
        answers = []
        for _ in range(n):
            r = client.get("/api/ready")
            assert r.status_code == 200, r.text
            answers.append(r.json())
        return answers


def test_requests_through_the_proxy_reach_every_replica(replica_stack: ReplicaStack, sample_images) -> None:
    replicas = replica_stack.replicas()
    assert len(replicas) == REPLICAS, replicas
    # A fresh connection per request would show it too; one client (keep-alive to the proxy)
    # shows that the proxy balances per request, not per client connection.
    seen = Counter(a["replica"] for a in _ready_answers(replica_stack, 60))
    print(f"\n/api/ready answered by: {dict(seen)}")
    assert set(seen) == set(replicas), (seen, set(replicas))
    with replica_stack.client() as client:
        photo = sample_images["rock"][0]
        for _ in range(6):
            r = client.post("/api/predict", params={"store": "false"}, files={"file": (photo.name, photo.read_bytes())})
            assert r.status_code == 200, r.text


def test_prometheus_scrapes_every_replica_as_its_own_target(replica_stack: ReplicaStack) -> None:
    expected = {f"{r['networks']['ops']}:8000" for r in replica_stack.replicas().values()}

    def all_up() -> bool:
        targets = replica_stack.prometheus_targets()
        return {t["labels"]["instance"] for t in targets if t["health"] == "up"} == expected

    started = time.monotonic()
    wait_until(all_up, 90, f"Prometheus to scrape the {REPLICAS} backend containers by DNS")
    print(
        f"\n{REPLICAS} backend targets up {time.monotonic() - started:.1f} s after the first look: {sorted(expected)}"
    )
    assert len(replica_stack.prometheus_targets()) == REPLICAS

    # Every replica reports the same database-derived gauge: a sum counts it N times, max once.
    def threshold_everywhere() -> bool:
        return replica_stack.prometheus_value('count(rps_retrain_threshold{job="backend"})') == REPLICAS

    wait_until(threshold_everywhere, 60, "every replica's gauges to be scraped")
    one = replica_stack.prometheus_value('max(rps_retrain_threshold{job="backend"})')
    total = replica_stack.prometheus_value('sum(rps_retrain_threshold{job="backend"})')
    assert one and total == REPLICAS * one, (one, total)


def _register(client, experiment: str, model_dir: Path) -> str:
    """Log the serving files as a run's `serving/` folder and register a version (what the
    training stage does, without training)."""
    run = client.create_run(experiment)
    client.log_artifacts(run.info.run_id, str(model_dir), artifact_path="serving")
    client.set_terminated(run.info.run_id)
    return client.create_model_version(MODEL_NAME, f"runs:/{run.info.run_id}/serving", run_id=run.info.run_id).version


def _watch_convergence(stack: ReplicaStack, version: str, since: float, bound_s: float) -> dict[str, float]:
    """Poll /api/ready through the proxy until every replica has answered `version`; the
    seconds from `since` at which each first did. A replica that answers the old version after
    the new one fails the test: each swap is atomic."""
    names = set(stack.replicas())
    converged: dict[str, float] = {}
    with stack.client() as client:
        while set(converged) != names and time.monotonic() - since < bound_s:
            answer = client.get("/api/ready").json()
            replica, served = answer["replica"], answer["model_version"]
            if served == version:
                converged.setdefault(replica, time.monotonic() - since)
            else:
                assert replica not in converged, f"{replica} served {served} after {version}"
            time.sleep(0.05)
    return converged


def test_every_replica_serves_a_new_champion_within_the_poll_interval(
    replica_stack: ReplicaStack, model_dir: Path, sample_images
) -> None:
    from mlflow import MlflowClient

    admin = {
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": replica_stack.secret("MLFLOW_ADMIN_PASSWORD"),
        "MLFLOW_TRACKING_SERVER_CERT_PATH": str(replica_stack.cert),
    }
    failures: list[tuple[int, str]] = []
    stop = threading.Event()
    photo = sample_images["paper"][0]

    def traffic() -> None:
        with replica_stack.client() as client:
            while not stop.is_set():
                r = client.post(
                    "/api/predict", params={"store": "false"}, files={"file": (photo.name, photo.read_bytes())}
                )
                if r.status_code != 200:
                    failures.append((r.status_code, r.text[:200]))
                time.sleep(0.2)

    with mock.patch.dict(os.environ, admin):
        client = MlflowClient(f"{replica_stack.url}/mlflow")
        experiment = client.create_experiment("replicas")
        client.create_registered_model(MODEL_NAME)
        first, second = _register(client, experiment, model_dir), _register(client, experiment, model_dir)
        worker = threading.Thread(target=traffic, daemon=True)
        worker.start()
        try:
            # 1. The first champion: only the replicas' polls can bring it.
            moved = time.monotonic()
            client.set_registered_model_alias(MODEL_NAME, "champion", first)
            by_poll = _watch_convergence(replica_stack, f"v{first}", moved, POLL_S + LOAD_ALLOWANCE_S + 30)
            # 2. A promotion as the DAG's last task makes it: the alias moves, then one
            # POST /admin/reload, which the proxy gives to one replica; the others poll.
            moved = time.monotonic()
            client.set_registered_model_alias(MODEL_NAME, "champion", second)
            with replica_stack.client() as http:
                token = {"Authorization": f"Bearer {replica_stack.secret('ADMIN_TOKEN')}"}
                reload = http.post("/api/admin/reload", headers=token)
            assert reload.status_code == 200, reload.text
            after_reload = time.monotonic() - moved
            by_reload = _watch_convergence(replica_stack, f"v{second}", moved, POLL_S + LOAD_ALLOWANCE_S + 30)
        finally:
            stop.set()
            worker.join(130)

    def show(times: dict[str, float]) -> str:
        return ", ".join(f"{name}: {s:.2f} s" for name, s in sorted(times.items(), key=lambda kv: kv[1]))

    print(f"\nload average {os.getloadavg()[0]:.1f}")
    print(f"@champion -> v{first}, polls only (MODEL_POLL_SECONDS={POLL_S:g}): {show(by_poll)}")
    print(f"@champion -> v{second}, one /admin/reload ({after_reload:.2f} s) then polls: {show(by_reload)}")
    assert len(by_poll) == REPLICAS and max(by_poll.values()) <= POLL_S + LOAD_ALLOWANCE_S, show(by_poll)
    assert len(by_reload) == REPLICAS and max(by_reload.values()) <= POLL_S + LOAD_ALLOWANCE_S, show(by_reload)
    # The reload answered once the replica it reached had swapped: that one served first.
    assert min(by_reload.values()) <= after_reload + 1.0, (after_reload, show(by_reload))
    assert failures == [], failures


def test_a_stopped_or_killed_replica_loses_no_request_once_the_proxy_notices(
    replica_stack: ReplicaStack, sample_images
) -> None:
    photo = sample_images["scissors"][0]
    outcomes: list[tuple[float, int | str, str]] = []  # (monotonic time, status or error, body)
    stop = threading.Event()

    def traffic() -> None:
        with replica_stack.client() as client:
            while not stop.is_set():
                try:
                    r = client.post(
                        "/api/predict", params={"store": "false"}, files={"file": (photo.name, photo.read_bytes())}
                    )
                    outcomes.append((time.monotonic(), r.status_code, r.text[:120] if r.status_code != 200 else ""))
                except httpx.HTTPError as exc:
                    outcomes.append((time.monotonic(), type(exc).__name__, str(exc)[:120]))

    reads: list[int | str] = []  # GET /api/ready meanwhile: no body, so the proxy may retry it

    def read_traffic() -> None:
        with replica_stack.client() as client:
            while not stop.is_set():
                try:
                    reads.append(client.get("/api/ready").status_code)
                except httpx.HTTPError as exc:
                    reads.append(type(exc).__name__)
                time.sleep(0.05)

    def failed_after(t0: float) -> list[tuple[float, int | str, str]]:
        return [(round(t - t0, 2), o, body) for t, o, body in outcomes if t >= t0 and o != 200]

    workers = [threading.Thread(target=traffic, daemon=True) for _ in range(2)]
    workers.append(threading.Thread(target=read_traffic, daemon=True))
    for w in workers:
        w.start()
    try:
        time.sleep(3)
        before = len(outcomes)
        replicas = replica_stack.replicas()
        stopped, killed = sorted(replicas)[:2]
        # docker stop: SIGTERM, uvicorn finishes what it holds and closes.
        t_stop = time.monotonic()
        subprocess.run(
            ["docker", "stop", replicas[stopped]["id"]], env=replica_stack.project.env, check=True, timeout=60
        )
        stop_took = time.monotonic() - t_stop
        time.sleep(8)
        lost_on_stop = failed_after(t_stop)
        # docker kill: SIGKILL, whatever the replica held is lost; new requests must not be.
        t_kill = time.monotonic()
        subprocess.run(
            ["docker", "kill", replicas[killed]["id"]], env=replica_stack.project.env, check=True, timeout=60
        )
        time.sleep(8)
    finally:
        stop.set()
        for w in workers:
            w.join(130)
    lost_on_kill = failed_after(t_kill)
    during = Counter(o for _, o, _ in outcomes[before:])
    restarts = c._run(
        ["docker", "inspect", "--format", "{{.RestartCount}} {{.State.Status}}", replicas[killed]["id"]],
        replica_stack.project.env,
        60,
    ).strip()
    print(
        f"\nrequests from the stop on: {dict(during)}; docker stop took {stop_took:.1f} s "
        f"(lost before the proxy noticed: {len(lost_on_stop)}, after the kill: {len(lost_on_kill)}); "
        f"the killed replica now (restarts, state): {restarts}\n"
        f"failed after the stop: {lost_on_stop}\nfailed after the kill: {lost_on_kill}\n"
        f"GET /api/ready meanwhile: {dict(Counter(reads))}"
    )
    assert len(outcomes) - before > 20, "too little traffic to show anything"
    # The proxy notices a replica gone once Docker's DNS has dropped it (the container exited:
    # `docker stop` returned), its next lookup (1 s) and one dial timeout (2 s) later. Before that,
    # requests routed to the stopping replica after its listener closed fail with 502: Caddy
    # (2.6.2 here, up to 2.11.1) cannot retry a POST after a refused connection (docs/scale.md).
    noticed_s = stop_took + 3.0
    assert [f for f in lost_on_stop if f[0] > noticed_s] == [], (noticed_s, lost_on_stop)
    served_after = [o for t, o, _ in outcomes if t_stop + noticed_s < t < t_kill]
    assert len(served_after) >= 5 and set(served_after) == {200}, served_after
    # A killed replica's in-flight requests are lost; once the proxy notices, none.
    assert [f for f in lost_on_kill if f[0] > 3.0] == [], lost_on_kill
    # A request without a body is retried on another replica: not one GET failed.
    assert len(reads) > 20 and set(reads) == {200}, Counter(reads)

    # Only running replicas answer (a killed one may be back: `restart: unless-stopped`); Prometheus
    # drops the stopped replica's target with its DNS record.
    running = set(replica_stack.replicas())
    assert stopped not in running and running, running
    assert {a["replica"] for a in _ready_answers(replica_stack, 10)} <= running
    gone = f"{replicas[stopped]['networks']['ops']}:8000"
    wait_until(
        lambda: gone not in {t["labels"]["instance"] for t in replica_stack.prometheus_targets()},
        60,
        "Prometheus to drop the stopped replica's target",
    )
