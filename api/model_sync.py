"""Keeps the served model in step with the registry's `@champion` alias.

`POST /admin/reload` calls `reload_champion` directly; every backend process also polls
the alias, so several replicas converge without a push. A version that fails to download
or load leaves the previous model serving and is retried with exponential backoff (capped
at MODEL_RETRY_MAX_S), so a registry that was briefly down costs a delay, not the version.
While no model is loaded at all, the registry is polled at the retry pace rather than
every MODEL_POLL_SECONDS, so a backend started during an MLflow outage serves soon after
MLflow is back.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from api import metrics
from Database_connection import repository as repo
from inference import registry
from inference.model_holder import LoadedModel, ModelHolder, ModelLoadError, load_model_dir
from utils.settings import Settings

log = logging.getLogger(__name__)

# MLflow's client retries a refused connection 7 times with growing sleeps (minutes in all)
# and waits 120 s for an answer. The sync retries on its own schedule, and /admin/reload
# must answer, so each registry call here fails fast. These are MLflow's own switches, read
# by MLflow from the environment; an operator's values win.
MLFLOW_CLIENT_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


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
        for name, value in MLFLOW_CLIENT_ENV.items():
            os.environ.setdefault(name, value)
        self.settings = settings
        self.holder = holder
        self.pool = pool
        self.cache = Path(tempfile.mkdtemp(prefix="rps-models-"))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._failures: dict[str, tuple[int, float]] = {}  # version -> (attempts, monotonic retry time)
        self._lookup_failures = 0
        self._thread = threading.Thread(target=self._poll, name="model-sync", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        shutil.rmtree(self.cache, ignore_errors=True)

    def retry_delay(self, attempts: int) -> float:
        """MODEL_RETRY_INITIAL_S doubled per failed attempt, capped at MODEL_RETRY_MAX_S."""
        s = self.settings
        return min(s.model_retry_max_s, s.model_retry_initial_s * 2.0 ** min(max(attempts - 1, 0), 30))

    def _failed(self, version: str) -> None:
        attempts = self._failures.get(version, (0, 0.0))[0] + 1
        delay = self.retry_delay(attempts)
        self._failures[version] = (attempts, time.monotonic() + delay)
        log.warning("champion %s failed to load (attempt %d); next try in %.0f s", version, attempts, delay)

    def due(self, version: str) -> bool:
        """Whether a poll may (re)try `version` now: never failed, or its backoff has passed."""
        failure = self._failures.get(version)
        return failure is None or time.monotonic() >= failure[1]

    def reload_champion(self, force: bool = False) -> tuple[LoadedModel, LoadedModel | None]:
        """Load `models:/<name>@champion` and swap it in; returns (current, previous)."""
        with self._lock:
            try:
                found = registry.champion(self.settings)
            except Exception as exc:
                raise ModelLoadError(f"the model registry is unreachable: {exc}") from exc
            if found is None:
                raise ModelLoadError(f"the registry has no {self.settings.registered_model_name}@champion yet")
            version = f"v{found['version']}"
            current = self.holder.peek()
            if current is not None and current.version == version and not force:
                return current, None
            source = f"models:/{self.settings.registered_model_name}@champion"
            try:
                path = registry.download_serving(self.settings, found["run_id"], self.cache / version)
                model = load_model_dir(path, source=source, version=version)
            except ModelLoadError as exc:
                self._failed(version)
                self.holder.note_failure(str(exc))
                record_load(self.pool, version, source, "failed", str(exc))
                raise
            except Exception as exc:
                self._failed(version)
                self.holder.note_failure(f"{version} could not be fetched: {exc}")
                record_load(self.pool, version, source, "failed", str(exc))
                raise ModelLoadError(f"{version} could not be fetched: {exc}") from exc
            previous = self.holder.swap(model)
            self._failures.pop(version, None)
            record_load(self.pool, version, source, "loaded")
            return model, previous

    def poll_once(self) -> bool:
        """Load the champion if it is not the served model and not backing off; True if swapped."""
        try:
            found = registry.champion(self.settings)
        except Exception as exc:
            self._lookup_failures += 1
            if not self.holder.loaded:
                self.holder.note_failure(f"the model registry is unreachable: {exc}")
            raise
        self._lookup_failures = 0
        if found is None:
            return False
        version = f"v{found['version']}"
        current = self.holder.peek()
        if (current is not None and current.version == version) or not self.due(version):
            return False
        self.reload_champion()
        return True

    def next_wait(self) -> float:
        """Every MODEL_POLL_SECONDS while serving; at the retry pace while nothing is loaded."""
        if self.holder.loaded:
            return self.settings.model_poll_seconds
        attempts = max([self._lookup_failures, *(a for a, _ in self._failures.values())], default=0)
        return min(self.settings.model_poll_seconds, self.retry_delay(max(attempts, 1)))

    def _poll(self) -> None:
        while not self._stop.wait(self.next_wait()):
            try:
                self.poll_once()
            except Exception as exc:  # noqa: BLE001 - the next poll retries
                # Once per outage at warning level; the retries of the same outage at debug.
                level = logging.WARNING if self._lookup_failures <= 1 else logging.DEBUG
                log.log(level, "model poll failed (%d in a row): %s", max(self._lookup_failures, 1), exc)
