"""The UI's only way to reach the backend: a small httpx client with errors a person can read.

Every failure becomes a `BackendError` subclass carrying a sentence for the page, so no
page ever shows a traceback: `BackendUnavailable` when nothing answers (or the backend
fails with a 5xx), `BackendRejected` when it refuses the request with its `{code, message}`.
"""

from __future__ import annotations

from typing import Any

import httpx


class BackendError(Exception):
    """Something the page should show as a message instead of a result."""

    def __init__(self, message: str, code: str = "backend_error", status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


class BackendUnavailable(BackendError):
    """The backend did not answer, timed out, or failed with a server error."""


class BackendRejected(BackendError):
    """The backend answered with a 4xx: the input or request was refused."""


def _content_type(filename: str) -> str:
    return "image/png" if filename.lower().endswith(".png") else "image/jpeg"


class BackendClient:
    """Typed-enough access to the backend's HTTP API; one instance per browser session."""

    def __init__(
        self,
        base_url: str,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        headers: dict[str, str] | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = http or httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)
        self.headers = dict(headers or {})

    def with_headers(self, headers: dict[str, str]) -> BackendClient:
        """A view that shares this client's connections and also sends `headers` (per browser
        session: the visitor's address for the rate limits, the operator login)."""
        return BackendClient(self.base_url, headers={**self.headers, **headers}, http=self._http)

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, *, allow_404: bool = False, **kwargs: Any) -> httpx.Response | None:
        if self.headers:
            kwargs["headers"] = {**self.headers, **kwargs.get("headers", {})}
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise BackendUnavailable(
                f"Backend unavailable: {self.base_url} did not answer in time. Try again in a moment.",
                code="backend_timeout",
            ) from exc
        except httpx.HTTPError as exc:
            raise BackendUnavailable(
                f"Backend unavailable: cannot reach {self.base_url}. Is the backend running (`make up`)?",
                code="backend_unreachable",
            ) from exc
        if response.status_code == 404 and allow_404:
            return None
        if response.status_code >= 400:
            code, message = _error_of(response)
            if response.status_code >= 500:
                raise BackendUnavailable(f"Backend unavailable: {message}", code=code, status=response.status_code)
            raise BackendRejected(message, code=code, status=response.status_code)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        assert response is not None
        try:
            return response.json()
        except ValueError as exc:
            raise BackendUnavailable(
                f"Backend unavailable: {path} answered with something that is not JSON.", code="bad_response"
            ) from exc

    # Model
    def predict(self, image: bytes, filename: str = "image.jpg", store: bool = True) -> dict[str, Any]:
        """Classify an image; the backend stores it and the prediction unless `store` is False
        (live previews: not stored, not counted toward a retrain)."""
        return self._json(
            "POST",
            "/predict",
            files={"file": (filename, image, _content_type(filename))},
            params=None if store else {"store": "false"},
        )

    def model(self) -> dict[str, Any]:
        return self._json("GET", "/model")

    # Labels
    def feedback(self, prediction_id: int, label: str) -> dict[str, Any]:
        """Confirm or correct a prediction; the last answer wins."""
        return self._json("POST", "/feedback", json={"prediction_id": prediction_id, "label": label})

    def upload(self, image: bytes, label: str, filename: str = "image.jpg") -> dict[str, Any]:
        """Add a labelled example without predicting."""
        return self._json(
            "POST", "/upload", files={"file": (filename, image, _content_type(filename))}, data={"label": label}
        )

    def stats(self) -> dict[str, Any]:
        return self._json("GET", "/stats")

    def recent_predictions(self, limit: int = 12) -> list[dict[str, Any]]:
        return self._json("GET", "/predictions", params={"limit": limit})

    def image(self, sha256: str) -> bytes:
        response = self._request("GET", f"/images/{sha256}")
        assert response is not None
        return response.content

    # Operators (OPERATOR_TOKEN in the session's headers)
    def labels_for_review(self, limit: int = 50) -> list[dict[str, Any]]:
        """Labels the quarantine holds for approval, oldest first."""
        return self._json("GET", "/admin/labels", params={"limit": limit})

    def review_labels(self, image_sha256s: list[str], decision: str) -> dict[str, Any]:
        return self._json("POST", "/admin/labels/review", json={"image_sha256s": image_sha256s, "decision": decision})

    # Ops
    def ready(self, timeout: float | None = None) -> dict[str, Any]:
        """Readiness: the database answers and a model is loaded (503 → `BackendUnavailable`)."""
        return self._json("GET", "/ready", **({"timeout": timeout} if timeout else {}))

    def retrains(self) -> list[dict[str, Any]] | None:
        """Retrain requests, newest first; None when this backend has no `GET /retrains`."""
        response = self._request("GET", "/retrains", allow_404=True)
        if response is None:
            return None
        data = response.json()
        if isinstance(data, dict):
            data = data.get("items", data.get("retrains", data.get("requests", [])))
        return list(data)


def _error_of(response: httpx.Response) -> tuple[str, str]:
    """The backend's `{code, message}`, or a sentence about the status when the body is not ours."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body.get("code", "http_error")), body["message"]
    return "http_error", f"the backend answered HTTP {response.status_code} {response.reason_phrase}."
