"""The backend's /metrics, in-process over a real database and the real trained model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.auth import operator_headers
from tests.support.procs import PROJECT_ROOT


def scrape(client) -> dict[str, list]:
    """/metrics as {family name: samples}."""
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    return {f.name: f.samples for f in text_string_to_metric_families(r.text)}


def value(families: dict, sample_name: str, **labels: str) -> float:
    family = sample_name.removesuffix("_total").removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")
    found = [
        s.value
        for s in families.get(family, [])
        if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    return sum(found)


def _predict(client, path: Path):
    return client.post("/predict", files={"file": (path.name, path.read_bytes(), "application/octet-stream")})


def test_metrics_cover_the_issue_table(client, sample_images) -> None:
    before = scrape(client)
    r = _predict(client, sample_images["rock"][0])
    assert r.status_code == 200
    pred = r.json()
    assert client.post("/feedback", json={"prediction_id": pred["prediction_id"], "label": "rock"}).status_code == 200
    assert _predict(client, Path(__file__)).status_code == 415
    sha = pred["image_sha256"]
    assert client.get(f"/images/{sha}", headers=operator_headers()).status_code == 200
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # Request duration by route template, method and status; endpoint hits.
    assert delta("http_request_duration_seconds_count", handler="/predict", method="POST", status="200") == 1
    assert delta("http_request_duration_seconds_count", handler="/predict", method="POST", status="415") == 1
    assert delta("http_requests_total", handler="/images/{sha256}", method="GET", status="200") == 1
    assert delta("http_requests_total", handler="/feedback", method="POST", status="200") == 1
    assert value(after, "http_requests_total", handler="/metrics", method="GET", status="200") >= 1
    assert not [s for s in after["http_requests"] if sha in s.labels["handler"]], "raw paths would explode cardinality"
    # Model time, class, confidence, refused inputs, feedback.
    assert delta("rps_prediction_latency_seconds_count") == 1
    assert delta("rps_predictions_total", label=pred["label"]) == 1
    assert delta("rps_prediction_confidence_count") == 1
    assert delta("rps_prediction_confidence_sum") == pytest.approx(pred["confidence"], abs=1e-6)
    assert delta("rps_rejected_inputs_total", reason="not_an_image") == 1
    assert delta("rps_feedback_total", correct=str(pred["label"] == "rock").lower()) == 1
    # Model version, loaded; database-derived values; process and pool.
    assert value(after, "rps_model_info", version=pred["model_version"]) == 1
    assert value(after, "rps_model_loaded") == 1
    assert value(after, "rps_predictions_since_retrain") == 1
    assert value(after, "rps_retrain_threshold") == 3
    assert {s.labels["state"] for s in after["rps_retrain_requests"]} >= {
        "pending", "triggered", "running", "succeeded", "failed",
    }  # fmt: skip
    assert value(after, "rps_feedback_accuracy") == (1.0 if pred["label"] == "rock" else 0.0)
    assert value(after, "rps_feedback_window_size") == 1
    assert value(after, "rps_labels_awaiting_retrain") == 1
    assert value(after, "rps_database_up") == 1
    assert value(after, "process_resident_memory_bytes") > 50e6
    assert "process_cpu_seconds" in after
    assert value(after, "rps_db_pool_size") >= 1
    assert "rps_db_pool_connections_in_use" in after


def test_unhandled_errors_count_as_500(client) -> None:
    def boom() -> None:
        raise RuntimeError("boom (raised by the test)")

    client.app.add_api_route("/test-boom", boom)
    before = value(scrape(client), "http_requests_total", handler="/test-boom", status="500")
    with pytest.raises(RuntimeError):
        client.get("/test-boom")
    assert value(scrape(client), "http_requests_total", handler="/test-boom", status="500") == before + 1


def test_model_version_changes_after_a_reload(client, model_dir: Path, tmp_path: Path) -> None:
    """A swap (what `POST /admin/reload` and the registry poll do) changes rps_model_info:
    the new version is 1 and the previous one is no longer reported as served."""
    from api import metrics

    old = client.get("/model").json()["version"]
    assert {s.labels["version"]: s.value for s in scrape(client)["rps_model_info"]} == {old: 1}

    new_dir = tmp_path / "reloaded"
    shutil.copytree(model_dir, new_dir)
    meta = json.loads((new_dir / "metadata.json").read_text())
    meta["version"] = f"{old}-reloaded"
    (new_dir / "metadata.json").write_text(json.dumps(meta))
    reloads_before = value(scrape(client), "rps_model_reloads_total", outcome="loaded")

    model = client.app.state.holder.load_and_swap(new_dir, source=f"local:{new_dir}")
    metrics.MODEL_RELOADS.labels(outcome="loaded").inc()
    metrics.set_model_info(model.version, model.source)

    after = scrape(client)
    assert {s.labels["version"]: s.value for s in after["rps_model_info"]} == {f"{old}-reloaded": 1}
    assert value(after, "rps_model_reloads_total", outcome="loaded") == reloads_before + 1
    assert client.get("/model").json()["version"] == f"{old}-reloaded"


def test_retrain_metrics_come_from_the_table(client, db_url: str, sample_images) -> None:
    """Durations, outcomes and the labels waiting are derived exactly from retrain_requests."""
    paths = [p for label in ("rock", "paper", "scissors") for p in sample_images[label][:4]]
    ids = [_predict(client, p).json()["prediction_id"] for p in paths]  # 12 predictions: 4 requests
    t0 = datetime.now(UTC) - timedelta(hours=3)
    with psycopg.connect(db_url, autocommit=True) as conn:
        reqs = [r[0] for r in conn.execute("SELECT id FROM retrain_requests ORDER BY id").fetchall()]
        assert len(reqs) == 4
        # promoted after 100 s, rejected after 500 s, then one that failed after 4000 s
        for rid, (start, seconds, state, gate) in zip(
            reqs[:3],
            [(0, 100, "succeeded", "promoted"), (1000, 500, "succeeded", "rejected"), (2000, 4000, "failed", None)],
            strict=True,
        ):
            conn.execute(
                "UPDATE retrain_requests SET state = %s, gate_decision = %s, requested_at = %s,"
                " started_at = %s, finished_at = %s WHERE id = %s",
                (
                    state,
                    gate,
                    t0 + timedelta(seconds=start),
                    t0 + timedelta(seconds=start + 10),
                    t0 + timedelta(seconds=start + seconds),
                    rid,
                ),
            )
        # A request coalesced into a later one is closed without a run: not a retrain outcome.
        conn.execute("UPDATE retrain_requests SET state = 'superseded', finished_at = now() WHERE id = %s", (reqs[3],))
    # Feedback now: newer than the last successful retrain's start, so it waits for the next one.
    for pid in ids[:2]:
        assert client.post("/feedback", json={"prediction_id": pid, "label": "rock"}).status_code == 200

    m = scrape(client)
    h = {(s.labels["outcome"], s.labels.get("le")): s.value for s in m["rps_retrain_duration_seconds"]}
    assert h[("promoted", "60.0")] == 0 and h[("promoted", "120.0")] == 1 and h[("promoted", "+Inf")] == 1
    assert h[("rejected", "300.0")] == 0 and h[("rejected", "600.0")] == 1
    assert h[("failed", "3600.0")] == 0 and h[("failed", "7200.0")] == 1
    assert value(m, "rps_retrain_duration_seconds_sum", outcome="failed") == pytest.approx(4000)
    assert value(m, "rps_retrain_duration_seconds_count") == 3
    assert value(m, "rps_last_retrain_failed") == 1
    assert value(m, "rps_last_retrain_duration_seconds") == pytest.approx(4000)
    assert value(m, "rps_last_retrain_finished_timestamp_seconds") == pytest.approx(
        (t0 + timedelta(seconds=6000)).timestamp(), abs=1e-3
    )
    assert value(m, "rps_labels_awaiting_retrain") == 2
    assert value(m, "rps_oldest_label_awaiting_retrain_timestamp_seconds") > (t0 + timedelta(seconds=1010)).timestamp()
    states = {s.labels["state"]: s.value for s in m["rps_retrain_requests"]}
    assert states["failed"] == 1 and states["superseded"] == 1


def test_database_down_is_reported_not_raised(client) -> None:
    client.app.state.pool.close()
    m = scrape(client)
    assert value(m, "rps_database_up") == 0
    assert "rps_predictions_since_retrain" not in m


def test_multiprocess_workers_merge_and_dead_workers_are_forgotten(tmp_path: Path, monkeypatch) -> None:
    """Two workers that died without cleaning up (as uvicorn's do: SIGTERM, no atexit):
    their counters stay in the totals, their live gauges (the model they served) go."""
    from fastapi import FastAPI

    from api import metrics

    script = textwrap.dedent(
        """
        import os, signal
        from api import metrics
        metrics.set_model_info("v1", "local:a")
        metrics.PREDICTIONS.labels(label="rock").inc(3)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    for _ in range(2):
        r = subprocess.run(
            [sys.executable, "-c", script],
            cwd=PROJECT_ROOT,
            env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
        )
        assert r.returncode == -9, r.stderr
    assert len(list(tmp_path.glob("gauge_liveall_*.db"))) == 2

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    text = metrics.generate_latest(FastAPI()).decode()
    families = {f.name: f.samples for f in text_string_to_metric_families(text)}
    assert sum(s.value for s in families["rps_predictions"] if s.labels["label"] == "rock") == 6
    assert "rps_model_info" not in families, "dead workers must not keep reporting a served model"
    assert list(tmp_path.glob("gauge_live*.db")) == []


def test_multiprocess_model_info_reports_only_the_current_version(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import json
        from prometheus_client.multiprocess import MultiProcessCollector
        from api import metrics
        metrics.set_model_info("v1", "local:a")
        metrics.set_model_info("v2", "models:/rps@champion")
        info = [s for m in MultiProcessCollector(None).collect() if m.name == "rps_model_info" for s in m.samples]
        print(json.dumps([[s.labels["version"], s.value] for s in info]))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=PROJECT_ROOT,
        env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert sorted(map(tuple, json.loads(out.strip().splitlines()[-1]))) == [("v1", 0.0), ("v2", 1.0)]


def test_supervisor_prepares_an_empty_multiprocess_dir(tmp_path: Path) -> None:
    """`main.run` with several workers: a fresh directory, or the operator's one emptied."""
    script = textwrap.dedent(
        """
        import os
        from api import metrics
        path = metrics.use_multiprocess_dir()
        print(path, os.environ["PROMETHEUS_MULTIPROC_DIR"], sorted(p.name for p in path.iterdir()))
        """
    )

    def run(env: dict[str, str]) -> list[str]:
        out = subprocess.run(
            [sys.executable, "-c", script],
            cwd=PROJECT_ROOT,
            env={"PATH": "/usr/bin:/bin", **env},
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return out.strip().splitlines()[-1].split(" ", 2)

    fresh, exported, files = run({})
    assert fresh == exported and files == "[]"
    assert not Path(fresh).exists(), "the temporary directory is removed when the supervisor exits"

    configured = tmp_path / "metrics"
    configured.mkdir()
    (configured / "counter_12345.db").write_bytes(b"stale")
    path, exported, files = run({"PROMETHEUS_MULTIPROC_DIR": str(configured)})
    assert path == exported == str(configured) and files == "[]"
