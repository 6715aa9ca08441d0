"""HTTP routes. Handlers are sync `def`, so FastAPI runs them in its thread pool and the
CPU-bound decode/inference never blocks the event loop."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import JSONResponse, Response

from api import metrics
from api.auth import IsOperator, OperatorOnly
from api.deps import AdminDep, ConnDep, HolderDep, ModelSyncDep, PoolDep, RetrainNotifierDep, SettingsDep
from api.errors import ERROR_RESPONSES, APIError, ErrorBody
from api.ratelimit import FeedbackLimit, PredictLimit, UploadLimit
from api.schemas import (
    FeedbackRequest,
    FeedbackResponse,
    Health,
    Label,
    LabelForReview,
    ModelInfo,
    PredictResponse,
    Ready,
    RecentPrediction,
    ReloadResponse,
    RetrainRequest,
    Review,
    ReviewDecision,
    ReviewResult,
    Stats,
    UploadResponse,
)
from Database_connection import repository as repo
from inference.model_holder import ModelLoadError
from utils.images import ImageRejected, decode_image
from utils.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter()


def read_upload(file: UploadFile, settings: Settings) -> bytes:
    """The upload's bytes, refusing oversize bodies without reading past the limit."""
    limit = settings.max_upload_bytes
    data = file.file.read(limit + 1)
    if len(data) > limit:
        raise ImageRejected(
            "file_too_large", f"The file is over the {limit / 2**20:.0f} MiB upload limit; send a smaller image.", 413
        )
    return data


@contextmanager
def counting_rejections() -> Iterator[None]:
    """Count a refused input by reason; the error handlers answer it."""
    try:
        yield
    except ImageRejected as exc:
        metrics.REJECTED_INPUTS.labels(reason=exc.code).inc()
        raise


LIMITED = {429: {"model": ErrorBody, "description": "Too many requests from this client; see Retry-After"}}
PRIVATE = {
    401: {"model": ErrorBody, "description": "Operator login required"},
    403: {"model": ErrorBody, "description": "Wrong operator login"},
}


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses=ERROR_RESPONSES | LIMITED | {503: {"model": ErrorBody}},
    tags=["model"],
    dependencies=[PredictLimit],
)
def predict(
    file: Annotated[UploadFile, File(description="A JPEG or PNG photo of one hand")],
    settings: SettingsDep,
    holder: HolderDep,
    pool: PoolDep,
    notify_retrain: RetrainNotifierDep,
    store: Annotated[
        bool,
        Query(description="false: classify only (live previews, probes); nothing is stored or counted"),
    ] = True,
) -> PredictResponse:
    """Classify an image; the image and the prediction are stored in one transaction.

    The database is touched only to store (never with `store=false`), after the model ran."""
    with counting_rejections():
        data = read_upload(file, settings)
        result = holder.predict(data, max_pixels=settings.max_image_pixels, min_side=settings.min_image_side)
    metrics.PREDICTIONS.labels(label=result.label).inc()
    metrics.PREDICTION_LATENCY.observe(result.latency_ms / 1000)
    metrics.PREDICTION_CONFIDENCE.observe(result.confidence)
    image = result.image
    prediction_id, since = None, None
    if store:
        with pool.connection() as conn:
            stored = repo.record_prediction(
                conn,
                sha256=image.sha256,
                content=data,
                fmt=image.format,
                width=image.width,
                height=image.height,
                original_name=file.filename,
                label=result.label,
                confidence=result.confidence,
                probabilities=result.probabilities,
                model_version=result.model_version,
                latency_ms=result.latency_ms,
                threshold=settings.retrain_threshold,
            )
        prediction_id, since = stored.id, stored.predictions_since_retrain
        if stored.retrain_request_id is not None:
            notify_retrain(stored.retrain_request_id)
    return PredictResponse(
        prediction_id=prediction_id,
        label=result.label,
        confidence=result.confidence,
        probabilities=result.probabilities,
        model_version=result.model_version,
        latency_ms=round(result.latency_ms, 3),
        hand=result.hand,
        image_sha256=image.sha256,
        predictions_since_retrain=since,
        retrain_threshold=settings.retrain_threshold,
    )


def new_label_review(settings: Settings) -> Review:
    """Anonymous labels wait for an operator when LABEL_QUARANTINE is on."""
    return "pending" if settings.label_quarantine else "approved"


@router.post(
    "/feedback",
    response_model=FeedbackResponse,
    responses={404: {"model": ErrorBody}, 422: {"model": ErrorBody}} | LIMITED,
    tags=["labels"],
    dependencies=[FeedbackLimit],
)
def feedback(body: FeedbackRequest, settings: SettingsDep, conn: ConnDep) -> FeedbackResponse:
    """Confirm or correct a prediction's label. Idempotent: the last answer wins."""
    review = new_label_review(settings)
    with conn.transaction():
        prediction = repo.get_prediction(conn, body.prediction_id)
        if prediction is None:
            raise APIError(404, "unknown_prediction", f"There is no prediction with id {body.prediction_id}.")
        repo.upsert_label(
            conn,
            image_sha256=prediction["image_sha256"],
            label=body.label,
            source="feedback",
            prediction_id=body.prediction_id,
            review=review,
        )
    correct = prediction["label"] == body.label
    metrics.FEEDBACK.labels(correct=str(correct).lower()).inc()
    return FeedbackResponse(
        prediction_id=body.prediction_id,
        image_sha256=prediction["image_sha256"].strip(),
        label=body.label,
        predicted_label=prediction["label"],
        correct=correct,
        review=review,
    )


@router.post(
    "/upload",
    response_model=UploadResponse,
    responses=ERROR_RESPONSES | LIMITED,
    tags=["labels"],
    dependencies=[UploadLimit],
)
def upload(
    file: Annotated[UploadFile, File(description="A JPEG or PNG photo of one hand")],
    label: Annotated[Label, Form(description="The gesture shown")],
    settings: SettingsDep,
    holder: HolderDep,
    pool: PoolDep,
) -> UploadResponse:
    """Ingest a labelled example without predicting."""
    review = new_label_review(settings)
    with counting_rejections(), holder.slot():  # decoding is bounded like a prediction
        data = read_upload(file, settings)
        image = decode_image(
            data,
            max_pixels=settings.max_image_pixels,
            min_side=settings.min_image_side,
            target_side=settings.image_size,
        ).info
    with pool.connection() as conn, conn.transaction():
        new = repo.insert_image(
            conn,
            sha256=image.sha256,
            content=data,
            fmt=image.format,
            width=image.width,
            height=image.height,
            source="upload",
            original_name=file.filename,
        )
        repo.upsert_label(conn, image_sha256=image.sha256, label=label, source="upload", review=review)
    return UploadResponse(image_sha256=image.sha256, label=label, new_image=new, review=review)


@router.get("/health", response_model=Health, tags=["ops"])
def health() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")


@router.get("/ready", response_model=Ready, responses={503: {"model": ErrorBody}}, tags=["ops"])
def ready(holder: HolderDep, pool: PoolDep) -> Ready | JSONResponse:
    """Readiness: the database answers and a model is loaded."""
    try:
        with pool.connection() as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        raise APIError(503, "database_unavailable", f"PostgreSQL is not reachable: {exc}") from exc
    if not holder.loaded:
        detail = f" Last load error: {holder.last_error}" if holder.last_error else ""
        raise APIError(503, "model_not_loaded", "No model is loaded." + detail)
    return Ready(status="ready", model_version=holder.current.version, database="ok", replica=socket.gethostname())


@router.get("/model", response_model=ModelInfo, responses={503: {"model": ErrorBody}}, tags=["model"])
def model_info(holder: HolderDep, operator: IsOperator) -> ModelInfo:
    """The served model: version, origin, load time, architecture, runtime, metrics. The last
    reload's raw error only with the operator login."""
    error = holder.last_error if operator or not holder.last_error else HIDDEN_ERROR
    return ModelInfo(**holder.current.describe(), last_reload_error=error)


@router.get("/stats", response_model=Stats, tags=["labels"])
def stats(settings: SettingsDep, conn: ConnDep) -> Stats:
    """Totals, predictions since the last retrain against the threshold, labelled images."""
    totals = repo.stats(conn)
    acc, n = repo.feedback_accuracy(conn)
    return Stats(
        **totals,
        labels_by_class=repo.labels_by_class(conn),
        predictions_since_retrain=repo.count_predictions_since_retrain(conn),
        retrain_threshold=settings.retrain_threshold,
        feedback_accuracy=acc,
        feedback_window=n,
    )


@router.get(
    "/predictions",
    response_model=list[RecentPrediction],
    responses=PRIVATE,
    tags=["labels"],
    dependencies=[OperatorOnly],
)
def recent(conn: ConnDep, limit: Annotated[int, Query(ge=1, le=200)] = 20) -> list[RecentPrediction]:
    """The most recent predictions with their confirmed labels (operators only: per-request history)."""
    return [
        RecentPrediction(**{**r, "image_sha256": r["image_sha256"].strip()})
        for r in repo.recent_predictions(conn, limit)
    ]


@router.get(
    "/images/{sha256}",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}, "image/png": {}}}, 404: {"model": ErrorBody}} | PRIVATE,
    tags=["labels"],
    dependencies=[OperatorOnly],
)
def image(sha256: str, conn: ConnDep) -> Response:
    """A stored image by its content hash (operators only: users' photos are private)."""
    row = repo.get_image(conn, sha256.lower())
    if row is None:
        raise APIError(404, "unknown_image", f"There is no image with hash {sha256}.")
    return Response(bytes(row["content"]), media_type=f"image/{row['format']}")


HIDDEN_ERROR = "hidden: the operator login shows the error text"


@router.get("/retrains", response_model=list[RetrainRequest], tags=["retraining"])
def retrains(
    conn: ConnDep, operator: IsOperator, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> list[RetrainRequest]:
    """Retrain requests, newest first: state, Airflow run, timings, data version, versions, gate.
    Raw error text (hosts, paths, tracebacks) only with the operator login."""
    out = []
    for r in repo.list_retrain_requests(conn, limit):
        finished, requested = r["finished_at"], r["requested_at"]
        duration = (finished - requested).total_seconds() if finished else None
        if r["last_error"] and not operator:
            r = {**r, "last_error": HIDDEN_ERROR}
        out.append(RetrainRequest(**r, duration_s=duration))
    return out


@router.post(
    "/admin/reload",
    response_model=ReloadResponse,
    responses={
        401: {"model": ErrorBody},
        403: {"model": ErrorBody},
        409: {"model": ErrorBody},
        502: {"model": ErrorBody},
    },
    tags=["model"],
)
def admin_reload(_: AdminDep, sync: ModelSyncDep, holder: HolderDep) -> ReloadResponse:
    """Load `models:/<name>@champion`, warm it up and swap it in atomically. In-flight requests
    finish on the old model; a model that fails to load leaves the old one serving."""
    try:
        model, previous = sync.reload_champion()
    except ModelLoadError as exc:
        current = holder.peek()
        kept = f" Still serving {current.version}." if current else ""
        raise APIError(502, "model_load_failed", f"{exc}.{kept}") from exc
    return ReloadResponse(
        reloaded=previous is not None,
        version=model.version,
        previous_version=previous.version if previous else None,
        source=model.source,
    )


@router.get(
    "/admin/labels",
    response_model=list[LabelForReview],
    responses=PRIVATE,
    tags=["labels"],
    dependencies=[OperatorOnly],
)
def labels_to_review(
    conn: ConnDep, review: Review = "pending", limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> list[LabelForReview]:
    """Labels in one review state, oldest first (the quarantine's queue by default)."""
    return [
        LabelForReview(**{**r, "image_sha256": r["image_sha256"].strip()})
        for r in repo.labels_for_review(conn, review, limit)
    ]


@router.post(
    "/admin/labels/review",
    response_model=ReviewResult,
    responses=PRIVATE,
    tags=["labels"],
    dependencies=[OperatorOnly],
)
def review_labels(body: ReviewDecision, conn: ConnDep) -> ReviewResult:
    """Approve (training may use them) or reject pending labels."""
    updated = repo.review_labels(conn, [s.lower() for s in body.image_sha256s], body.decision)
    return ReviewResult(decision=body.decision, updated=updated)
