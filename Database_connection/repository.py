"""Typed queries. Every SQL statement of the services lives here, none in route handlers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import Connection
from psycopg.types.json import Jsonb


@dataclass(frozen=True)
class StoredPrediction:
    id: int
    created_at: datetime
    retrain_request_id: int | None
    predictions_since_retrain: int


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


def record_prediction(
    conn: Connection,
    *,
    sha256: str,
    content: bytes,
    fmt: str,
    width: int,
    height: int,
    original_name: str | None,
    label: str,
    confidence: float,
    probabilities: dict[str, float],
    model_version: str,
    latency_ms: float,
    threshold: int,
) -> StoredPrediction:
    """Store the image (once per hash) and the prediction, and record a retrain request when
    this prediction brings the derived count to `threshold` — one atomic round trip
    (the `record_prediction` SQL function, migration 0002)."""
    row = conn.execute(
        "SELECT * FROM record_prediction(%s, %s, %s, %s::int, %s::int, 'predict', %s::text, %s::text,"
        " %s::real, %s, %s::text, %s::real, %s::int)",
        (
            sha256,
            content,
            fmt,
            width,
            height,
            original_name,
            label,
            confidence,
            Jsonb(probabilities),
            model_version,
            latency_ms,
            threshold,
        ),
    ).fetchone()
    return StoredPrediction(
        id=row["prediction_id"],
        created_at=row["created_at"],
        retrain_request_id=row["retrain_request_id"],
        predictions_since_retrain=row["predictions_since_retrain"],
    )


def get_prediction(conn: Connection, prediction_id: int) -> dict[str, Any] | None:
    return conn.execute(
        "SELECT id, image_sha256, label, confidence, probabilities, model_version, latency_ms, created_at"
        " FROM predictions WHERE id = %s",
        (prediction_id,),
    ).fetchone()


def upsert_label(
    conn: Connection,
    *,
    image_sha256: str,
    label: str,
    source: str,
    prediction_id: int | None = None,
    review: str = "approved",
) -> None:
    """The human-confirmed label of an image; a later answer replaces an earlier one, and
    under the quarantine (`review='pending'`) needs approving again."""
    conn.execute(
        "INSERT INTO labels (image_sha256, label, source, prediction_id, review) VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (image_sha256) DO UPDATE SET label = EXCLUDED.label, source = EXCLUDED.source,"
        " prediction_id = EXCLUDED.prediction_id, review = EXCLUDED.review, reviewed_at = NULL,"
        " updated_at = now()",
        (image_sha256, label, source, prediction_id, review),
    )


def labels_for_review(conn: Connection, review: str = "pending", limit: int = 50) -> list[dict[str, Any]]:
    """Labels in one review state, oldest first, with the prediction they answered (if any)."""
    return conn.execute(
        "SELECT l.image_sha256, l.label, l.source, l.prediction_id, p.label AS predicted_label,"
        " l.review, l.updated_at, l.reviewed_at FROM labels l LEFT JOIN predictions p ON p.id = l.prediction_id"
        " WHERE l.review = %s ORDER BY l.updated_at, l.image_sha256 LIMIT %s",
        (review, limit),
    ).fetchall()


def review_labels(conn: Connection, image_sha256s: list[str], decision: str) -> int:
    """Approve or reject pending labels; returns how many changed (already-decided ones stay)."""
    cur = conn.execute(
        "UPDATE labels SET review = %s, reviewed_at = now() WHERE review = 'pending' AND image_sha256 = ANY(%s)",
        (decision, image_sha256s),
    )
    return cur.rowcount


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
        " (SELECT count(*) FROM labels WHERE review = 'pending') AS labels_awaiting_review,"
        " (SELECT count(*) FROM retrain_requests) AS retrain_requests"
    ).fetchone()
    return {k: int(v) for k, v in row.items()}


def labels_by_class(conn: Connection) -> dict[str, int]:
    rows = conn.execute("SELECT label, count(*) AS n FROM labels GROUP BY label").fetchall()
    return {r["label"]: int(r["n"]) for r in rows}


def iter_labelled_images(conn: Connection, batch: int = 200) -> Iterator[dict[str, Any]]:
    """Every image with an approved human label (what training may use), streamed so memory
    stays flat. Labels held by the quarantine (pending) or rejected by an operator are skipped."""
    with conn.cursor(name="labelled_images") as cur:
        cur.itersize = batch
        cur.execute(
            "SELECT i.sha256, i.content, i.format, l.label, l.source"
            " FROM labels l JOIN images i ON i.sha256 = l.image_sha256 WHERE l.review = 'approved'"
            " ORDER BY i.sha256"
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
    " model_version_after, gate_decision, gate_details, superseded_by, skip_reason"
)


def list_retrain_requests(conn: Connection, limit: int = 50) -> list[dict[str, Any]]:
    return conn.execute(
        f"SELECT {RETRAIN_COLUMNS} FROM retrain_requests ORDER BY id DESC LIMIT %s", (limit,)
    ).fetchall()


def retrain_run_active(conn: Connection) -> bool:
    """A delivered request whose run has not finished yet."""
    row = conn.execute("SELECT 1 FROM retrain_requests WHERE state IN ('triggered', 'running') LIMIT 1").fetchone()
    return row is not None


# Advisory lock key: one retrain delivery in flight across every dispatcher of every replica
# (72410001 is the migrator's, 72410002 the prediction counter's in `record_prediction`).
RETRAIN_DELIVERY_LOCK = 72_410_003


def try_lock_retrain_delivery(conn: Connection) -> bool:
    """Take the delivery lock for this session if no other dispatcher holds it. Session-level,
    so it spans the Airflow call made outside any transaction, and PostgreSQL drops it with
    the connection if the process dies mid-delivery."""
    row = conn.execute("SELECT pg_try_advisory_lock(%s) AS locked", (RETRAIN_DELIVERY_LOCK,)).fetchone()
    return bool(row["locked"])


def unlock_retrain_delivery(conn: Connection) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s)", (RETRAIN_DELIVERY_LOCK,))


def claim_due_retrain_request(conn: Connection) -> dict[str, Any] | None:
    """Lock the newest pending request that is due (other workers skip it) and mark the older
    pending ones superseded by it: one run retrains on every label anyway."""
    row = conn.execute(
        f"SELECT {RETRAIN_COLUMNS} FROM retrain_requests WHERE state = 'pending' AND next_attempt_at <= now()"
        " ORDER BY id DESC LIMIT 1 FOR UPDATE SKIP LOCKED"
    ).fetchone()
    if row is not None:
        conn.execute(
            "UPDATE retrain_requests SET state = 'superseded', superseded_by = %s, finished_at = now()"
            " WHERE state = 'pending' AND id < %s",
            (row["id"], row["id"]),
        )
    return row


def postpone_retrain_request(conn: Connection, request_id: int, delay_s: float) -> None:
    """Lease a claimed request: other dispatchers skip it until `delay_s` has passed."""
    conn.execute(
        "UPDATE retrain_requests SET next_attempt_at = now() + make_interval(secs => %s) WHERE id = %s",
        (delay_s, request_id),
    )


def mark_retrain_triggered(conn: Connection, request_id: int, dag_run_id: str, model_version_before: str) -> None:
    conn.execute(
        "UPDATE retrain_requests SET state = 'triggered', dag_run_id = %s, triggered_at = now(),"
        " attempts = attempts + 1, last_error = NULL, model_version_before = %s WHERE id = %s AND state = 'pending'",
        (dag_run_id, model_version_before, request_id),
    )


def mark_retrain_retry(conn: Connection, request_id: int, error: str, delay_s: float) -> None:
    conn.execute(
        "UPDATE retrain_requests SET attempts = attempts + 1, last_error = %s,"
        " next_attempt_at = now() + make_interval(secs => %s) WHERE id = %s AND state = 'pending'",
        (error, delay_s, request_id),
    )


def fail_pending_retrain_request(conn: Connection, request_id: int, error: str) -> None:
    """A request Airflow refused for good (credentials, DAG id): failed, with the reason."""
    conn.execute(
        "UPDATE retrain_requests SET state = 'failed', finished_at = now(), attempts = attempts + 1,"
        " last_error = %s WHERE id = %s AND state = 'pending'",
        (error, request_id),
    )


def active_retrain_requests(conn: Connection) -> list[dict[str, Any]]:
    """Every delivered request whose run has not ended, oldest first (no limit: an orphan
    must never hide behind newer requests)."""
    return conn.execute(
        f"SELECT {RETRAIN_COLUMNS} FROM retrain_requests WHERE state IN ('triggered', 'running') ORDER BY id"
    ).fetchall()


_UPDATABLE = {
    "state",
    "started_at",
    "finished_at",
    "data_version",
    "model_version_after",
    "gate_decision",
    "gate_details",
    "last_error",
    "skip_reason",
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


# --- monitoring (read at scrape time by api.metrics.DatabaseCollector) ----------------

# A retrain's outcome as operators read it: failed, or the gate's decision when it finished.
_RETRAIN_OUTCOME = "CASE WHEN state = 'failed' THEN 'failed' ELSE coalesce(gate_decision, state) END"
_FINISHED_RETRAINS = (
    f"SELECT {_RETRAIN_OUTCOME} AS outcome, extract(epoch FROM finished_at - requested_at)::float AS s"
    " FROM retrain_requests WHERE finished_at IS NOT NULL AND state IN ('succeeded', 'failed')"
)


def retrain_duration_histogram(conn: Connection, buckets: list[float]) -> dict[str, dict[str, Any]]:
    """Finished retrains by outcome (failed/promoted/rejected): count, total seconds from the
    request to the end of the run, and cumulative counts for each `le` in `buckets`."""
    totals = conn.execute(
        f"SELECT outcome, count(*) AS n, sum(s) AS total FROM ({_FINISHED_RETRAINS}) d GROUP BY outcome"
    ).fetchall()
    out = {r["outcome"]: {"count": int(r["n"]), "sum": float(r["total"]), "buckets": []} for r in totals}
    rows = conn.execute(
        f"SELECT d.outcome, le, count(*) FILTER (WHERE d.s <= le) AS n FROM ({_FINISHED_RETRAINS}) d"
        " CROSS JOIN unnest(%s::float8[]) AS le GROUP BY d.outcome, le ORDER BY d.outcome, le",
        (buckets,),
    ).fetchall()
    for r in rows:
        out[r["outcome"]]["buckets"].append((float(r["le"]), int(r["n"])))
    return out


def last_finished_retrain(conn: Connection) -> dict[str, Any] | None:
    """The most recent retrain that ran to an end (succeeded or failed; requests closed
    without a run of their own are not runs): outcome, finish time (epoch seconds) and
    duration from the request."""
    return conn.execute(
        f"SELECT {_RETRAIN_OUTCOME} AS outcome, state, extract(epoch FROM finished_at)::float AS finished_at,"
        " extract(epoch FROM finished_at - requested_at)::float AS duration FROM retrain_requests"
        " WHERE finished_at IS NOT NULL AND state IN ('succeeded', 'failed')"
        " ORDER BY finished_at DESC, id DESC LIMIT 1"
    ).fetchone()


def labels_awaiting_retrain(conn: Connection) -> tuple[int, float | None]:
    """Human labels (feedback, upload) given after the last successful retrain assembled its
    data, and the epoch time of the oldest of them: labels no served model has learnt from."""
    row = conn.execute(
        "SELECT count(*) AS n, extract(epoch FROM min(updated_at))::float AS oldest FROM labels"
        " WHERE source IN ('feedback', 'upload') AND updated_at > coalesce("
        " (SELECT max(coalesce(started_at, triggered_at, requested_at)) FROM retrain_requests"
        "  WHERE state = 'succeeded'), '-infinity'::timestamptz)"
    ).fetchone()
    return int(row["n"]), row["oldest"]


def fail_retrain_if_open(conn: Connection, request_id: int, error: str) -> None:
    """Mark failed unless the pipeline already recorded an outcome (its reason wins)."""
    conn.execute(
        "UPDATE retrain_requests SET state = 'failed', finished_at = now(), last_error = coalesce(last_error, %s)"
        " WHERE id = %s AND state IN ('triggered', 'running')",
        (error, request_id),
    )


# --- retention -------------------------------------------------------------------------


def prune_unlabelled_images(conn: Connection, older_than_days: float, batch: int = 200) -> dict[str, int]:
    """Delete up to `batch` stored images that nobody labelled, first stored and last
    predicted on more than `older_than_days` ago, with their predictions. Labelled images are
    training data and are never touched; rows another session holds are skipped."""
    row = conn.execute(
        "WITH doomed AS ("
        "  SELECT i.sha256, i.size_bytes FROM images i"
        "  WHERE i.created_at < now() - make_interval(secs => %(age)s)"
        "    AND NOT EXISTS (SELECT 1 FROM labels l WHERE l.image_sha256 = i.sha256)"
        "    AND NOT EXISTS (SELECT 1 FROM predictions p WHERE p.image_sha256 = i.sha256"
        "                    AND p.created_at >= now() - make_interval(secs => %(age)s))"
        "  ORDER BY i.created_at LIMIT %(batch)s FOR UPDATE OF i SKIP LOCKED"
        "), gone_predictions AS ("
        "  DELETE FROM predictions p USING doomed d WHERE p.image_sha256 = d.sha256 RETURNING p.id"
        "), gone_images AS ("
        "  DELETE FROM images i USING doomed d WHERE i.sha256 = d.sha256 RETURNING i.size_bytes"
        ")"
        " SELECT (SELECT count(*) FROM gone_images) AS images,"
        " (SELECT count(*) FROM gone_predictions) AS predictions,"
        " (SELECT coalesce(sum(size_bytes), 0) FROM gone_images) AS bytes",
        {"age": older_than_days * 86400.0, "batch": batch},
    ).fetchone()
    return {k: int(row[k]) for k in ("images", "predictions", "bytes")}


def database_size_bytes(conn: Connection) -> int:
    return int(conn.execute("SELECT pg_database_size(current_database()) AS n").fetchone()["n"])
