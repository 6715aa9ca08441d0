"""The upload size limit, enforced on the bytes as they arrive (plain ASGI).

A Content-Length check alone lets chunked bodies through: Starlette would spool every
part to disk before any handler saw it. So every `http.request` message is counted, and
the request is cut off at the limit whether or not a length was declared.

The 413 must be readable by every client. curl waits for `100 Continue` and so can be
answered at once; requests, httpx and urllib send the whole body first, and a server
that answers and closes while they are still sending gives them a connection reset. So
the rest of an oversize body is read and discarded (up to `DRAIN_LIMIT_BYTES`) before
the 413 goes out. Plain ASGI rather than `@app.middleware("http")`: BaseHTTPMiddleware
costs about a millisecond per request on these CPUs, as much as the model itself.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import metrics
from api.errors import error_response

# Multipart framing around the file (boundaries, part headers, the label field).
MULTIPART_OVERHEAD_BYTES = 64 * 1024
# An oversize body up to this size is read to its end so the client can read the 413;
# beyond it the connection is closed instead.
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024


class _BodyTooLarge(Exception):
    """Raised into the app from `receive` when the limit is passed."""


class BodySizeLimit:
    def __init__(self, app: ASGIApp, limit: int, drain_limit: int = DRAIN_LIMIT_BYTES) -> None:
        self.app = app
        self.file_limit = limit
        self.limit = limit + MULTIPART_OVERHEAD_BYTES
        self.drain_limit = drain_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            # A client waiting for `100 Continue` never sends the body: answer at once.
            waits = headers.get(b"expect", b"").lower() == b"100-continue"
            drained = False if waits or int(declared) > self.drain_limit else await self._drain(receive, 0)
            await self._refuse(scope, send, close=not drained)
            return

        received = 0
        exceeded = more = started = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded, more
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    exceeded, more = True, message.get("more_body", False)
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # the app's answer to a cut-off body is replaced by the 413
            started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            drained = await self._drain(receive, received) if more else True
            await self._refuse(scope, send, close=not drained)

    async def _drain(self, receive: Receive, already: int) -> bool:
        """Read and drop the rest of the body; False when it ran past the drain limit."""
        total = already
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return False  # the client went away
            total += len(message.get("body", b""))
            if total > self.drain_limit:
                return False
            if not message.get("more_body", False):
                return True

    async def _refuse(self, scope: Scope, send: Send, close: bool) -> None:
        metrics.REJECTED_INPUTS.labels(reason="file_too_large").inc()
        response = error_response(
            413,
            "file_too_large",
            f"The request is over the {self.file_limit / 2**20:.0f} MiB upload limit; send a smaller image.",
            headers={"Connection": "close"} if close else None,
        )
        await response(scope, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
