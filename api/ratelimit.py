"""Per-client rate limits on the anonymous write routes: 429 with `Retry-After`.

A token bucket per (route, client) in each backend process: a client may burst up to the
per-minute limit, then gets one request per 60/limit seconds. The client is found from the
connection, trusting `X-Forwarded-For` only from `TRUSTED_PROXIES` (the HTTPS proxy and the
Streamlit server, which forward the browser's address), so a visitor cannot pick its own key.
Limits are per process: with BACKEND_WORKERS=N a client gets up to N times the limit.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from fastapi import Depends, Request

from api import metrics
from api.errors import APIError
from utils.settings import Settings

MAX_TRACKED_CLIENTS = 50_000
LIMIT_NAMES = {"predict": "predictions", "preview": "previews", "upload": "uploads", "feedback": "labels"}


class RateLimiter:
    """Token buckets, least recently used evicted first (an evicted client starts full again)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_clients: int = MAX_TRACKED_CLIENTS) -> None:
        self.clock, self.max_clients = clock, max_clients
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()

    def hit(self, scope: str, client: str, per_minute: int) -> float | None:
        """Take one token; None when allowed, else the seconds until the next token."""
        if per_minute <= 0:
            return None
        now, key, rate = self.clock(), (scope, client), per_minute / 60.0
        tokens, last = self._buckets.pop(key, (float(per_minute), now))
        tokens = min(float(per_minute), tokens + (now - last) * rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return None if allowed else (1.0 - tokens) / rate


def _networks(specs: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(s.strip(), strict=False) for s in specs if s.strip()]


def _trusted(address: str, networks: list) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_address(request: Request, trusted_proxies: Iterable[str]) -> str:
    """The right-most address that is not a trusted proxy: the peer itself unless it is one,
    then `X-Forwarded-For` from the right. Entries a client wrote itself sit left of the
    address our proxy saw, so they are never chosen."""
    networks = _networks(trusted_proxies)
    peer = request.client.host if request.client else "unknown"
    if not _trusted(peer, networks):
        return peer
    chain = [a.strip() for a in request.headers.get("x-forwarded-for", "").split(",") if a.strip()]
    for address in reversed(chain):
        if not _trusted(address, networks):
            return address
    return chain[0] if chain else peer


def enforce(request: Request, scope: str) -> None:
    settings: Settings = request.app.state.settings
    limiter: RateLimiter = request.app.state.rate_limiter
    per_minute = getattr(settings, f"rate_limit_{scope}")
    client = client_address(request, settings.trusted_proxies)
    wait = limiter.hit(scope, client, per_minute)
    if wait is not None:
        metrics.REJECTED_INPUTS.labels(reason="rate_limited").inc()
        seconds = max(1, math.ceil(wait))
        raise APIError(
            429,
            "rate_limited",
            f"Too many {LIMIT_NAMES[scope]} from your address (at most {per_minute} a minute). "
            f"Try again in {seconds} s.",
            headers={"Retry-After": str(seconds)},
        )


async def limit_predict(request: Request) -> None:
    """Stored predictions and previews (`store=false`, the live page) have separate limits.
    Async on purpose: it runs on the event loop, so the buckets need no lock."""
    store = request.query_params.get("store", "true").lower() not in ("false", "0", "no", "off")
    enforce(request, "predict" if store else "preview")


async def limit_upload(request: Request) -> None:
    enforce(request, "upload")


async def limit_feedback(request: Request) -> None:
    enforce(request, "feedback")


PredictLimit = Depends(limit_predict)
UploadLimit = Depends(limit_upload)
FeedbackLimit = Depends(limit_feedback)
