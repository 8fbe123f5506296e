"""A stand-in for the Kubeflow Pipelines v2beta1 REST API on loopback, for the real kfp.Client."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class FakeKfpApi(BaseHTTPRequestHandler):
    """The few KFP v2beta1 REST routes kfp.Client uses to start a run; records what it was sent."""

    calls: list[tuple[str, str, dict]] = []

    def _answer(self, body: dict, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        FakeKfpApi.calls.append(("GET", self.path, {}))
        if self.path.startswith("/apis/v2beta1/healthz"):
            self._answer({"multi_user": False})
        elif self.path.startswith("/apis/v2beta1/experiments"):
            self._answer({})  # no experiment of that name yet
        else:
            self._answer({"error": "not found"}, 404)

    def do_POST(self) -> None:  # noqa: N802
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path.startswith("/apis/v2beta1/pipelines/upload"):  # multipart: the compiled YAML as a file
            FakeKfpApi.calls.append(("POST", self.path.split("?")[0], {"multipart": raw.decode(errors="replace")}))
            self._answer({"pipeline_id": "pipeline-5", "display_name": "churnflow-training"})
            return
        body = json.loads(raw or b"{}")
        FakeKfpApi.calls.append(("POST", self.path, body))
        if self.path == "/apis/v2beta1/experiments":
            self._answer({"experiment_id": "exp-1", "display_name": body["display_name"]})
        elif self.path == "/apis/v2beta1/runs":
            self._answer({"run_id": "run-42", "display_name": body["display_name"], "experiment_id": "exp-1"})
        elif self.path == "/apis/v2beta1/recurringruns":
            self._answer(
                {
                    "recurring_run_id": "job-7",
                    "display_name": body["display_name"],
                    "experiment_id": body.get("experiment_id", "exp-1"),
                }
            )
        else:
            self._answer({"error": "not found"}, 404)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def kfp_api():
    FakeKfpApi.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeKfpApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)
