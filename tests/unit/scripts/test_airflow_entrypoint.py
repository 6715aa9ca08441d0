"""airflow/entrypoint.sh: any command beyond its own runs with the derived configuration,
which is how Airflow's Helm chart starts task pods (KubernetesExecutor) and init containers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.procs import PROJECT_ROOT, VENV_BIN

ENTRYPOINT = PROJECT_ROOT / "airflow" / "entrypoint.sh"
SHOW = "import os; print(os.environ['AIRFLOW__CORE__EXECUTOR'], os.environ['AIRFLOW__API_AUTH__JWT_SECRET'][:4])"


def _run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")},
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        "AIRFLOW_HOME": str(tmp_path / "home"),
        "AIRFLOW_JWT_SECRET": "j" * 64,
        **env,
    }
    return subprocess.run(
        ["bash", str(ENTRYPOINT), *args], env=full_env, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )


def test_another_command_runs_with_the_derived_configuration(tmp_path: Path) -> None:
    derived = _run(tmp_path, sys.executable, "-c", SHOW)
    assert derived.returncode == 0, derived.stderr
    assert derived.stdout.split() == ["LocalExecutor", "jjjj"]
    # What the chart sets itself (AIRFLOW__*) wins, as in Compose.
    chart = _run(tmp_path, sys.executable, "-c", SHOW, AIRFLOW__CORE__EXECUTOR="KubernetesExecutor")
    assert chart.returncode == 0, chart.stderr
    assert chart.stdout.split() == ["KubernetesExecutor", "jjjj"]


def test_no_command_is_a_usage_error(tmp_path: Path) -> None:
    r = _run(tmp_path)
    assert r.returncode == 2 and "usage:" in r.stderr


def test_a_celery_worker_needs_the_celery_executor(tmp_path: Path) -> None:
    """Under LocalExecutor `airflow celery` does not exist: the entrypoint says which setting."""
    r = _run(tmp_path, "celery-worker", "training")
    assert r.returncode == 2 and "AIRFLOW_EXECUTOR=CeleryExecutor" in r.stderr, r.stderr
    missing = _run(tmp_path, "celery-worker", AIRFLOW_EXECUTOR="CeleryExecutor")
    assert missing.returncode != 0 and "celery-worker QUEUES" in missing.stderr, missing.stderr
