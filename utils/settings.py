"""The one settings object every service reads (environment first, then `.env`).

Keeping every knob here means the backend, the DAG, the trainer, the UI and the
Compose files all agree on names; nothing else calls `os.getenv`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from utils import secret_policy

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CLASS_NAMES: tuple[str, ...] = ("rock", "paper", "scissors")
PLACEHOLDER = "change-me"


class Settings(BaseSettings):
    """Typed configuration; validated once at start-up."""

    model_config = SettingsConfigDict(env_file=str(PROJECT_ROOT / ".env"), env_file_encoding="utf-8", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    # Which service this process is: production checks only that role's secrets
    # (utils/secret_policy.py); "all" checks every service's.
    service_role: secret_policy.Role = "all"
    log_level: str = "INFO"

    # PostgreSQL
    database_url: str = "postgresql://rps:rps@127.0.0.1:5432/rps"
    db_pool_min: int = 1
    db_pool_max: int = 10
    # How long a request waits for a pooled connection (and a new connection for PostgreSQL)
    # before it answers 503: an outage costs a user two seconds, not thirty.
    db_timeout_s: float = Field(default=1.5, gt=0)

    # Backend
    backend_host: str = "127.0.0.1"
    backend_port: int = 8000
    backend_url: str = "http://127.0.0.1:8000"
    backend_workers: int = 1
    # The path prefix a reverse proxy serves the API under and strips before forwarding
    # (deployed: "/api", proxy/Caddyfile). The docs page then loads /api/openapi.json and the
    # schema names /api as its server; requests without the prefix are served as before.
    backend_root_path: str = Field(default="", pattern=r"^(/[^/\s]+)*$")
    admin_token: str = PLACEHOLDER
    # The operators' login (Streamlit System page, admin routes): stored photos, per-request
    # history, raw errors and label review. ADMIN_TOKEN stays the machines' (the DAG's reload).
    operator_token: str = PLACEHOLDER
    # Per-client limits on anonymous input, requests per minute (0 = unlimited); bursts up to
    # the same number. The client is the peer address, or X-Forwarded-For's first address when
    # the peer is one of TRUSTED_PROXIES (the HTTPS proxy, the Streamlit server).
    rate_limit_predict: int = Field(default=60, ge=0)
    rate_limit_preview: int = Field(default=1200, ge=0)
    rate_limit_upload: int = Field(default=20, ge=0)
    rate_limit_feedback: int = Field(default=60, ge=0)
    trusted_proxies: list[str] = Field(default_factory=lambda: ["127.0.0.1/32", "::1/128"])
    # Hold labels from /feedback and /upload for an operator's approval before training uses them.
    label_quarantine: bool = False
    max_upload_bytes: int = 8 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    min_image_side: int = 16
    # Decode + preprocess + inference run at most this many at once (memory and CPU bound);
    # a request that waits longer than `prediction_queue_s` for a slot gets 503 + Retry-After.
    max_concurrent_predictions: int = Field(default=4, ge=1)
    prediction_queue_s: float = Field(default=2.0, ge=0)
    # Unlabelled stored images older than this are pruned (0 keeps them forever); labelled
    # images are training data and always stay.
    unlabelled_image_retention_days: float = Field(default=30.0, ge=0)
    retention_interval_s: float = Field(default=3600.0, gt=0)

    # Model
    image_size: int = 224
    backbone: Literal["mobilenet", "mobilenet_v2"] = "mobilenet"
    backbone_alpha: float = 0.25
    backbone_weights: str = "imagenet"
    model_dir: Path = PROJECT_ROOT / "artifacts" / "model"
    model_source: Literal["local", "mlflow"] = "local"
    model_poll_seconds: float = 30.0
    # A champion that failed to download or load is retried after this delay, doubling up to the max.
    model_retry_initial_s: float = Field(default=5.0, gt=0)
    model_retry_max_s: float = Field(default=300.0, gt=0)
    # What the head sees: `mobilenet` (whole image) or `mobilenet+hand` (MediaPipe hand crop +
    # landmark features). A model directory's metadata records its own; this picks what trains.
    feature_set: Literal["mobilenet", "mobilenet+hand"] = "mobilenet+hand"
    # MediaPipe Hands models (palm detector + landmarks) from npm, fetched by
    # `python -m utils.hand_models fetch`; 0 = lite models (faster), 1 = full, as MediaPipe names it.
    hand_models_dir: Path = PROJECT_ROOT / "artifacts" / "hand_models"
    hand_model_complexity: int = Field(default=1, ge=0, le=1)  # an int field: the environment gives "0"
    # Augmented copies per training image for `mobilenet+hand`, each run through the hand stage:
    # the first is the image pasted into a procedural scene (src/composites.py), so the head learns
    # hands cut out of rooms as webcam frames show them; the second is the image mirrored (the
    # other hand); any more are other scenes. Caps --aug-copies and RETRAIN_AUG_COPIES.
    # Roboflow composites, 4 seeds: 0 copies 0.813, 1 scene 0.845, 2 scenes 0.842; roboflow crops
    # with one scene 0.885, plus the mirror 0.892 (src/features.py). Every row also trains as its
    # mirror view (src/model.py assemble), which makes the mirrored copy redundant: with mirror
    # views, 1 copy scores 0.902 on crops and 2 copies 0.900 (roboflow, seeds 0-3), for one
    # hand-stage pass fewer per training image.
    hand_aug_copies: int = Field(default=1, ge=0)

    # Data
    data_dir: Path = PROJECT_ROOT / "Data"
    rps_dataset_dirs: str = ""
    artifacts_dir: Path = PROJECT_ROOT / "artifacts"

    # Retraining
    retrain_threshold: int = Field(default=3, ge=1)

    # MLflow / Airflow / S3
    mlflow_tracking_uri: str = ""
    # The identity MLflow's client sends (MLflow reads the same variables itself): the backend
    # a read-only user, the DAG and trainer the writer (docs/deploy.md, "Security model").
    mlflow_tracking_username: str = ""
    mlflow_tracking_password: str = ""
    mlflow_experiment: str = "rps-classifier"
    registered_model_name: str = "rps-classifier"
    airflow_url: str = "http://127.0.0.1:8080"
    airflow_username: str = "backend"
    airflow_password: str = PLACEHOLDER
    airflow_dag_id: str = "rock_paper_scissors_retrain_pipeline"
    s3_endpoint_url: str = ""
    s3_bucket: str = "rps-dvc"
    aws_access_key_id: str = ""
    aws_secret_access_key: str = ""
    aws_default_region: str = "us-east-1"

    # Retraining loop (Airflow DAG, DVC, MLflow gate)
    data_workspace: Path = PROJECT_ROOT
    retrain_aug_copies: int = 2
    retrain_epochs: int = 40
    blur_threshold: float = 4.0  # variance of the Laplacian at model size; ~1% of the real crops fall below
    # Who may be trained on (src/splits.py): fractions of base-dataset groups held out for the
    # gate's evaluation set and for simulated new users (benchmarks/learning_curve.py), and of
    # user-labelled images (by image hash) held out so the gate also scores users' own photos.
    eval_fraction: float = Field(default=0.2, ge=0.05, le=0.5)
    reserve_fraction: float = Field(default=0.1, ge=0.0, le=0.5)
    user_holdout_fraction: float = Field(default=0.2, ge=0.0, le=0.5)
    # A user-labelled image counts this many times in the loss (see README, "Corrections").
    user_sample_weight: float = Field(default=4.0, ge=1.0, le=100.0)
    # Dense heads trained with different seeds and averaged into one (src/model.py: ensemble).
    head_ensemble: int = Field(default=3, ge=1, le=10)
    # The gate rejects a challenger that a one-sided exact McNemar test finds worse at this level.
    gate_alpha: float = Field(default=0.05, gt=0.0, lt=0.5)
    retrain_retry_initial_s: float = 2.0
    retrain_retry_max_s: float = 60.0
    dispatcher_poll_s: float = 5.0
    # A delivered retrain whose Airflow run has not ended after this long is marked failed.
    retrain_max_run_s: float = Field(default=6 * 3600.0, gt=0)
    airflow_admin_password: str = PLACEHOLDER
    airflow_jwt_secret: str = PLACEHOLDER
    airflow_database_url: str = "postgresql+psycopg2://airflow:airflow@127.0.0.1:5432/airflow"
    airflow_parallelism: int = 4
    # LocalExecutor runs the tasks as children of the scheduler (one machine); CeleryExecutor
    # hands them through a Redis broker to `airflow celery worker`s (docker-compose.celery.yml).
    airflow_executor: Literal["LocalExecutor", "CeleryExecutor"] = "LocalExecutor"
    airflow_celery_broker_url: str = "redis://127.0.0.1:6379/0"
    airflow_worker_concurrency: int = Field(default=2, ge=1)  # task processes per Celery worker
    # The Celery queue of the training task: only workers of the training image take it.
    # LocalExecutor ignores queues.
    training_queue: str = "training"
    mlflow_database_url: str = "postgresql://mlflow:mlflow@127.0.0.1:5432/mlflow"
    mlflow_artifacts_destination: str = str(PROJECT_ROOT / ".run" / "mlflow-artifacts")
    mlflow_port: int = 5000
    # MLflow's basic-auth app (mlflow/provision_auth.py): on in the deployed stack, off natively.
    mlflow_auth: bool = False
    mlflow_admin_password: str = PLACEHOLDER
    mlflow_reader_password: str = PLACEHOLDER
    mlflow_writer_password: str = PLACEHOLDER
    airflow_port: int = 8080
    s3_port: int = 9000
    # Read by third-party containers only; here so that the deploy check covers them.
    postgres_password: str = ""
    grafana_admin_password: str = ""
    ops_proxy_password: str = ""  # the HTTPS proxy's operator login (Prometheus has none)

    # UI and links
    streamlit_port: int = 8501
    prometheus_url: str = "http://127.0.0.1:9090"
    grafana_url: str = "http://127.0.0.1:3000"
    mlflow_ui_url: str = "http://127.0.0.1:5000"
    airflow_ui_url: str = "http://127.0.0.1:8080"
    api_docs_url: str = "http://127.0.0.1:8000/docs"

    # UI
    # Streamlit pages and the OpenCV webcam client (frontend/, inference/webcam.py).
    ui_request_timeout_s: float = Field(default=10.0, gt=0)
    ui_recent_predictions: int = Field(default=12, ge=1, le=200)
    live_max_predictions_per_second: float = Field(default=10.0, gt=0, le=30)
    live_use_local_model: bool = False
    # WebRTC ICE servers as JSON, e.g. [{"urls": ["turn:turn.example.org:3478"], "username": "u",
    # "credential": "p"}]. Empty works on localhost only; see docs/ui.md for public deployments.
    webrtc_ice_servers: list[dict[str, object]] = Field(default_factory=list)

    @property
    def dataset_dirs(self) -> list[Path]:
        """`RPS_DATASET_DIRS` as paths: separated by `:` or `,`, relative to the project."""
        parts = [p for chunk in self.rps_dataset_dirs.split(",") for p in chunk.split(":")]
        return [(PROJECT_ROOT / p.strip()).resolve() for p in parts if p.strip()]

    @property
    def local_weights_file(self) -> Path | None:
        """A weights path when the backbone weights are a file, None for `imagenet`."""
        if self.backbone_weights in ("imagenet", ""):
            return None
        return (PROJECT_ROOT / self.backbone_weights).resolve()

    @model_validator(mode="after")
    def _refuse_weak_secrets(self) -> Settings:
        if self.environment == "production":
            secret_policy.check(self.model_dump(), self.service_role)
        return self


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests clear the cache to change them."""
    return Settings()
