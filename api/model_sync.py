"""Keeps the served model in step with the registry's `@champion` alias.

`POST /admin/reload` calls `reload_champion` directly; every backend process also polls
the alias, so several replicas converge without a push. A version that fails to load
leaves the previous model serving and is remembered, so it is not retried every poll.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from pathlib import Path

from api import metrics
from Database_connection import repository as repo
from inference.model_holder import LoadedModel, ModelHolder, ModelLoadError, load_model_dir
from utils.settings import Settings

log = logging.getLogger(__name__)


def record_load(pool, version: str, source: str, outcome: str, detail: str = "") -> None:
    """Count a (re)load, audit it in `model_loads`, and on success move the version metric."""
    metrics.MODEL_RELOADS.labels(outcome=outcome).inc()
    if outcome == "loaded":
        metrics.set_model_info(version, source)
    try:
        with pool.connection(timeout=5) as conn:
            repo.record_model_load(conn, version=version, source=source, outcome=outcome, detail=detail[:1000])
    except Exception:
        log.warning("could not record the model load", exc_info=True)


class ModelSync:
    def __init__(self, settings: Settings, holder: ModelHolder, pool) -> None:
        self.settings = settings
        self.holder = holder
        self.pool = pool
        self.cache = Path(tempfile.mkdtemp(prefix="rps-models-"))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._failed_versions: set[str] = set()
        self._thread = threading.Thread(target=self._poll, name="model-sync", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        shutil.rmtree(self.cache, ignore_errors=True)

    def reload_champion(self, force: bool = False) -> tuple[LoadedModel, LoadedModel | None]:
        """Load `models:/<name>@champion` and swap it in; returns (current, previous)."""
        from inference.registry import champion, download_serving

        with self._lock:
            found = champion(self.settings)
            if found is None:
                raise ModelLoadError(f"the registry has no {self.settings.registered_model_name}@champion yet")
            version = f"v{found['version']}"
            current = self.holder.peek()
            if current is not None and current.version == version and not force:
                return current, None
            source = f"models:/{self.settings.registered_model_name}@champion"
            try:
                path = download_serving(self.settings, found["run_id"], self.cache / version)
                model = load_model_dir(path, source=source, version=version)
            except ModelLoadError as exc:
                self._failed_versions.add(version)
                self.holder.note_failure(str(exc))
                record_load(self.pool, version, source, "failed", str(exc))
                raise
            except Exception as exc:
                self._failed_versions.add(version)
                self.holder.note_failure(f"{version} could not be fetched: {exc}")
                record_load(self.pool, version, source, "failed", str(exc))
                raise ModelLoadError(f"{version} could not be fetched: {exc}") from exc
            previous = self.holder.swap(model)
            self._failed_versions.discard(version)
            record_load(self.pool, version, source, "loaded")
            return model, previous

    def _poll(self) -> None:
        from inference.registry import champion

        while not self._stop.wait(self.settings.model_poll_seconds):
            try:
                found = champion(self.settings)
                if found is None:
                    continue
                version = f"v{found['version']}"
                current = self.holder.peek()
                if (current is None or current.version != version) and version not in self._failed_versions:
                    self.reload_champion()
            except Exception:
                log.warning("model poll failed", exc_info=True)
