"""A small in-memory stand-in for the Kubernetes API server, on loopback, for the real `kubernetes` client.

Just enough of the API for the deploy step: InferenceServices (get, create, merge-patch) and the KServe
config map. Knobs: how many GETs until a new generation turns Ready (None: never), and injected errors
per (method, status) for the next matching requests.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ISVC = re.compile(r"^/apis/serving\.kserve\.io/v1beta1/namespaces/([^/]+)/inferenceservices(?:/([^/?]+))?")
CONFIG_MAP = re.compile(r"^/api/v1/namespaces/([^/]+)/configmaps/([^/?]+)")


def merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


class FakeKubeAPI:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict] = {}
        self.config_maps: dict[tuple[str, str], dict] = {}
        self.ready_after: int | None = 1
        self.errors: list[tuple[str, int]] = []  # (method, status), consumed in order
        self.requests: list[tuple[str, str, Any]] = []
        self._polls: dict[tuple[str, str], int] = {}
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def client(self) -> Any:
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.url
        return client.CustomObjectsApi(client.ApiClient(configuration))

    def _bump(self, key: tuple[str, str]) -> None:
        obj = self.objects[key]
        obj["metadata"]["generation"] = obj["metadata"].get("generation", 0) + 1
        obj.setdefault("status", {})["conditions"] = [
            {"type": "Ready", "status": "False", "reason": "RevisionMissing", "message": "new revision is starting"}
        ]
        self._polls[key] = 0

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code: int, message: str) -> None:
                self._send(
                    code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "code": code}
                )

            def _body(self) -> Any:
                length = int(self.headers.get("Content-Length", 0))
                return json.loads(self.rfile.read(length)) if length else None

            def _handle(self, method: str) -> None:
                body = self._body() if method in ("POST", "PATCH", "PUT") else None
                with api.lock:
                    api.requests.append((method, self.path, body))
                    for i, (error_method, code) in enumerate(api.errors):
                        if error_method == method:
                            del api.errors[i]
                            return self._status(code, f"injected {code}")
                    if match := CONFIG_MAP.match(self.path):
                        config_map = api.config_maps.get(match.groups())
                        return self._send(200, config_map) if config_map else self._status(404, "not found")
                    match = ISVC.match(self.path)
                    if not match:
                        return self._status(404, "unknown path")
                    namespace, name = match.groups()
                    name = name or (body or {}).get("metadata", {}).get("name")
                    key = (namespace, name)
                    if method == "GET":
                        obj = api.objects.get(key)
                        if obj is None:
                            return self._status(404, f"inferenceservices {name!r} not found")
                        api._polls[key] = api._polls.get(key, 0) + 1
                        if api.ready_after is not None and api._polls[key] > api.ready_after:
                            obj["status"] = {
                                "observedGeneration": obj["metadata"]["generation"],
                                "url": f"http://{name}.{namespace}.example.com",
                                "conditions": [{"type": "Ready", "status": "True"}],
                            }
                        return self._send(200, obj)
                    if method == "POST":
                        if key in api.objects:
                            return self._status(409, "already exists")
                        api.objects[key] = copy.deepcopy(body)
                        api._bump(key)
                        return self._send(201, api.objects[key])
                    if method == "PATCH":
                        if key not in api.objects:
                            return self._status(404, "not found")
                        api.objects[key] = merge(api.objects[key], body)
                        api._bump(key)
                        return self._send(200, api.objects[key])
                    return self._status(405, "method not allowed")

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_PATCH(self) -> None:
                self._handle("PATCH")

        return Handler
