"""Typed queries. Every SQL statement of the services lives here, none in route handlers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import Connection
from psycopg.types.json import Jsonb

_RETRAIN_LOCK = 72_410_002  # serialises threshold checks so one crossing makes one request


@dataclass(frozen=True)
class StoredPrediction:
    id: int
    created_at: datetime
    retrain_request_id: int | None


def insert_image(
    conn: Connection,
    *,
    sha256: str,
    content: bytes,
    fmt: str,
    width: int,
    height: int,
    source: str,
    original_name: str | None = None,
) -> bool:
    """Store the bytes once per hash; returns True when the image was new."""
    cur = conn.execute(
        "INSERT INTO images (sha256, content, format, width, height, size_bytes, source, original_name)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (sha256) DO NOTHING",
        (sha256, content, fmt, width, height, len(content), source, original_name),
    )
    return cur.rowcount == 1


def insert_prediction(
    conn: Connection,
    *,
    image_sha256: str,
    label: str,
    confidence: float,
    probabilities: dict[str, float],
    model_version: str,
    latency_ms: float,
    threshold: int,
) -> StoredPrediction:
    """Insert a prediction and, in the same transaction, record a retrain request if this
    prediction brings the derived count to the threshold."""
    row = conn.execute(
        "INSERT INTO predictions (image_sha256, label, confidence, probabilities, model_version, latency_ms)"
        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id, created_at",
        (image_sha256, label, confidence, Jsonb(probabilities), model_version, latency_ms),
    ).fetchone()
    request_id = maybe_request_retrain(conn, threshold)
    return StoredPrediction(id=row["id"], created_at=row["created_at"], retrain_request_id=request_id)


def maybe_request_retrain(conn: Connection, threshold: int) -> int | None:
    """Record one retrain request when the predictions since the last one reach `threshold`.

    The advisory lock is held to the end of the caller's transaction, so concurrent
    predictions see each other's requests and a crossing is recorded exactly once.
    """
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_RETRAIN_LOCK,))
    row = conn.execute(
        "SELECT count(*) AS n, max(id) AS last_id FROM predictions"
        " WHERE id > (SELECT coalesce(max(last_prediction_id), 0) FROM retrain_requests)"
    ).fetchone()
    if row["n"] < threshold:
        return None
    created = conn.execute(
        "INSERT INTO retrain_requests (last_prediction_id, prediction_count) VALUES (%s, %s) RETURNING id",
        (row["last_id"], row["n"]),
    ).fetchone()
    return int(created["id"])


def get_prediction(conn: Connection, prediction_id: int) -> dict[str, Any] | None:
    return conn.execute(
        "SELECT id, image_sha256, label, confidence, probabilities, model_version, latency_ms, created_at"
        " FROM predictions WHERE id = %s",
        (prediction_id,),
    ).fetchone()


def upsert_label(
    conn: Connection, *, image_sha256: str, label: str, source: str, prediction_id: int | None = None
) -> None:
    """The human-confirmed label of an image; a later answer replaces an earlier one."""
    conn.execute(
        "INSERT INTO labels (image_sha256, label, source, prediction_id) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (image_sha256) DO UPDATE SET label = EXCLUDED.label, source = EXCLUDED.source,"
        " prediction_id = EXCLUDED.prediction_id, updated_at = now()",
        (image_sha256, label, source, prediction_id),
    )


def get_label(conn: Connection, image_sha256: str) -> dict[str, Any] | None:
    return conn.execute(
        "SELECT image_sha256, label, source, prediction_id, updated_at FROM labels WHERE image_sha256 = %s",
        (image_sha256,),
    ).fetchone()


def count_predictions_since_retrain(conn: Connection) -> int:
    row = conn.execute(
        "SELECT count(*) AS n FROM predictions"
        " WHERE id > (SELECT coalesce(max(last_prediction_id), 0) FROM retrain_requests)"
    ).fetchone()
    return int(row["n"])


def stats(conn: Connection) -> dict[str, int]:
    row = conn.execute(
        "SELECT (SELECT count(*) FROM predictions) AS predictions,"
        " (SELECT count(*) FROM images) AS images,"
        " (SELECT count(*) FROM labels) AS labelled_images,"
        " (SELECT count(*) FROM labels WHERE source = 'feedback') AS feedback_labels,"
        " (SELECT count(*) FROM retrain_requests) AS retrain_requests"
    ).fetchone()
    return {k: int(v) for k, v in row.items()}


def labels_by_class(conn: Connection) -> dict[str, int]:
    rows = conn.execute("SELECT label, count(*) AS n FROM labels GROUP BY label").fetchall()
    return {r["label"]: int(r["n"]) for r in rows}


def iter_labelled_images(conn: Connection, batch: int = 200) -> Iterator[dict[str, Any]]:
    """Every image with a human-confirmed label, streamed so memory stays flat."""
    with conn.cursor(name="labelled_images") as cur:
        cur.itersize = batch
        cur.execute(
            "SELECT i.sha256, i.content, i.format, l.label, l.source"
            " FROM labels l JOIN images i ON i.sha256 = l.image_sha256 ORDER BY i.sha256"
        )
        yield from cur


def recent_predictions(conn: Connection, limit: int = 20) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT p.id, p.image_sha256, p.label, p.confidence, p.model_version, p.latency_ms, p.created_at,"
        " l.label AS confirmed_label FROM predictions p LEFT JOIN labels l ON l.image_sha256 = p.image_sha256"
        " ORDER BY p.id DESC LIMIT %s",
        (limit,),
    ).fetchall()


def get_image(conn: Connection, sha256: str) -> dict[str, Any] | None:
    return conn.execute("SELECT sha256, content, format FROM images WHERE sha256 = %s", (sha256,)).fetchone()


def feedback_accuracy(conn: Connection, window: int = 100) -> tuple[float | None, int]:
    """Share of the last `window` confirmed predictions whose label the user confirmed."""
    row = conn.execute(
        "SELECT avg((p.label = l.label)::int)::float AS acc, count(*) AS n FROM ("
        " SELECT prediction_id FROM labels WHERE source = 'feedback' AND prediction_id IS NOT NULL"
        " ORDER BY updated_at DESC LIMIT %s) f"
        " JOIN predictions p ON p.id = f.prediction_id JOIN labels l ON l.prediction_id = p.id",
        (window,),
    ).fetchone()
    return (row["acc"], int(row["n"]))


def record_model_load(conn: Connection, *, version: str, source: str, outcome: str, detail: str = "") -> None:
    conn.execute(
        "INSERT INTO model_loads (model_version, model_source, outcome, detail) VALUES (%s, %s, %s, %s)",
        (version, source, outcome, detail),
    )


# --- retrain bookkeeping -------------------------------------------------------------

RETRAIN_COLUMNS = (
    "id, last_prediction_id, prediction_count, state, dag_run_id, attempts, next_attempt_at, last_error,"
    " requested_at, triggered_at, started_at, finished_at, data_version, model_version_before,"
    " model_version_after, gate_decision, gate_details"
)


def list_retrain_requests(conn: Connection, limit: int = 50) -> list[dict[str, Any]]:
    return conn.execute(
        f"SELECT {RETRAIN_COLUMNS} FROM retrain_requests ORDER BY id DESC LIMIT %s", (limit,)
    ).fetchall()


def get_retrain_request(conn: Connection, request_id: int) -> dict[str, Any] | None:
    return conn.execute(f"SELECT {RETRAIN_COLUMNS} FROM retrain_requests WHERE id = %s", (request_id,)).fetchone()


def claim_due_retrain_request(conn: Connection) -> dict[str, Any] | None:
    """Lock the oldest pending request that is due; other workers skip it."""
    return conn.execute(
        f"SELECT {RETRAIN_COLUMNS} FROM retrain_requests WHERE state = 'pending' AND next_attempt_at <= now()"
        " ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
    ).fetchone()


def mark_retrain_triggered(conn: Connection, request_id: int, dag_run_id: str, model_version_before: str) -> None:
    conn.execute(
        "UPDATE retrain_requests SET state = 'triggered', dag_run_id = %s, triggered_at = now(),"
        " attempts = attempts + 1, last_error = NULL, model_version_before = %s WHERE id = %s",
        (dag_run_id, model_version_before, request_id),
    )


def mark_retrain_retry(conn: Connection, request_id: int, error: str, delay_s: float) -> None:
    conn.execute(
        "UPDATE retrain_requests SET attempts = attempts + 1, last_error = %s,"
        " next_attempt_at = now() + make_interval(secs => %s) WHERE id = %s",
        (error, delay_s, request_id),
    )


_UPDATABLE = {
    "state",
    "started_at",
    "finished_at",
    "data_version",
    "model_version_after",
    "gate_decision",
    "gate_details",
    "last_error",
}


def update_retrain_request(conn: Connection, request_id: int, **fields: Any) -> None:
    """Record what the pipeline reports about a request (state, data version, gate...)."""
    unknown = set(fields) - _UPDATABLE
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    if not fields:
        return
    assignments = ", ".join(f"{name} = %s" for name in fields)
    values = [Jsonb(v) if name == "gate_details" and v is not None else v for name, v in fields.items()]
    conn.execute(f"UPDATE retrain_requests SET {assignments} WHERE id = %s", (*values, request_id))


def retrain_state_counts(conn: Connection) -> dict[str, int]:
    rows = conn.execute("SELECT state, count(*) AS n FROM retrain_requests GROUP BY state").fetchall()
    return {r["state"]: int(r["n"]) for r in rows}


def last_retrain_duration(conn: Connection) -> float | None:
    row = conn.execute(
        "SELECT extract(epoch FROM finished_at - requested_at)::float AS s FROM retrain_requests"
        " WHERE finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT 1"
    ).fetchone()
    return None if row is None else float(row["s"])
