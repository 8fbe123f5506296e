"""Starting KServe's ModelServer for a churn model, with the HTTP behaviour KServe lacks.

Hooks added to KServe's FastAPI app (in every worker process):
- a request guard (pure ASGI): body-size limit (413), request/status counters and latency by protocol;
- HTTP 400 with the offending field for bodies FastAPI rejects (KServe answers those with 422);
- `POST /predict`, the original design's route and answer shape, for existing clients;
- `/metrics` aggregated across workers when several run (PROMETHEUS_MULTIPROC_DIR).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
import warnings
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import ORJSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from churnflow.errors import ChurnflowError
from churnflow.predictor.metrics import ERRORS, EVENT_LOOP_LAG, REQUEST_DURATION, REQUESTS, SHED

log = logging.getLogger("churnflow.predictor")

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_BODY_BYTES = int(os.environ.get("CHURNFLOW_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES))
DEFAULT_MAX_INFLIGHT = 64
MAX_INFLIGHT = int(os.environ.get("CHURNFLOW_MAX_INFLIGHT", DEFAULT_MAX_INFLIGHT))
DEFAULT_MAX_QUEUE_MS = 250.0
MAX_QUEUE_SECONDS = float(os.environ.get("CHURNFLOW_MAX_QUEUE_MS", DEFAULT_MAX_QUEUE_MS)) / 1000
LAG_PROBE_SECONDS = 0.02
_PROTOCOLS = (("/v1/", "v1"), ("/v2/", "v2"), ("/predict", "compat"))
# The routes that run the model; everything else (health, readiness, metadata, metrics) is cheap and
# must keep answering under overload, or Kubernetes would restart a pod that is merely busy.
_INFERENCE_SUFFIXES = (":predict", ":explain", "/infer", "/explain")


def protocol_of(path: str) -> str:
    for prefix, name in _PROTOCOLS:
        if path.startswith(prefix):
            return name
    return "other"


def is_inference(path: str) -> bool:
    """Whether a request runs the model (and so may be shed), as opposed to a health or metadata probe."""
    return path == "/predict" or (path.startswith(("/v1/", "/v2/")) and path.endswith(_INFERENCE_SUFFIXES))


class ClientErrorFilter(logging.Filter):
    """Drops KServe's stack-trace log for answers that are the client's doing (400, 404, 501) or a
    not-yet-ready model (503): KServe logs each at ERROR with a full traceback, so a readiness probe or
    a hostile client would fill the log. They are counted in churnflow_request_errors_total, and why a
    model is not ready is logged once, when its load fails. Server errors (500) keep their traceback."""

    HANDLERS = frozenset(
        {
            "invalid_input_handler",
            "model_not_found_handler",
            "model_not_ready_handler",
            "not_implemented_error_handler",
            "unsupported_protocol_error_handler",
            "server_not_ready_handler",
            "server_not_live_handler",
        }
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.funcName in self.HANDLERS and record.pathname.endswith(os.path.join("kserve", "errors.py")))


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
        max_body_bytes: int = MAX_BODY_BYTES,
        max_inflight: int = MAX_INFLIGHT,
        max_queue_seconds: float = MAX_QUEUE_SECONDS,
    ) -> None:
        # Built when the app starts, after KServe configured logging (in every worker): the place to
        # silence the per-request timing and access logs, which together cost about half a request.
        # CHURNFLOW_ACCESS_LOG=1 keeps them; errors are still logged, and requests are counted.
        if not os.environ.get("CHURNFLOW_ACCESS_LOG"):
            for name in ("kserve.trace", "uvicorn.access"):
                logging.getLogger(name).setLevel(logging.WARNING)
        kserve_logger = logging.getLogger("kserve")
        if not any(isinstance(f, ClientErrorFilter) for f in kserve_logger.filters):
            kserve_logger.addFilter(ClientErrorFilter())
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_inflight = max_inflight
        self.inflight = 0
        self.max_queue_seconds = max_queue_seconds
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
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body_bytes:
                await self._reject(send, 413, f"body: {int(value)} bytes exceed the limit of {self.max_body_bytes}")
                self._count(protocol, 413)
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


def _validation_message(error: Any) -> str:
    """One line naming the field FastAPI rejected (KServe's v2 body model is InferenceRequest | bytes)."""
    parts = []
    for item in error.errors():
        location = [str(p) for p in item.get("loc", ()) if p not in ("body", "InferenceRequest")]
        if location[:1] == ["bytes"]:
            continue  # the raw-bytes alternative of the union: never what a JSON client meant
        if item.get("type") == "json_invalid":
            where = f" at position {location[0]}" if location else ""
            parts.append(f"body: not valid JSON{where} ({item.get('ctx', {}).get('error', 'parse error')})")
        else:
            parts.append(f"{'.'.join(location) or 'body'}: {item.get('msg', 'invalid')}")
    return "; ".join(parts[:3]) or "body: not a valid request"


def configure_logging() -> None:
    """churnflow's server log lines in KServe's format, at KServe's level, on stderr.

    KServe configures only its own and uvicorn's loggers; without this, churnflow's lines (a model
    loaded and which version, the event loop) would reach Python's last-resort handler, which
    shows warnings and errors only. Called in the server process and in each spawned worker."""
    from kserve.constants.constants import KSERVE_LOGLEVEL
    from kserve.logging import KSERVE_LOGGER_DATE_FORMAT, KSERVE_LOGGER_FORMAT

    logger = logging.getLogger("churnflow")
    if logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(KSERVE_LOGGER_FORMAT, KSERVE_LOGGER_DATE_FORMAT))
    logger.addHandler(handler)
    logger.setLevel(KSERVE_LOGLEVEL)
    logger.propagate = False


_installed: set[int] = set()


def install_http_hooks(app: Any = None) -> None:
    """Adds churnflow's middleware, handlers and routes to KServe's app (once per process)."""
    if app is None:
        from kserve.model_server import app
    if id(app) in _installed:
        return
    _installed.add(id(app))
    # KServe's app sets ORJSONResponse as the default response class, which FastAPI now warns about.
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")

    async def bad_request(_: Request, error: RequestValidationError) -> ORJSONResponse:
        return ORJSONResponse(status_code=400, content={"error": _validation_message(error)})

    async def original_predict(request: Request) -> ORJSONResponse:
        """The original Flask app's POST /predict: one customer in, {"churn", "probability"} out."""
        from kserve.errors import InvalidInput, ModelNotReady

        model = _served_model(app)
        if model is None or not model.ready:
            raise ModelNotReady(getattr(model, "name", "churn"))
        try:
            import orjson

            body = orjson.loads(await request.body())
        except Exception as error:
            raise InvalidInput(f"body: not valid JSON ({error})") from None
        response, _ = await model(body, dict(request.headers))
        predictions = response["predictions"]
        return ORJSONResponse(predictions[0] if isinstance(body, dict) and "instances" not in body else response)

    async def metrics(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    _drop_timing_middleware(app)

    async def http_error(_: Request, error: StarletteHTTPException) -> Response:
        # FastAPI's own errors ({"detail": ...}) in the {"error": ...} shape every other answer has.
        detail = str(error.detail)
        if detail == "There was an error parsing the body":
            detail = "body: not valid JSON (unparseable, not UTF-8, or nested too deeply)"
        return ORJSONResponse(status_code=error.status_code, content={"error": detail}, headers=error.headers)

    app.add_exception_handler(RequestValidationError, bad_request)
    app.add_exception_handler(StarletteHTTPException, http_error)

    async def reload_model(model_name: str) -> ORJSONResponse:
        """KServe's repository `load` route, made real: re-read the model directory (hot reload).

        404 for a model this server does not serve; 409 when the new directory is refused (the
        previous model keeps serving, and the answer says why)."""
        model = _served_model(app)
        if model is None or model.name != model_name:
            return ORJSONResponse(status_code=404, content={"error": f"model {model_name!r} is not served here"})
        if not model.reload():
            return ORJSONResponse(
                status_code=409,
                content={"error": f"new model refused, the previous one keeps serving: {model.load_error}"},
            )
        version = model.loaded.metadata.get("model_version") if model.loaded else None
        return ORJSONResponse({"name": model_name, "load": True, "model_version": version})

    async def model_metadata(model_name: str) -> ORJSONResponse:
        """KServe's v2 model metadata plus `versions`: the model_version this server answers with, which
        a rollout reads to know the new model serves (components/deploy/kubernetes.py)."""
        model = _served_model(app)
        if model is None or model.name != model_name:
            return ORJSONResponse(status_code=404, content={"error": f"Model with name {model_name} does not exist."})
        version = model.loaded.metadata.get("model_version") if model.loaded else None
        return ORJSONResponse(
            {
                "name": model_name,
                "versions": [version] if version else [],
                "platform": "",
                "inputs": model.get_input_types(),
                "outputs": model.get_output_types(),
            }
        )

    app.add_api_route("/predict", original_predict, methods=["POST"], include_in_schema=True)
    # Registered before KServe's own routes (hooks are installed first), so these take precedence.
    app.add_api_route("/v2/repository/models/{model_name}/load", reload_model, methods=["POST"])
    app.add_api_route("/v2/models/{model_name}", model_metadata, methods=["GET"])
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    app.add_middleware(RequestGuard)


def _drop_timing_middleware(app: Any) -> None:
    """Leaves out KServe's TimingMiddleware unless access logging is on.

    Its only output is the per-request `kserve.trace` log line that RequestGuard silences, yet it
    resolves the route name on every request (about 8% of a request); RequestGuard's histogram
    measures the same latency. The middleware stack is built when the app starts, after KServe
    added its middleware, so the filter runs then.
    """
    if os.environ.get("CHURNFLOW_ACCESS_LOG"):
        return
    build = app.build_middleware_stack

    def build_without_timing() -> Any:
        app.user_middleware = [m for m in app.user_middleware if getattr(m.cls, "__name__", "") != "TimingMiddleware"]
        return build()

    app.build_middleware_stack = build_without_timing


def _single_worker_event_loop(event_loop: str) -> None:
    """Gives KServe's single-worker server the event loop its `event_loop` setting asks for.

    With several workers uvicorn picks the loop as asked ("auto": uvloop when installed), but with one
    KServe runs uvicorn inside a plain `asyncio.run`, so the setting is ignored. The only hook
    `asyncio.run` offers on Python 3.11 is the event loop policy.
    """
    if event_loop == "asyncio":
        log.info("event loop: asyncio")
        return
    try:
        import uvloop
    except ImportError:
        if event_loop == "uvloop":
            raise ChurnflowError("event loop: uvloop is not installed (pip install uvloop)") from None
        log.info("event loop: asyncio (uvloop is not installed)")
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # policies are deprecated from Python 3.14 on
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    # KServe's start() asks for the current loop before asyncio.run makes its own; uvloop's policy has none.
    asyncio.set_event_loop(asyncio.new_event_loop())
    log.info("event loop: uvloop")


def listening_sockets_keep_tcp_nodelay() -> None:
    """Makes uvicorn's pre-bound listening socket say it is TCP, so every accepted connection gets TCP_NODELAY.

    With several workers KServe binds the socket through uvicorn's `Config.bind_socket`, which leaves
    its protocol number at 0; accepted sockets inherit it, and asyncio only disables Nagle's algorithm
    on sockets that report IPPROTO_TCP. Every keep-alive response then waited on the client's delayed
    ACK: two asyncio workers served 180 single-row requests/s here instead of thousands (kserve#6050,
    uvicorn#3149, both open). Rewrapping the same descriptor with the right protocol number fixes it.
    """
    from uvicorn.config import Config

    original = Config.bind_socket
    if getattr(original, "churnflow_tcp", False):
        return

    def bind_socket(self: Any) -> socket.socket:
        sock = original(self)
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.proto != socket.IPPROTO_TCP:
            inheritable = sock.get_inheritable()
            sock = socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
            sock.set_inheritable(inheritable)
        return sock

    bind_socket.churnflow_tcp = True  # type: ignore[attr-defined]
    Config.bind_socket = bind_socket  # type: ignore[method-assign]


def _served_model(app: Any) -> Any:
    from churnflow.predictor.model import ChurnModel

    for model in _SERVED:
        if isinstance(model, ChurnModel):
            return model
    return None


_SERVED: list[Any] = []


def freeze_startup_objects() -> None:
    """Moves every object alive after start-up (modules, the model, the app) out of the garbage
    collector's reach, once per process, just before it serves.

    Python's full collections walk every tracked object. In the server that is ~220,000 objects of
    imported libraries and the forest, and a full collection took 106 ms (median; up to 204 ms) with
    the event loop stopped: 20 of them in 40 s of mixed load with prediction logging, enough to shed
    requests at the 250 ms queueing limit. After a freeze they took 19 ms, and the p99 latency of the
    same load fell from 123 to 25 ms. Those objects live as long as the process anyway."""
    gc.collect()
    gc.freeze()


def register_served(model: Any) -> None:
    """Makes `model` the one the extra routes (/predict, repository load) answer for in this process."""
    _SERVED[:] = [model]


def serve(
    model_dir: str,
    model_name: str = "churn",
    http_port: int = 8080,
    grpc_port: int = 0,
    workers: int = 1,
    max_batch: int | None = None,
    watch_seconds: float = 0.0,
    store_url: str | None = None,
    event_loop: str = "asyncio",
) -> None:
    """Loads the model and runs KServe's ModelServer until interrupted.

    A model that fails to load leaves the server up but not ready (503 on ready and infer), with one
    log line saying why; it retries loading on later requests. With `store_url` (or
    $CHURNFLOW_STORE_URL) every prediction is logged to that store in the background
    (churnflow.store.logger; buffer size $CHURNFLOW_STORE_BUFFER_ROWS, default 100,000 rows).
    `event_loop` is KServe's choice: "asyncio" (our default), "auto" (uvloop when installed) or "uvloop".
    Under 3x overload uvloop kept more requests (about 2,100 answered/s against 1,200-1,500, two workers)
    but left about one new connection in 30 waiting ~5 s, readiness probes included; asyncio answered
    every probe within 0.5 s (bench/soak_bench.py). At ordinary load both serve alike here.
    """
    configure_logging()
    metrics_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Must be in the environment before the workers are spawned (they import prometheus_client);
        # ours to remove when the server stops (a directory the operator set is theirs).
        metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="churnflow-metrics-")
    from kserve import ModelServer

    from churnflow.predictor.model import DEFAULT_MAX_BATCH, ChurnModel

    model = ChurnModel(
        model_name, model_dir, max_batch=max_batch or int(os.environ.get("CHURNFLOW_MAX_BATCH", DEFAULT_MAX_BATCH))
    )
    store_url = store_url or os.environ.get("CHURNFLOW_STORE_URL")
    if store_url:
        from churnflow.store.logger import DEFAULT_CAPACITY, PredictionLogger

        capacity = int(os.environ.get("CHURNFLOW_STORE_BUFFER_ROWS", DEFAULT_CAPACITY))
        model.prediction_log = PredictionLogger(store_url, model_name, capacity=capacity)
        log.info("logging predictions to %s", model.prediction_log.display_url)
    model.load()
    register_served(model)
    install_http_hooks()
    listening_sockets_keep_tcp_nodelay()
    model.watch(watch_seconds)
    server = ModelServer(
        http_port=http_port,
        grpc_port=grpc_port or 8081,
        enable_grpc=grpc_port > 0,
        workers=workers,
        event_loop=event_loop,
        enable_latency_logging=False,
        enable_docs_url=False,
    )
    server.register_model(model)
    if workers == 1:
        _single_worker_event_loop(event_loop)
        freeze_startup_objects()  # with several workers, each one does so when it has its model
    try:
        server.start([])
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
