"""The request guard: what every HTTP request passes before KServe sees it.

Load shedding (503 + Retry-After when a worker is saturated), the body-size limit (413), refusals
that are the caller's to fix (a model version in the path, a v2 body without Content-Type), and the
request counters and latency histogram by protocol. Pure ASGI, so it costs microseconds a request.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from churnflow.predictor.logs import quiet_request_logs
from churnflow.predictor.metrics import ERRORS, EVENT_LOOP_LAG, REQUEST_DURATION, REQUESTS, SHED
from churnflow.predictor.settings import current as current_settings

LAG_PROBE_SECONDS = 0.02
_PROTOCOLS = (("/v1/", "v1"), ("/v2/", "v2"), ("/predict", "compat"))
# The routes that run the model; everything else (health, readiness, metadata, metrics) is cheap and
# must keep answering under overload, or Kubernetes would restart a pod that is merely busy.
_INFERENCE_SUFFIXES = (":predict", ":explain", "/infer", "/explain")
NO_CONTENT_TYPE = (
    "Content-Type: header missing; send Content-Type: application/json for JSON tensors "
    "(or application/octet-stream with an Inference-Header-Content-Length header for binary tensors)"
)


def protocol_of(path: str) -> str:
    for prefix, name in _PROTOCOLS:
        if path.startswith(prefix):
            return name
    return "other"


def is_inference(path: str) -> bool:
    """Whether a request runs the model (and so may be shed), as opposed to a health or metadata probe."""
    return path == "/predict" or (path.startswith(("/v1/", "/v2/")) and path.endswith(_INFERENCE_SUFFIXES))


class RequestGuard:
    """ASGI middleware: sheds load, limits body size, and counts every response by protocol and status.

    Load shedding: an inference request is answered at once with 503 and `Retry-After: 1` instead of
    queueing when this worker already serves `max_inflight` of them, or when its event loop runs
    more than `max_queue_seconds` late (measured by a probe that should wake every 20 ms: under
    overload, requests wait that long before they are even read). Health and metrics routes are
    never shed, so an overloaded server still reports itself and recovers as soon as load drops.
    """

    def __init__(
        self,
        app: Any,
        max_body_bytes: int | None = None,
        max_inflight: int | None = None,
        max_queue_seconds: float | None = None,
    ) -> None:
        # Built when the app starts, after KServe configured logging and after this process installed
        # its settings (in every worker process); None: the limit the settings give.
        settings = current_settings()
        quiet_request_logs(settings.access_log)
        self.app = app
        self.max_body_bytes = settings.max_body_bytes if max_body_bytes is None else max_body_bytes
        self.max_inflight = settings.max_inflight if max_inflight is None else max_inflight
        self.inflight = 0
        self.max_queue_seconds = settings.max_queue_seconds if max_queue_seconds is None else max_queue_seconds
        self.lag = 0.0
        self._probe: Any = None
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._durations = {name: REQUEST_DURATION.labels(name) for name in ("v1", "v2", "compat", "other")}

    def _count(self, protocol: str, status: int) -> None:
        key = (protocol, status)
        children = self._children.get(key)
        if children is None:
            error = ERRORS.labels(protocol, str(status)) if status >= 400 else None
            children = self._children[key] = (REQUESTS.labels(protocol, str(status)), error)
        children[0].inc()
        if children[1] is not None:
            children[1].inc()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        protocol = protocol_of(scope["path"])
        status = 500
        inference = is_inference(scope["path"])
        if self._probe is None:
            self._probe = asyncio.get_running_loop().create_task(self._measure_lag())
        if b"model_version=" in scope.get("query_string", b"") or "/versions/" in scope["path"]:
            # KServe answers 501 for it; it is the caller's to fix: one model version is served here.
            await self._reject(send, 400, "model_version: this server serves a single model version; omit it")
            self._count(protocol, 400)
            return
        if inference and (self.inflight >= self.max_inflight or self.lag > self.max_queue_seconds):
            message = (
                f"overloaded: {self.inflight} requests in flight, {self.lag * 1000:.0f} ms queueing; retry shortly"
            )
            await self._reject(send, 503, message, retry_after=True)
            SHED.inc()
            self._count(protocol, 503)
            return
        content_type = False
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body_bytes:
                await self._reject(send, 413, f"body: {int(value)} bytes exceed the limit of {self.max_body_bytes}")
                self._count(protocol, 413)
                return
            if name == b"content-type":
                content_type = True
        if inference and protocol == "v2" and not content_type and scope["method"] == "POST":
            # KServe reads a body without Content-Type as binary tensors and answers with a message about
            # a missing "inference-header-content-length" header, which tells a JSON client nothing.
            await self._reject(send, 400, NO_CONTENT_TYPE)
            self._count(protocol, 400)
            return
        received = 0

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLarge()
            return message

        async def counting_send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        if inference:
            self.inflight += 1
        try:
            await self.app(scope, limited_receive, counting_send)
        except _BodyTooLarge:
            status = 413
            await self._reject(send, 413, f"body: more than {self.max_body_bytes} bytes")
        finally:
            if inference:
                self.inflight -= 1
            self._count(protocol, status)
            self._durations[protocol].observe(time.perf_counter() - started)

    async def _measure_lag(self) -> None:
        """How late the event loop wakes a 20 ms sleep: the time a new request waits to be read."""
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + LAG_PROBE_SECONDS
            await asyncio.sleep(LAG_PROBE_SECONDS)
            late = max(0.0, loop.time() - expected)
            # rise at once, decay over a few probes: shedding starts fast and stops soon after load drops
            self.lag = late if late > self.lag else 0.5 * self.lag + 0.5 * late
            EVENT_LOOP_LAG.set(self.lag)

    @staticmethod
    async def _reject(send: Any, status: int, message: str, retry_after: bool = False) -> None:
        import orjson

        body = orjson.dumps({"error": message})
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if retry_after:
            headers.append((b"retry-after", b"1"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    pass
