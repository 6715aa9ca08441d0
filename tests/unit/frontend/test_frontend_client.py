"""The backend client turns every failure into a sentence for the page."""

from __future__ import annotations

import httpx
import pytest

from frontend.client import BackendClient, BackendRejected, BackendUnavailable


def client_for(handler) -> BackendClient:
    return BackendClient("http://backend.test", transport=httpx.MockTransport(handler))


def test_connection_refused_is_backend_unavailable():
    def refuse(request):
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(BackendUnavailable, match=r"^Backend unavailable: cannot reach http://backend.test"):
        client_for(refuse).stats()


def test_a_real_closed_port_is_backend_unavailable():
    from tests.support.procs import free_port

    with pytest.raises(BackendUnavailable) as info:
        BackendClient(f"http://127.0.0.1:{free_port()}", timeout=2).predict(b"x", "a.jpg")
    assert info.value.code == "backend_unreachable"


def test_timeout_is_backend_unavailable():
    def slow(request):
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(BackendUnavailable, match="did not answer in time"):
        client_for(slow).ready()


def test_a_4xx_carries_the_backends_code_and_message():
    def reject(request):
        return httpx.Response(422, json={"code": "truncated_image", "message": "The JPEG is truncated."})

    with pytest.raises(BackendRejected) as info:
        client_for(reject).predict(b"\xff\xd8\xff", "a.jpg")
    err = info.value
    assert (err.code, err.message, err.status) == ("truncated_image", "The JPEG is truncated.", 422)


def test_a_5xx_is_unavailable_with_its_message():
    def broken(request):
        return httpx.Response(503, json={"code": "model_not_loaded", "message": "No model is loaded."})

    with pytest.raises(BackendUnavailable, match=r"Backend unavailable: No model is loaded\.") as info:
        client_for(broken).model()
    assert info.value.code == "model_not_loaded"


def test_a_non_json_error_is_described_by_its_status():
    def proxy(request):
        return httpx.Response(502, text="<html>Bad gateway</html>")

    with pytest.raises(BackendUnavailable, match="HTTP 502"):
        client_for(proxy).stats()


def test_retrains_absent_is_none_and_shapes_are_accepted():
    missing = {"code": "not_found", "message": "Not Found"}
    assert client_for(lambda r: httpx.Response(404, json=missing)).retrains() is None
    rows = [{"id": 1, "state": "pending"}]
    assert client_for(lambda r: httpx.Response(200, json=rows)).retrains() == rows
    assert client_for(lambda r: httpx.Response(200, json={"items": rows})).retrains() == rows


def test_requests_have_the_apis_shape():
    seen = {}

    def record(request):
        seen[request.url.path] = request
        return httpx.Response(200, json={})

    c = client_for(record)
    c.predict(b"png-bytes", "hand.png")
    c.feedback(7, "paper")
    c.upload(b"jpeg-bytes", "rock", "hand.jpg")
    c.recent_predictions(5)
    assert b'name="file"; filename="hand.png"' in seen["/predict"].content
    assert b"Content-Type: image/png" in seen["/predict"].content
    assert seen["/feedback"].content == b'{"prediction_id":7,"label":"paper"}'
    assert b'name="label"\r\n\r\nrock' in seen["/upload"].content
    assert seen["/predictions"].url.params["limit"] == "5"
