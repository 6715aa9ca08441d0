"""The product's promise, end to end on the real stack: a new user's corrections, sent through
the public API, produce (with no manual step) a promoted model that is better on that user's
other photos. The short version of benchmarks/learning_curve.py."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from benchmarks.learning_curve import DATASET, curve, user_photos
from tests.conftest import DATASETS
from tests.retrain.conftest import LoopStack
from tests.support.procs import PROJECT_ROOT, wait_until
from utils.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.services]
USER = "IMG_7079"  # a reserve clip: one person, camera and background no model trained on


def test_a_new_users_corrections_improve_the_served_model_on_their_photos(loop_stack: LoopStack) -> None:
    loop = loop_stack
    feed_photos, test_photos = user_photos(DATASETS / DATASET, USER, Settings())
    subprocess.run(  # the first champion, as `make up` trains it
        [sys.executable, "-m", "src.pipeline", "all", "--if-no-champion"],
        env={**os.environ, **loop.backend_env},
        cwd=PROJECT_ROOT,
        check=True,
        capture_output=True,
        timeout=900,
    )
    batch = len(feed_photos) // 2
    loop.backend.stop()
    loop.backend_env["RETRAIN_THRESHOLD"] = str(batch)
    loop.start_backend()
    c = httpx.Client(base_url=loop.backend_url, timeout=60)
    wait_until(lambda: c.get("/model").json()["version"] == "v1", 60, "the first champion to serve")

    rows = curve(c, feed_photos, test_photos, batch, 2, 600)
    print(rows)
    assert [r["state"] for r in rows[1:]] == ["succeeded", "succeeded"], rows
    assert "promoted" in {r["gate"] for r in rows[1:]}, rows
    assert rows[-1]["accuracy"] > rows[0]["accuracy"], rows
    assert rows[-1]["model"] != rows[0]["model"]
