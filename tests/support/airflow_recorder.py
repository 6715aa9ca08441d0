"""An HTTP stand-in for Airflow's REST API that records every trigger the backends send.

The real Airflow (tests/retrain) answers a duplicate trigger with 409, which the backend counts
as delivered, so a replica that delivers the same request twice looks fine against it. This
recorder keeps every POST, how long it was held open, and which ones overlapped, so a test can
count deliveries across several backend processes exactly. It speaks the few calls
`api.retrain.AirflowClient` makes: `POST /auth/token`, `POST .../dagRuns`, `GET .../dagRuns/{id}`.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_RUNS = re.compile(r"^/api/v2/dags/(?P<dag>[^/]+)/dagRuns(?:/(?P<run>[^/?]+))?$")


@dataclass
class Trigger:
    dag_run_id: str
    conf: dict
    started: float  # monotonic, when the POST arrived
    finished: float  # when it was answered
    status: int


@dataclass
class AirflowRecorder:
    """Runs on 127.0.0.1:port; `trigger_delay_s` holds each trigger open that long, so
    deliveries from several replicas have time to overlap if nothing serialises them."""

    trigger_delay_s: float = 0.0
    triggers: list[Trigger] = field(default_factory=list)
    run_states: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def created(self) -> list[Trigger]:
        """Triggers that created a run (200), in arrival order."""
        with self._lock:
            return [t for t in self.triggers if t.status == 200]

    def start(self) -> AirflowRecorder:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> dict:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"{}")

            def do_POST(self) -> None:
                if self.path == "/auth/token":
                    self._body()
                    self._reply(201, {"access_token": "recorder-token"})
                    return
                match = _RUNS.match(self.path)
                if match is None or match["run"] is not None:
                    self._reply(404, {"detail": "not found"})
                    return
                started = time.monotonic()
                body = self._body()
                time.sleep(recorder.trigger_delay_s)
                run_id = body["dag_run_id"]
                with recorder._lock:
                    status = 409 if run_id in recorder.run_states else 200
                    recorder.run_states.setdefault(run_id, "queued")
                    recorder.triggers.append(Trigger(run_id, body.get("conf", {}), started, time.monotonic(), status))
                self._reply(status, {"dag_run_id": run_id, "state": "queued"})

            def do_GET(self) -> None:
                match = _RUNS.match(self.path)
                if match is None or match["run"] is None:
                    self._reply(404, {"detail": "not found"})
                    return
                with recorder._lock:
                    state = recorder.run_states.get(match["run"])
                if state is None:
                    self._reply(404, {"detail": "no such run"})
                else:
                    self._reply(200, {"dag_run_id": match["run"], "state": state})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="airflow-recorder", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
