"""The retention job: unlabelled stored images older than UNLABELLED_IMAGE_RETENTION_DAYS
are deleted with their predictions, every RETENTION_INTERVAL_S, by a daemon thread of each
backend process (concurrent runs skip each other's rows). Labelled images are training
data and stay. `python -m api.retention` runs one pass by hand."""

from __future__ import annotations

import logging
import sys
import threading

from psycopg_pool import ConnectionPool

from api import metrics
from Database_connection import repository as repo
from utils.settings import Settings, get_settings

log = logging.getLogger(__name__)


def prune_once(pool: ConnectionPool, older_than_days: float, batch: int = 200) -> dict[str, int]:
    """Prune in small transactions until nothing is left; returns the totals."""
    totals = {"images": 0, "predictions": 0, "bytes": 0}
    while True:
        with pool.connection() as conn:
            done = repo.prune_unlabelled_images(conn, older_than_days, batch)
        for key, value in done.items():
            totals[key] += value
        if done["images"] < batch:
            break
    metrics.PRUNED_IMAGES.inc(totals["images"])
    if totals["images"]:
        log.info(
            "retention: pruned %d unlabelled images (%d predictions, %.1f MB) older than %g days",
            totals["images"],
            totals["predictions"],
            totals["bytes"] / 1e6,
            older_than_days,
        )
    return totals


class RetentionJob:
    def __init__(self, settings: Settings, pool: ConnectionPool) -> None:
        self.settings = settings
        self.pool = pool
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="retention", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                prune_once(self.pool, self.settings.unlabelled_image_retention_days)
            except Exception:
                log.warning("retention pass failed; retrying next interval", exc_info=True)
            self._stop.wait(self.settings.retention_interval_s)


def main() -> int:
    from Database_connection.db import make_pool

    settings = get_settings()
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    if settings.unlabelled_image_retention_days <= 0:
        print("UNLABELLED_IMAGE_RETENTION_DAYS is 0: images are kept forever; nothing to do")
        return 0
    pool = make_pool(settings.database_url, 1, 1)
    try:
        totals = prune_once(pool, settings.unlabelled_image_retention_days)
    finally:
        pool.close()
    print(f"pruned {totals['images']} images and {totals['predictions']} predictions ({totals['bytes']} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
