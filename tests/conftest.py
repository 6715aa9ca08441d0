"""Fixtures over real things: PostgreSQL databases, a model trained on the real datasets,
and the backend as a real process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiortc  # noqa: F401  # before any test imports TensorFlow: see below
import httpx
import pytest

from tests.support import db as dbs
from tests.support.auth import NO_RATE_LIMITS
from tests.support.procs import PROJECT_ROOT, Proc, free_port, start, wait_http

# `import tensorflow` then `import aiortc` (streamlit-webrtc's WebRTC stack) segfaults in
# pylibsrtp's start-up; the other order works. Some tests build Keras models in this process
# and the live-page tests import streamlit-webrtc later, so aiortc is loaded first, above.

SHARED = Path(os.environ.get("RPS_SHARED_DIR", PROJECT_ROOT.parent / "shared")).resolve()
DATASETS = SHARED / "datasets" / "rps"
WEIGHTS = SHARED / "weights" / "mobilenet_2_5_224_tf_no_top.h5"
TEST_RUN_DIR = PROJECT_ROOT / ".run" / "test"
ARTIFACTS_DIR = PROJECT_ROOT / "test-artifacts"


def pytest_configure(config: pytest.Config) -> None:
    if not DATASETS.is_dir() or not WEIGHTS.is_file():
        raise pytest.UsageError(f"the shared datasets and weights must be at {SHARED} (or set RPS_SHARED_DIR)")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return SHARED


@pytest.fixture(scope="session")
def sample_images() -> dict[str, list[Path]]:
    """A few real images per class from each shared dataset."""
    out: dict[str, list[Path]] = {}
    for label in ("rock", "paper", "scissors"):
        out[label] = (
            sorted((DATASETS / "seed-drgfreeman" / label).iterdir())[:4]
            + sorted((DATASETS / "roboflow-sxsw" / label).iterdir())[:4]
        )
    return out


@pytest.fixture(scope="session")
def template_db() -> Iterator[str]:
    """A migrated database that per-test databases are cloned from (fast)."""
    from Database_connection.db import migrate

    name = dbs.unique_name("rps_tpl")
    url = dbs.create_db(name)
    migrate(url)
    yield name
    dbs.drop_db(name)


@pytest.fixture
def db_url(template_db: str) -> Iterator[str]:
    """A throwaway, migrated database for one test."""
    name = dbs.unique_name("rps_t")
    url = dbs.create_db(name, template=template_db)
    yield url
    dbs.drop_db(name)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Data/ folder whose raw/ links to the shared datasets (nothing copied)."""
    root = tmp_path_factory.mktemp("Data")
    (root / "raw").mkdir()
    for ds in DATASETS.iterdir():
        (root / "raw" / ds.name).symlink_to(ds)
    return root


def model_env(data_dir: Path, artifacts: Path) -> dict[str, str]:
    return {
        "DATA_DIR": str(data_dir),
        "ARTIFACTS_DIR": str(artifacts),
        "MODEL_DIR": str(artifacts / "model"),
        "BACKBONE_WEIGHTS": str(WEIGHTS),
        "MLFLOW_TRACKING_URI": "",
        "MODEL_SOURCE": "local",
        "AIRFLOW_URL": "",  # a test backend must never reach a developer's running Airflow
        **NO_RATE_LIMITS,  # tests that check the limits set their own
    }


def train_cli(env: dict[str, str], *args: str, timeout: float = 600) -> dict:
    """`python -m src.train ARGS` as a user runs it (env on top of ours); its JSON summary line."""
    proc = subprocess.run(
        [sys.executable, "-m", "src.train", *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def trained_model(data_dir: Path) -> Iterator[dict]:
    """A model trained by the real CLI on both shared datasets (group split, no augmentation
    copies so it takes well under a minute). Features are cached across test runs."""
    summary = train_cli(
        model_env(data_dir, TEST_RUN_DIR / "artifacts"), "--aug-copies", "0", "--epochs", "40", "--no-publish"
    )
    yield summary
    shutil.rmtree(summary["model_dir"], ignore_errors=True)


@pytest.fixture(scope="session")
def model_dir(trained_model: dict) -> Path:
    return Path(trained_model["model_dir"])


@pytest.fixture
def settings(db_url: str, model_dir: Path, data_dir: Path, tmp_path: Path):
    from utils.settings import Settings

    return Settings(
        database_url=db_url,
        model_dir=model_dir,
        data_dir=data_dir,
        artifacts_dir=tmp_path / "artifacts",
        backbone_weights=str(WEIGHTS),
        mlflow_tracking_uri="",
        model_source="local",
        airflow_url="",
        retrain_threshold=3,
    )


@pytest.fixture
def client(settings) -> Iterator[httpx.Client]:
    """The real app in-process (lifespan: migrate, pool, load the model)."""
    from fastapi.testclient import TestClient

    from api.app import create_app

    app = create_app(settings)
    with TestClient(app) as c:
        yield c


@dataclass
class Backend:
    url: str
    proc: Proc
    db_url: str


def start_backend(db_url: str, model_dir: Path, data_dir: Path, workdir: Path, **env: str) -> Backend:
    """`python main.py` (what `make up` runs) on a free port with the local model, threshold 3,
    and no Airflow or MLflow: a test backend never reaches a developer's running stack."""
    port = free_port()
    full_env = {
        **model_env(data_dir, workdir / "artifacts"),
        "MODEL_DIR": str(model_dir),
        "DATABASE_URL": db_url,
        "BACKEND_PORT": str(port),
        "BACKEND_URL": f"http://127.0.0.1:{port}",
        "RETRAIN_THRESHOLD": "3",
        **env,
    }
    proc = start(f"backend-{port}", [sys.executable, "main.py"], full_env, workdir / "logs")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/ready", 90, proc)
    except BaseException:
        proc.stop()
        raise
    return Backend(url, proc, db_url)


@pytest.fixture
def backend_server(db_url: str, model_dir: Path, data_dir: Path, tmp_path: Path) -> Iterator[tuple[str, Proc]]:
    """The backend as a real uvicorn process on a free port: (base URL, process)."""
    backend = start_backend(db_url, model_dir, data_dir, tmp_path)
    try:
        yield backend.url, backend.proc
    finally:
        backend.proc.stop()
