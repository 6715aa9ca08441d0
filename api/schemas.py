"""Response and request models: they are the OpenAPI schema clients rely on."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

Label = Literal["rock", "paper", "scissors"]


class Probabilities(BaseModel):
    rock: float
    paper: float
    scissors: float


class HandResult(BaseModel):
    """Where the hand stage found the hand, in the uploaded image's pixels."""

    found: bool = Field(
        description="false: no hand was found; the whole image was classified, or in a scene the likeliest palm region"
    )
    source: Literal["palm", "rotation", "search", "candidate", "none"] = Field(
        description="palm detector, the whole-image rotation search, the search over weak palm candidates; "
        "not found: candidate (the region classified, no landmarks) or none (the whole image)"
    )
    presence: float = Field(ge=0, le=1)
    box: list[list[float]] = Field(description="the (rotated) crop's 4 corners [x, y]")
    landmarks: list[list[float]] = Field(description="21 MediaPipe hand landmarks [x, y]; empty when not found")


class PredictResponse(BaseModel):
    prediction_id: int | None = Field(description="null when called with store=false")
    label: Label
    confidence: float = Field(ge=0, le=1)
    probabilities: Probabilities
    model_version: str
    latency_ms: float = Field(description="milliseconds spent on decode + preprocessing + inference")
    hand: HandResult | None = Field(default=None, description="null for models without the hand stage")
    image_sha256: str
    predictions_since_retrain: int | None = Field(description="null when called with store=false")
    retrain_threshold: int


class FeedbackRequest(BaseModel):
    prediction_id: int = Field(gt=0)
    label: Label


Review = Literal["pending", "approved", "rejected"]


class FeedbackResponse(BaseModel):
    prediction_id: int
    image_sha256: str
    label: Label
    predicted_label: Label
    correct: bool
    review: Review = Field("approved", description="pending: held for an operator's approval before training")


class UploadResponse(BaseModel):
    image_sha256: str
    label: Label
    new_image: bool
    review: Review = Field("approved", description="pending: held for an operator's approval before training")


class LabelForReview(BaseModel):
    image_sha256: str
    label: Label
    source: str
    prediction_id: int | None
    predicted_label: Label | None
    review: Review
    updated_at: datetime
    reviewed_at: datetime | None


class ReviewDecision(BaseModel):
    image_sha256s: list[str] = Field(min_length=1, max_length=500)
    decision: Literal["approved", "rejected"]


class ReviewResult(BaseModel):
    decision: Literal["approved", "rejected"]
    updated: int = Field(description="labels that were pending and now carry the decision")


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready"]
    model_version: str
    database: Literal["ok"]
    # Which process answered behind a load balancer: the container's or pod's host name.
    replica: str


class Architecture(BaseModel):
    backbone: str
    alpha: float
    input_size: int
    weights: str
    feature_set: Literal["mobilenet", "mobilenet+hand"] = "mobilenet"
    hand_features: int | None = None
    hand_model_complexity: int | None = None


class ModelInfo(BaseModel):
    version: str
    source: str
    path: str
    loaded_at: datetime
    created_at: datetime | None
    architecture: Architecture
    feature_set: Literal["mobilenet", "mobilenet+hand"] = Field(
        default="mobilenet", description="what the head sees: the whole image, or the hand crop + landmarks"
    )
    runtime: str
    class_names: list[str]
    metrics: dict[str, Any]
    data_version: str | None
    last_reload_error: str | None = None


class Stats(BaseModel):
    predictions: int
    images: int
    labelled_images: int
    feedback_labels: int
    labels_awaiting_review: int = Field(0, description="labels held for an operator's approval (LABEL_QUARANTINE)")
    labels_by_class: dict[str, int]
    predictions_since_retrain: int
    retrain_threshold: int
    retrain_requests: int
    feedback_accuracy: float | None
    feedback_window: int


class RecentPrediction(BaseModel):
    id: int
    image_sha256: str
    label: Label
    confidence: float
    model_version: str
    latency_ms: float
    created_at: datetime
    confirmed_label: Label | None


class RetrainRequest(BaseModel):
    id: int
    state: Literal["pending", "triggered", "running", "succeeded", "failed", "superseded", "skipped"]
    prediction_count: int
    last_prediction_id: int
    dag_run_id: str | None
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    requested_at: datetime
    triggered_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None = Field(description="requested → finished, once finished")
    data_version: str | None
    model_version_before: str | None
    model_version_after: str | None
    gate_decision: Literal["promoted", "rejected"] | None
    gate_details: dict[str, Any] | None
    superseded_by: int | None = Field(description="the request whose run covered this one's labels")
    skip_reason: str | None = Field(None, description="why a `skipped` request did not train")


class ReloadResponse(BaseModel):
    reloaded: bool
    version: str
    previous_version: str | None
    source: str
