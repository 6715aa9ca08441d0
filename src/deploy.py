"""Stage 6: ask the backend (over its HTTP API) to load the new champion."""

from __future__ import annotations

import httpx

from utils.settings import Settings


def reload_backend(settings: Settings, timeout: float = 60.0) -> dict[str, object]:
    """POST /admin/reload; any non-2xx answer is an error with the backend's own message."""
    response = httpx.post(
        f"{settings.backend_url.rstrip('/')}/admin/reload",
        headers={"Authorization": f"Bearer {settings.admin_token}"},
        timeout=timeout,
    )
    if response.status_code >= 300:
        raise RuntimeError(f"backend reload failed with HTTP {response.status_code}: {response.text[:500]}")
    return response.json()
