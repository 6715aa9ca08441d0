"""rock_paper_scissors_retrain_pipeline: labelled images → OpenCV → DVC/S3 → new data? →
retrain → MLflow → gate → hot reload.

Each task is a thin call into `src.pipeline` (runnable by hand: `python -m src.pipeline
<stage>`). Heavy imports stay inside the tasks so this file parses in milliseconds.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag, get_current_context, task


def _request_id() -> int | None:
    value = get_current_context()["params"].get("retrain_request_id")
    return int(value) if value is not None else None


def _settings():
    from utils.settings import get_settings

    return get_settings()


def _record_failure(context) -> None:
    """Task failure (after its last retry): the retrain request says which stage and why."""
    from src.pipeline import mark_failed

    request_id = context["params"].get("retrain_request_id")
    ti = context["task_instance"]
    mark_failed(_settings(), request_id, ti.task_id, context.get("exception") or "task failed")


NETWORK_RETRIES = {"retries": 2, "retry_delay": timedelta(seconds=5)}


def _training_queue() -> str:
    """Where the training task goes under CeleryExecutor: the workers of the training image."""
    return _settings().training_queue


@dag(
    dag_id="rock_paper_scissors_retrain_pipeline",
    schedule=None,
    catchup=False,
    max_active_runs=1,
    tags=["rps", "retraining"],
    params={
        "retrain_request_id": Param(None, type=["null", "integer"], description="backend retrain request"),
        "force": Param(False, type="boolean", description="train even if the data is the champion's"),
        "epochs": Param(None, type=["null", "integer"], minimum=1, description="override RETRAIN_EPOCHS"),
    },
    default_args={"retries": 0, "on_failure_callback": _record_failure},
    doc_md=__doc__,
)
def rock_paper_scissors_retrain_pipeline():
    @task(**NETWORK_RETRIES)
    def extract_images_from_postgres() -> dict:
        from src.pipeline import extract

        return extract(_settings(), _request_id())

    @task
    def preprocess_images() -> dict:
        from src.pipeline import preprocess

        return preprocess(_settings(), _request_id())

    @task(**NETWORK_RETRIES)
    def dvc_script() -> str:
        """Runs airflow/scripts/dvc_script.sh: dvc add + dvc push; returns the data version."""
        from src.pipeline import version

        return version(_settings(), _request_id())

    @task.short_circuit
    def has_new_training_data() -> bool:
        """False ends the run here: the request is recorded as skipped, nothing is trained."""
        from src.pipeline import has_new_training_data

        return has_new_training_data(_settings(), _request_id(), bool(get_current_context()["params"]["force"]))

    @task(queue=_training_queue(), **NETWORK_RETRIES)
    def retrain_rps_model(data_version: str) -> dict:
        from src.pipeline import retrain

        return retrain(_settings(), data_version, _request_id(), get_current_context()["params"].get("epochs"))

    @task(**NETWORK_RETRIES)
    def evaluate_and_promote(trained: dict) -> dict:
        from src.pipeline import promote

        return promote(_settings(), trained["version"], _request_id())

    @task(**NETWORK_RETRIES)
    def reload_backend(gate: dict) -> dict:
        from src.pipeline import reload

        return reload(_settings(), gate["decision"], gate["challenger_version"], _request_id())

    # The first stages hand over through the data workspace; from the data version on, values flow.
    data_version = dvc_script()
    trained = retrain_rps_model(data_version)
    extract_images_from_postgres() >> preprocess_images() >> data_version >> has_new_training_data() >> trained
    reload_backend(evaluate_and_promote(trained))


rock_paper_scissors_retrain_pipeline()
