-- Images are content-addressed: the same bytes uploaded twice are one row.
CREATE TABLE images (
    sha256        char(64) PRIMARY KEY,
    content       bytea       NOT NULL,
    format        text        NOT NULL CHECK (format IN ('jpeg', 'png')),
    width         integer     NOT NULL CHECK (width > 0),
    height        integer     NOT NULL CHECK (height > 0),
    size_bytes    integer     NOT NULL CHECK (size_bytes > 0),
    source        text        NOT NULL CHECK (source IN ('predict', 'upload', 'dataset')),
    original_name text,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE predictions (
    id            bigserial PRIMARY KEY,
    image_sha256  char(64)    NOT NULL REFERENCES images (sha256),
    label         text        NOT NULL CHECK (label IN ('rock', 'paper', 'scissors')),
    confidence    real        NOT NULL CHECK (confidence BETWEEN 0 AND 1),
    probabilities jsonb       NOT NULL,
    model_version text        NOT NULL,
    latency_ms    real        NOT NULL CHECK (latency_ms >= 0),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX predictions_created_at_idx ON predictions (created_at);
CREATE INDEX predictions_image_idx ON predictions (image_sha256);

-- One human-confirmed label per image; the last answer wins.
CREATE TABLE labels (
    image_sha256  char(64) PRIMARY KEY REFERENCES images (sha256),
    label         text        NOT NULL CHECK (label IN ('rock', 'paper', 'scissors')),
    source        text        NOT NULL CHECK (source IN ('feedback', 'upload', 'dataset')),
    prediction_id bigint REFERENCES predictions (id),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX labels_label_idx ON labels (label);

-- A retrain request per threshold crossing. The counter "predictions since the last
-- retrain" is derived: predictions with id > max(last_prediction_id). The unique
-- last_prediction_id plus an advisory lock makes one request per crossing under concurrency.
CREATE TABLE retrain_requests (
    id                   bigserial PRIMARY KEY,
    last_prediction_id   bigint      NOT NULL UNIQUE,
    prediction_count     integer     NOT NULL,
    state                text        NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'triggered', 'running', 'succeeded', 'failed')),
    dag_run_id           text        UNIQUE,
    attempts             integer     NOT NULL DEFAULT 0,
    next_attempt_at      timestamptz NOT NULL DEFAULT now(),
    last_error           text,
    requested_at         timestamptz NOT NULL DEFAULT now(),
    triggered_at         timestamptz,
    started_at           timestamptz,
    finished_at          timestamptz,
    data_version         text,
    model_version_before text,
    model_version_after  text,
    gate_decision        text CHECK (gate_decision IN ('promoted', 'rejected')),
    gate_details         jsonb
);
CREATE INDEX retrain_requests_pending_idx ON retrain_requests (next_attempt_at) WHERE state = 'pending';

-- What each backend process loaded and when: the audit trail behind GET /model.
CREATE TABLE model_loads (
    id            bigserial PRIMARY KEY,
    model_version text        NOT NULL,
    model_source  text        NOT NULL,
    outcome       text        NOT NULL CHECK (outcome IN ('loaded', 'failed')),
    detail        text,
    loaded_at     timestamptz NOT NULL DEFAULT now()
);
