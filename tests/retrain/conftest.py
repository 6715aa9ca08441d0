"""One real retraining stack per module: moto S3, MLflow, Airflow (3 processes), the backend,
a throwaway PostgreSQL database and a throwaway git + DVC data workspace."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import DATASETS, TEST_RUN_DIR, WEIGHTS
from tests.support import db as dbs
from tests.support.auth import NO_RATE_LIMITS
from tests.support.fixtures import airflow_template_db  # noqa: F401
from tests.support.procs import PROJECT_ROOT, Proc, free_port, start, wait_http
from tests.support.proxy import SwitchableProxy
from tests.support.stack import Stack, start_stack

ADMIN_TOKEN = "test-admin-token"


@dataclass
class LoopStack:
    stack: Stack
    backend_url: str
    backend: Proc
    backend_env: dict[str, str]
    db_url: str
    workspace: Path
    run_dir: Path
    airflow_proxy: SwitchableProxy

    def start_backend(self) -> Proc:
        proc = start(
            f"backend-{self.backend_url.rsplit(':', 1)[1]}",
            [sys.executable, "main.py"],
            self.backend_env,
            self.run_dir / "logs",
        )
        wait_http(f"{self.backend_url}/ready", 90, proc)
        self.backend = proc
        return proc


def make_workspace(root: Path) -> Path:
    """A git + DVC repository like the project checkout, with Data/raw linking the datasets."""
    root.mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([str(Path(sys.executable).parent / "dvc"), "init", "-q"], cwd=root, check=True)
    shutil.copy(PROJECT_ROOT / ".dvc" / "config", root / ".dvc" / "config")
    (root / "Data" / "raw").mkdir(parents=True)
    for ds in DATASETS.iterdir():
        (root / "Data" / "raw" / ds.name).symlink_to(ds)
    return root


def loop_env(workspace: Path, db_url: str, backend_url: str, **overrides: str) -> dict[str, str]:
    """Settings shared by an isolated loop's services, stage CLIs and backend (tests, benchmarks)."""
    return {
        "DATABASE_URL": db_url,
        "DATA_WORKSPACE": str(workspace),
        # the session's trained model cached every image's features here: retraining reuses them
        "ARTIFACTS_DIR": str(TEST_RUN_DIR / "artifacts"),
        "BACKBONE_WEIGHTS": str(WEIGHTS),
        "RETRAIN_AUG_COPIES": "0",
        "RETRAIN_EPOCHS": "25",
        "BACKEND_URL": backend_url,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "RPS_DATASET_DIRS": "",
        **overrides,
    }


def benchmark_loop(prefix: str, **overrides: str) -> tuple[Path, str, str, int, dict[str, str]]:
    """A benchmark's isolated loop: (run dir, database name, database URL, backend port, settings)."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"rps-{prefix}-"))
    name = dbs.unique_name(f"rps_{prefix.replace('-', '_')}")
    db_url = dbs.create_db(name)
    port = free_port()
    shared = loop_env(
        make_workspace(run_dir / "workspace"),
        db_url,
        f"http://127.0.0.1:{port}",
        ADMIN_TOKEN="bench-admin-token",
        **overrides,
    )
    return run_dir, name, db_url, port, shared


def loop_backend_env(shared: dict[str, str], stack: Stack, port: int, **overrides: str) -> dict[str, str]:
    """The backend of an isolated loop: the stack's services, champion polling, a fast dispatcher."""
    return {
        **shared,
        **stack.env,
        "MODEL_SOURCE": "mlflow",
        "MODEL_POLL_SECONDS": "2",
        "DISPATCHER_POLL_S": "1",
        "BACKEND_PORT": str(port),
        "RETRAIN_THRESHOLD": "3",
        **NO_RATE_LIMITS,
        **overrides,
    }


@pytest.fixture(scope="module")
def loop_stack(tmp_path_factory, trained_model, airflow_template_db) -> Iterator[LoopStack]:  # noqa: F811
    run_dir = tmp_path_factory.mktemp("loop")
    name = dbs.unique_name("rps_loop")
    db_url = dbs.create_db(name)
    workspace = make_workspace(run_dir / "workspace")
    port = free_port()
    backend_url = f"http://127.0.0.1:{port}"
    shared = loop_env(workspace, db_url, backend_url, REGISTERED_MODEL_NAME="rps-classifier")
    stack = start_stack(run_dir / "stack", env=shared, airflow_template_db=airflow_template_db)
    # the backend reaches Airflow through a proxy that a test can switch off ("Airflow down")
    proxy = SwitchableProxy(int(stack.airflow.url.rsplit(":", 1)[1]))
    backend_env = loop_backend_env(
        shared,
        stack,
        port,
        AIRFLOW_URL=proxy.url,
        MODEL_DIR=trained_model["model_dir"],
        RETRAIN_RETRY_INITIAL_S="1",
        RETRAIN_RETRY_MAX_S="4",
    )
    loop = LoopStack(stack, backend_url, None, backend_env, db_url, workspace, run_dir, proxy)  # type: ignore[arg-type]
    try:
        loop.start_backend()
        yield loop
    finally:
        if loop.backend is not None:
            loop.backend.stop()
        proxy.close()
        stack.stop()
        dbs.drop_db(name)
