"""Backend entrypoint: `python main.py` (or `uvicorn main:app`) serves on 127.0.0.1:8000."""

from __future__ import annotations

import uvicorn

from api import metrics
from api.app import create_app
from utils.settings import get_settings

app = create_app()


def run() -> None:
    settings = get_settings()
    if settings.backend_workers > 1:
        metrics.use_multiprocess_dir()  # before the workers import prometheus-client
    uvicorn.run(
        "main:app",
        host=settings.backend_host,
        port=settings.backend_port,
        workers=settings.backend_workers,
        log_level=settings.log_level.lower(),
    )


if __name__ == "__main__":
    run()
