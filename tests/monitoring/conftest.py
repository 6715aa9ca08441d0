"""One monitored stack per test module: two real backends on one throwaway database (one
uvicorn worker, and two workers in prometheus-client multiprocess mode), real traffic
against both, and a real Prometheus scraping them every second with the project's rules."""

from __future__ import annotations

import concurrent.futures
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
import yaml
from prometheus_client.multiprocess import MultiProcessCollector
from psycopg.rows import dict_row

from tests.conftest import model_env
from tests.support import db as dbs
from tests.support.auth import operator_headers
from tests.support.procs import PROJECT_ROOT, Proc, free_port, start, wait_http

MONITORING = PROJECT_ROOT / "monitoring"
RULE_FILES = sorted((MONITORING / "rules").glob("*.yml"))
DASHBOARDS = sorted((MONITORING / "grafana" / "dashboards").glob("*.json"))


def require_prometheus() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("the Debian package prometheus is not installed (make install)")
    return binary


@dataclass
class Backend:
    url: str
    proc: Proc
    workers: int
    multiproc_dir: Path | None

    @property
    def target(self) -> str:
        return self.url.removeprefix("http://")


@dataclass
class Traffic:
    """What the module's traffic sent to one backend."""

    predictions: list[dict] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)
    feedback: int = 0


@pytest.fixture(scope="module")
def monitored_db(template_db: str) -> Iterator[str]:
    name = dbs.unique_name("rps_mon")
    url = dbs.create_db(name, template=template_db)
    yield url
    dbs.drop_db(name)


def _start_backend(db_url: str, model_dir: Path, data_dir: Path, run_dir: Path, workers: int) -> Backend:
    port = free_port()
    multiproc = run_dir / f"metrics-{port}" if workers > 1 else None
    env = {
        **model_env(data_dir, run_dir / "artifacts"),
        "MODEL_DIR": str(model_dir),
        "DATABASE_URL": db_url,
        "BACKEND_PORT": str(port),
        "BACKEND_URL": f"http://127.0.0.1:{port}",
        "BACKEND_WORKERS": str(workers),
        "RETRAIN_THRESHOLD": "3",
    }
    if multiproc is not None:
        # Set here (it must exist) so the test can read the workers' files; main.run empties it.
        multiproc.mkdir(parents=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc)
    proc = start(f"backend-{port}-w{workers}", [sys.executable, "main.py"], env, run_dir / "logs")
    return Backend(f"http://127.0.0.1:{port}", proc, workers, multiproc)


@pytest.fixture(scope="module")
def backends(
    monitored_db: str, model_dir: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Backend]]:
    """A one-worker and a two-worker backend, started side by side."""
    run_dir = tmp_path_factory.mktemp("monitored")
    started = [_start_backend(monitored_db, model_dir, data_dir, run_dir, w) for w in (1, 2)]
    try:
        for b in started:
            wait_http(f"{b.url}/ready", 90, b.proc)
        yield started
    finally:
        for b in started:
            b.proc.stop()


def _predict(url: str, path: Path) -> httpx.Response:
    # A fresh connection per request, so a multi-worker backend spreads them over workers.
    return httpx.post(
        f"{url}/predict", files={"file": (path.name, path.read_bytes(), "application/octet-stream")}, timeout=30
    )


def predictions_per_worker(backend: Backend) -> dict[int, float]:
    """Predictions each worker of a multiprocess backend counted, from its own files."""
    out = {}
    for f in sorted(Path(backend.multiproc_dir).glob("counter_*.db")):
        for metric in MultiProcessCollector.merge([str(f)]):
            if metric.name == "rps_predictions":
                out[int(f.stem.split("_")[-1])] = sum(s.value for s in metric.samples if s.name.endswith("_total"))
    return out


def _predict_all(backend: Backend, paths: list[Path], traffic: Traffic) -> None:
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for r in pool.map(lambda p: _predict(backend.url, p), paths):
            assert r.status_code == 200, r.text
            traffic.predictions.append(r.json())


def send_traffic(backend: Backend, sample_images: dict[str, list[Path]]) -> Traffic:
    """Real predictions, feedback (confirming and correcting), refused inputs and reads."""
    traffic = Traffic()
    paths = [p for label in ("rock", "paper", "scissors") for p in sample_images[label][:4]]
    _predict_all(backend, paths, traffic)
    # The kernel picks the worker for each connection; a few more rounds make it all but
    # certain that every worker served some (the test then checks that they did).
    for _ in range(5):
        if backend.workers == 1 or sum(1 for n in predictions_per_worker(backend).values() if n) >= backend.workers:
            break
        _predict_all(backend, paths[:4], traffic)
    with httpx.Client(base_url=backend.url, timeout=30) as c:
        for i, p in enumerate(traffic.predictions[:6]):
            label = p["label"] if i % 3 else next(x for x in ("rock", "paper", "scissors") if x != p["label"])
            assert c.post("/feedback", json={"prediction_id": p["prediction_id"], "label": label}).status_code == 200
            traffic.feedback += 1
        refused = {
            "not_an_image": ("note.txt", b"this is not an image"),
            "empty_file": ("empty.png", b""),
        }
        for reason, (name, content) in refused.items():
            r = c.post("/predict", files={"file": (name, content, "application/octet-stream")})
            assert r.status_code in (400, 415, 422), r.text
            assert r.json()["code"] == reason
            traffic.rejected[reason] = 1
        assert c.post("/predict").status_code == 422
        assert c.post("/feedback", json={"prediction_id": 10**9, "label": "rock"}).status_code == 404
        assert c.get("/no-such-route").status_code == 404
        for path in ("/health", "/ready", "/model", "/stats", "/predictions"):
            assert c.get(path, headers=operator_headers()).status_code == 200, path
    return traffic


def seed_finished_retrains(db_url: str) -> None:
    """Finish two of the retrain requests the predictions crossed, as the DAG would report:
    an older run the gate promoted, then one that failed."""
    from Database_connection import repository as repo

    now = datetime.now(UTC)
    with psycopg.connect(db_url, autocommit=True) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM retrain_requests ORDER BY id LIMIT 2").fetchall()]
        assert len(ids) == 2, "the traffic should have crossed the retrain threshold at least twice"
        conn.execute(
            "UPDATE retrain_requests SET requested_at = %s WHERE id = %s", (now - timedelta(minutes=40), ids[0])
        )
        conn.execute(
            "UPDATE retrain_requests SET requested_at = %s WHERE id = %s", (now - timedelta(minutes=20), ids[1])
        )
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
        repo.update_retrain_request(
            conn,
            ids[0],
            state="succeeded",
            started_at=now - timedelta(minutes=38),
            finished_at=now - timedelta(minutes=30),
            gate_decision="promoted",
        )
        repo.update_retrain_request(
            conn,
            ids[1],
            state="failed",
            started_at=now - timedelta(minutes=18),
            finished_at=now - timedelta(minutes=15),
            last_error="training crashed (seeded by the test)",
        )


@pytest.fixture(scope="module")
def traffic(backends: list[Backend], monitored_db: str, sample_images) -> dict[str, Traffic]:
    sent = {b.target: send_traffic(b, sample_images) for b in backends}
    seed_finished_retrains(monitored_db)
    return sent


@dataclass
class Prometheus:
    url: str
    proc: Proc
    config: dict

    def query(self, expr: str) -> dict:
        r = httpx.post(f"{self.url}/api/v1/query", data={"query": expr}, timeout=10)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", f"{expr}\n{r.status_code} {body}"
        return body["data"]


@pytest.fixture(scope="module")
def prometheus(backends: list[Backend], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """A real Prometheus scraping both backends every second, with the project's rules and
    the scrape settings of monitoring/prometheus.yml (job names, paths)."""
    binary = require_prometheus()
    base = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    root = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(p) for p in RULE_FILES],
        "scrape_configs": [],
    }
    for job in base["scrape_configs"]:
        job = {**job}
        if job["job_name"] == "backend":
            job["static_configs"] = [{"targets": [b.target for b in backends]}]
        else:
            job["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
        config["scrape_configs"].append(job)
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    proc = start(
        f"prometheus-{port}",
        [
            binary,
            f"--config.file={root / 'prometheus.yml'}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={root / 'data'}",
        ],
        {},
        root / "logs",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/-/ready", 30, proc)
        yield Prometheus(url, proc, config)
    finally:
        proc.stop()
