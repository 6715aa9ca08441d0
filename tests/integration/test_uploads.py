"""Uploads as clients really send them, against the backend as a real uvicorn process:
an over-limit body, declared or chunked, gets a 413 JSON that curl, requests, httpx and
urllib can all read, and nothing is stored."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import requests

from tests.conftest import Backend, start_backend

LIMIT = 1024 * 1024
BOUNDARY = "rpsboundary7f3a"


@pytest.fixture(scope="module")
def backend(template_db: str, model_dir: Path, data_dir: Path, tmp_path_factory) -> Iterator[Backend]:
    from tests.support import db as dbs

    name = dbs.unique_name("rps_uploads")
    url = dbs.create_db(name, template=template_db)
    started = start_backend(url, model_dir, data_dir, tmp_path_factory.mktemp("uploads"), MAX_UPLOAD_BYTES=str(LIMIT))
    try:
        yield started
    finally:
        started.proc.stop()
        dbs.drop_db(name)


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> Path:
    """20 MiB that start like a JPEG, far over the 1 MiB limit: a server that answers without
    reading such a body resets the connection of clients still sending it (urllib)."""
    path = tmp_path_factory.mktemp("big") / "big.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * (20 * 4096))
    return path


def _multipart(data: bytes) -> bytes:
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def _chunks(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i : i + size]


CONTENT_TYPE = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def _curl(url: str, path: Path, chunked: bool) -> tuple[int, dict]:
    extra = ["-H", "Transfer-Encoding: chunked"] if chunked else []
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "60", "-w", "\n%{http_code}", *extra, "-F", f"file=@{path}", f"{url}/predict"],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert out.returncode == 0, out.stderr
    body, _, status = out.stdout.rpartition("\n")
    return int(status), json.loads(body)


def _requests(url: str, path: Path, chunked: bool) -> tuple[int, dict]:
    if chunked:
        r = requests.post(
            f"{url}/predict", data=_chunks(_multipart(path.read_bytes())), headers=CONTENT_TYPE, timeout=60
        )
    else:
        with path.open("rb") as fh:
            r = requests.post(f"{url}/predict", files={"file": fh}, timeout=60)
    return r.status_code, r.json()


def _httpx(url: str, path: Path, chunked: bool) -> tuple[int, dict]:
    if chunked:
        r = httpx.post(
            f"{url}/predict", content=_chunks(_multipart(path.read_bytes())), headers=CONTENT_TYPE, timeout=60
        )
    else:
        r = httpx.post(f"{url}/predict", files={"file": path.read_bytes()}, timeout=60)
    return r.status_code, r.json()


def _urllib(url: str, path: Path, chunked: bool) -> tuple[int, dict]:
    body = _multipart(path.read_bytes())
    data = _chunks(body) if chunked else body  # an iterable without a length is sent chunked
    request = urllib.request.Request(f"{url}/predict", data=data, headers=CONTENT_TYPE, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("client", [_curl, _requests, _httpx, _urllib], ids=["curl", "requests", "httpx", "urllib"])
def test_oversize_upload_gets_a_readable_413(backend, big_file, client, chunked) -> None:
    status, body = client(backend.url, big_file, chunked)
    assert status == 413, body
    assert body["code"] == "file_too_large" and "1 MiB" in body["message"]


def test_refused_uploads_store_nothing_and_the_backend_keeps_serving(backend, big_file, sample_images) -> None:
    for chunked in (False, True):
        assert _urllib(backend.url, big_file, chunked)[0] == 413
    path = sample_images["rock"][0]
    r = httpx.post(f"{backend.url}/predict", files={"file": (path.name, path.read_bytes())}, timeout=30)
    assert r.status_code == 200, r.text
    with psycopg.connect(backend.db_url) as conn:
        assert conn.execute("SELECT count(*) FROM images").fetchone()[0] == 1


def test_a_small_chunked_upload_is_accepted(backend, sample_images) -> None:
    path = sample_images["paper"][0]
    body = _multipart(path.read_bytes()).replace(b'filename="big.jpg"', f'filename="{path.name}"'.encode())
    r = httpx.post(
        f"{backend.url}/predict", params={"store": "false"}, content=_chunks(body, 4096), headers=CONTENT_TYPE
    )
    assert r.status_code == 200 and r.json()["label"] == "paper", r.text


def test_more_uploads_than_slots_get_503_busy_with_retry_after(
    template_db: str, model_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    """One decode/inference slot and no queue wait: of 8 simultaneous 40 MP photos some are
    answered, the rest get 503 `busy` with Retry-After; none fails otherwise. (Arrival order
    is up to the machine, so up to three bursts are sent until both answers were seen.)"""
    from concurrent.futures import ThreadPoolExecutor

    from tests.support import db as dbs
    from tests.unit.utils.test_images import phone_jpeg

    name = dbs.unique_name("rps_busy")
    url = dbs.create_db(name, template=template_db)
    env = {"MAX_CONCURRENT_PREDICTIONS": "1", "PREDICTION_QUEUE_S": "0"}
    started = start_backend(url, model_dir, data_dir, tmp_path, **env)
    photo = phone_jpeg(7200, 5500, thumbnail=False)

    def send(_: int) -> httpx.Response:
        return httpx.post(f"{started.url}/predict?store=false", files={"file": ("p.jpg", photo)}, timeout=60)

    answers: list[httpx.Response] = []
    try:
        with ThreadPoolExecutor(8) as pool:
            for _ in range(3):
                answers += pool.map(send, range(8))
                if {r.status_code for r in answers} == {200, 503}:
                    break
    finally:
        started.proc.stop()
        dbs.drop_db(name)
    assert {r.status_code for r in answers} == {200, 503}, [r.status_code for r in answers]
    for r in answers:
        if r.status_code == 503:
            assert r.json()["code"] == "busy" and int(r.headers["Retry-After"]) >= 1
