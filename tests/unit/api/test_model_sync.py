"""ModelSync's retry bookkeeping, with the registry and the loader replaced (the real MLflow
is stopped and started in tests/integration/test_registry_faults.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from api import model_sync
from api.model_sync import ModelSync
from inference.model_holder import ModelHolder, ModelLoadError
from utils.settings import Settings


class Stub:
    def __init__(self, version: str) -> None:
        self.version, self.source = version, "stub"


class Registry:
    """The champion is v2; downloads fail while `broken`."""

    def __init__(self) -> None:
        self.broken = True
        self.downloads = 0
        self.down = False

    def champion(self, settings):
        if self.down:
            raise RuntimeError("connection refused")
        return {"version": "2", "run_id": "r2"}

    def download_serving(self, settings, run_id, dst: Path) -> Path:
        self.downloads += 1
        if self.broken:
            raise OSError("artifact download interrupted")
        return dst


@pytest.fixture
def sync(monkeypatch, tmp_path):
    reg = Registry()
    monkeypatch.setattr(model_sync.registry, "champion", reg.champion)
    monkeypatch.setattr(model_sync.registry, "download_serving", reg.download_serving)
    monkeypatch.setattr(model_sync, "load_model_dir", lambda path, source, version: Stub(version))
    monkeypatch.setattr(model_sync, "record_load", lambda *a, **k: None)
    settings = Settings(model_retry_initial_s=0.3, model_retry_max_s=1.0, model_poll_seconds=30)
    s = ModelSync(settings, ModelHolder(), pool=None)
    yield s, reg
    s.stop()


def test_a_failed_version_is_retried_after_its_backoff(sync) -> None:
    s, reg = sync
    s.holder.swap(Stub("v1"))
    with pytest.raises(ModelLoadError, match="could not be fetched"):
        s.poll_once()
    assert reg.downloads == 1 and s.holder.current.version == "v1"  # the old model keeps serving
    assert s.poll_once() is False and reg.downloads == 1  # backing off: not retried at once
    reg.broken = False
    time.sleep(0.35)
    assert s.poll_once() is True and s.holder.current.version == "v2"


def test_backoff_doubles_and_is_capped(sync) -> None:
    s, _ = sync
    assert [s.retry_delay(n) for n in (1, 2, 3, 10, 10_000)] == [0.3, 0.6, 1.0, 1.0, 1.0]


def test_without_a_model_the_registry_is_polled_at_the_retry_pace(sync) -> None:
    s, reg = sync
    reg.down = True
    assert s.next_wait() == 0.3
    with pytest.raises(RuntimeError):
        s.poll_once()
    assert "unreachable" in s.holder.last_error
    s.holder.swap(Stub("v2"))
    assert s.next_wait() == 30  # serving: the normal poll interval


def test_the_poll_thread_loads_the_champion_once_the_registry_answers(sync) -> None:
    s, reg = sync
    reg.down = True
    reg.broken = False
    s.start()
    time.sleep(0.5)
    assert not s.holder.loaded
    reg.down = False
    deadline = time.monotonic() + 5
    while not s.holder.loaded and time.monotonic() < deadline:
        time.sleep(0.05)
    assert s.holder.loaded and s.holder.current.version == "v2"
