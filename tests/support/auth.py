"""Credentials test clients send to the backends the tests start (which read the same .env)."""

from __future__ import annotations


def operator_headers() -> dict[str, str]:
    """The operator login (OPERATOR_TOKEN): photos, per-request history, raw errors."""
    from utils.settings import Settings

    return {"Authorization": f"Bearer {Settings().operator_token}"}


# Load tests and benchmarks drive the backend from one address far faster than a person would.
NO_RATE_LIMITS = {
    "RATE_LIMIT_PREDICT": "0",
    "RATE_LIMIT_PREVIEW": "0",
    "RATE_LIMIT_UPLOAD": "0",
    "RATE_LIMIT_FEEDBACK": "0",
}
