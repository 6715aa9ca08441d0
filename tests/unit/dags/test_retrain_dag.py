"""airflow/dags/rps_retrain.py, parsed as the dag-processor parses it: the training task's queue."""

from __future__ import annotations

import importlib.util

import pytest

from tests.support.procs import PROJECT_ROOT
from utils.settings import get_settings

DAG_FILE = PROJECT_ROOT / "airflow" / "dags" / "rps_retrain.py"


def _parsed_dag(monkeypatch: pytest.MonkeyPatch, tmp_path, **env: str):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    spec = importlib.util.spec_from_file_location("rps_retrain_under_test", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.rock_paper_scissors_retrain_pipeline()


@pytest.fixture(autouse=True)
def _fresh_settings():
    yield
    get_settings.cache_clear()


def test_only_the_training_task_goes_to_the_training_queue(monkeypatch, tmp_path) -> None:
    dag = _parsed_dag(monkeypatch, tmp_path)
    queues = {t.task_id: t.queue for t in dag.tasks}
    assert queues.pop("retrain_rps_model") == "training"
    assert set(queues.values()) == {"default"}, queues


def test_the_training_queue_is_a_setting(monkeypatch, tmp_path) -> None:
    dag = _parsed_dag(monkeypatch, tmp_path, TRAINING_QUEUE="gpu")
    assert dag.get_task("retrain_rps_model").queue == "gpu"
