"""Credentials test clients send to the backends the tests start (which read the same .env)."""

from __future__ import annotations


def operator_headers() -> dict[str, str]:
    """The operator login (OPERATOR_TOKEN): photos, per-request history, raw errors."""
    from utils.settings import Settings

    return {"Authorization": f"Bearer {Settings().operator_token}"}
