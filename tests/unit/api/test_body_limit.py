"""The ASGI body limit on its own: what the app gets to read, and what the client hears."""

from __future__ import annotations

import asyncio
import json
import threading

from starlette.types import Message

from api.body_limit import MULTIPART_OVERHEAD_BYTES, BodySizeLimit

LIMIT = 1000
CHUNK = 64 * 1024


class ReadingApp:
    """Reads the whole body (as a multipart parser spooling to disk would), then answers 200."""

    def __init__(self) -> None:
        self.read = 0

    async def __call__(self, scope, receive, send) -> None:
        while True:
            message = await receive()
            self.read += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def _run(app, body_chunks: list[bytes], headers: list[tuple[bytes, bytes]]) -> tuple[list[Message], int]:
    """Drive one request; returns the messages sent and how many body messages were consumed."""
    incoming = [
        {"type": "http.request", "body": chunk, "more_body": i < len(body_chunks) - 1}
        for i, chunk in enumerate(body_chunks)
    ]
    consumed = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal consumed
        if consumed < len(incoming):
            consumed += 1
            return incoming[consumed - 1]
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": headers}
    # A thread of its own: another test's library (Playwright) may leave a loop running in this one.
    worker = threading.Thread(target=asyncio.run, args=(BodySizeLimit(app, limit=LIMIT)(scope, receive, send),))
    worker.start()
    worker.join(10)
    return sent, consumed


def _status_and_body(sent: list[Message]) -> tuple[int, dict]:
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body) if status != 200 else {}


def test_chunked_body_is_cut_off_at_the_limit_and_drained() -> None:
    app = ReadingApp()
    chunks = [b"x" * CHUNK] * 20  # 1.3 MB, no Content-Length (chunked)
    sent, consumed = _run(app, chunks, [(b"transfer-encoding", b"chunked")])
    status, body = _status_and_body(sent)
    assert status == 413 and body["code"] == "file_too_large"
    assert app.read <= LIMIT + MULTIPART_OVERHEAD_BYTES + CHUNK  # the app never saw the rest
    assert consumed == len(chunks)  # ...but it was read, so the client can read the 413


def test_declared_oversize_is_refused_before_the_app_runs() -> None:
    app = ReadingApp()
    size = LIMIT + MULTIPART_OVERHEAD_BYTES + 1
    sent, consumed = _run(app, [b"x" * size], [(b"content-length", str(size).encode())])
    assert _status_and_body(sent)[0] == 413 and app.read == 0 and consumed == 1


def test_a_client_waiting_for_100_continue_is_answered_without_reading() -> None:
    size = LIMIT + MULTIPART_OVERHEAD_BYTES + 1
    headers = [(b"content-length", str(size).encode()), (b"expect", b"100-continue")]
    sent, consumed = _run(ReadingApp(), [b"x" * size], headers)
    assert _status_and_body(sent)[0] == 413 and consumed == 0


def test_bodies_within_the_limit_pass_untouched() -> None:
    app = ReadingApp()
    sent, _ = _run(app, [b"x" * 600, b"y" * 400], [(b"transfer-encoding", b"chunked")])
    assert _status_and_body(sent)[0] == 200 and app.read == 1000
