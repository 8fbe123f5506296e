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
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.model_repository_extension import ModelRepositoryExtension
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
        previous model keeps serving, and the answer says why) or when several worker processes
        serve (the request would reach only one of them)."""
        model = _served_model(app)
        refused = _refusal_answer(model, model_name, "load")
        if refused is not None:
            return refused
        if not model.reload():
            return ORJSONResponse(
                status_code=409,
                content={"error": f"new model refused, the previous one keeps serving: {model.load_error}"},
            )
        version = model.loaded.metadata.get("model_version") if model.loaded else None
        return ORJSONResponse({"name": model_name, "load": True, "model_version": version})

    async def unload_model(model_name: str) -> ORJSONResponse:
        """KServe's repository `unload` route: the model stops answering (503, not ready) until a
        `load` request or a new release brings it back."""
        model = _served_model(app)
        refused = _refusal_answer(model, model_name, "unload")
        if refused is not None:
            return refused
        model.unload()
        return ORJSONResponse({"name": model_name, "unload": True})

    app.add_api_route("/predict", original_predict, methods=["POST"], include_in_schema=True)
    # Registered before KServe's own routes (hooks are installed first), so these take precedence.
    app.add_api_route("/v2/repository/models/{model_name}/load", reload_model, methods=["POST"])
    app.add_api_route("/v2/repository/models/{model_name}/unload", unload_model, methods=["POST"])
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    app.add_middleware(RequestGuard)


def repository_refusal(model: Any, model_name: str, action: str) -> tuple[int, str] | None:
    """Why a repository load or unload cannot be done here, as (HTTP status, message); None when it can."""
    if model is None or not model.repository_api:
        return 403, (
            f"repository {action}: the model repository API is off; start the server with "
            "--enable-repository-api (or CHURNFLOW_REPOSITORY_API=true) to load and unload models"
        )
    if model.name != model_name:
        return 404, f"model {model_name!r} is not served here"
    if model.workers > 1:
        return 409, (
            f"repository {action}: refused, {model.workers} worker processes serve this model and a request "
            "reaches only one of them; release the model into its directory and serve with --watch, "
            "or serve with one worker"
        )
    return None


def _refusal_answer(model: Any, model_name: str, action: str) -> ORJSONResponse | None:
    refusal = repository_refusal(model, model_name, action)
    return None if refusal is None else ORJSONResponse(status_code=refusal[0], content={"error": refusal[1]})


class GuardedRepository(ModelRepositoryExtension):
    """KServe's model repository extension behind the same rules as the HTTP routes, for gRPC's
    RepositoryModelLoad/Unload (which KServe serves from the server process whatever the HTTP workers)."""

    async def load(self, model_name: str) -> None:
        from grpc_interceptor.exceptions import FailedPrecondition, NotFound, PermissionDenied

        model = _served_model(None)
        refusal = repository_refusal(model, model_name, "load")
        if refusal is not None:
            raise {403: PermissionDenied, 404: NotFound}.get(refusal[0], FailedPrecondition)(refusal[1])
        if not model.reload():
            raise FailedPrecondition(f"new model refused, the previous one keeps serving: {model.load_error}")

    async def unload(self, model_name: str) -> None:
        from grpc_interceptor.exceptions import FailedPrecondition, NotFound, PermissionDenied

        model = _served_model(None)
        refusal = repository_refusal(model, model_name, "unload")
        if refusal is not None:
            raise {403: PermissionDenied, 404: NotFound}.get(refusal[0], FailedPrecondition)(refusal[1])
        model.unload()


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


class ReadyWhenModelsAre(DataPlane):
    """KServe's data plane, but server readiness is every registered model's readiness."""

    async def ready(self) -> bool:
        models = self._model_registry.get_models()
        return bool(models) and all(model.ready for model in models.values())


def truthful_readiness(server: Any) -> None:
    """Makes the server's readiness (HTTP /v2/health/ready, gRPC ServerReady) say whether the model
    can answer.

    KServe 0.21's DataPlane.ready() answers True whenever the process runs (kserve/protocol/dataplane.py),
    while the Open Inference Protocol defines server readiness as ready to serve inference; a probe on it
    would send traffic to a pod whose model failed to load. The data plane is replaced before the server
    starts, so the REST workers (spawned with a pickled copy) and the gRPC server all use it. gRPC
    repository load and unload go through the same guard as the HTTP routes.
    """
    server.dataplane = ReadyWhenModelsAre(model_registry=server.registered_models)
    server.model_repository_extension = GuardedRepository(model_registry=server.registered_models)


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
    metadata_sha256: str | None = None,
    enable_repository_api: bool | None = None,
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

    from churnflow.predictor.model import DEFAULT_MAX_BATCH, ChurnModel, normalize_sha256

    model = ChurnModel(
        model_name,
        model_dir,
        max_batch=max_batch or int(os.environ.get("CHURNFLOW_MAX_BATCH", DEFAULT_MAX_BATCH)),
        metadata_sha256=normalize_sha256(
            metadata_sha256 or os.environ.get("CHURNFLOW_METADATA_SHA256"),
            "--metadata-sha256" if metadata_sha256 else "CHURNFLOW_METADATA_SHA256",
        ),
    )
    if enable_repository_api is None:
        enable_repository_api = os.environ.get("CHURNFLOW_REPOSITORY_API", "").strip().lower() in ("1", "true", "yes")
    model.repository_api = enable_repository_api
    store_url = store_url or os.environ.get("CHURNFLOW_STORE_URL")
    if store_url:
        from churnflow.store.logger import DEFAULT_CAPACITY, PredictionLogger

        capacity = int(os.environ.get("CHURNFLOW_STORE_BUFFER_ROWS", DEFAULT_CAPACITY))
        model.prediction_log = PredictionLogger(store_url, model_name, capacity=capacity)
        log.info("logging predictions to %s", model.prediction_log.display_url)
    model.workers = workers
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
    truthful_readiness(server)
    if grpc_port:
        where = "the server process, beside the HTTP workers" if workers > 1 else "the server process"
        log.info("gRPC (Open Inference Protocol v2) on port %d, served by %s", grpc_port, where)
    if workers == 1:
        _single_worker_event_loop(event_loop)
        freeze_startup_objects()  # with several workers, each one does so when it has its model
    try:
        server.start([])
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
