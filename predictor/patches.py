"""Where churnflow changes KServe's, uvicorn's or asyncio's behaviour from the outside.

Each patch names what it works around upstream and the version it was checked on (KServe 0.21.0,
uvicorn and Python as pinned in constraints.txt). When upgrading KServe, re-read the named source
and drop a patch whose cause is gone; tests/test_predictor_*.py exercise each one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import warnings
from typing import Any

from kserve.protocol.dataplane import DataPlane

from churnflow.core.errors import ChurnflowError

log = logging.getLogger("churnflow.predictor")


class ClientErrorFilter(logging.Filter):
    """Drops KServe's stack-trace log for answers that are the client's doing (400, 404, 501) or a
    not-yet-ready model (503).

    Upstream: KServe's exception handlers (kserve/errors.py, checked on 0.21.0) log every such answer
    at ERROR with a full traceback; no upstream issue tracks it. A readiness probe or a hostile client
    would fill the log. They are counted in churnflow_request_errors_total, and why a model is not
    ready is logged once, when its load fails. Server errors (500) keep their traceback."""

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


def drop_timing_middleware(app: Any, access_log: bool = False) -> None:
    """Leaves out KServe's TimingMiddleware unless access logging is on (`access_log`).

    Upstream: KServe's REST server (kserve/protocol/rest/server.py, checked on 0.21.0) always adds
    timing-asgi's middleware; its only output is the per-request `kserve.trace` log line that
    churnflow silences, yet it resolves the route name on every request, a visible share of one. No
    upstream issue tracks it. The request guard's histogram measures the same latency. The
    middleware stack is built when the app starts, after KServe added its middleware, so the filter
    runs then.
    """
    if access_log:
        return
    build = app.build_middleware_stack

    def build_without_timing() -> Any:
        app.user_middleware = [m for m in app.user_middleware if getattr(m.cls, "__name__", "") != "TimingMiddleware"]
        return build()

    app.build_middleware_stack = build_without_timing


def single_worker_event_loop(event_loop: str) -> None:
    """Gives KServe's single-worker server the event loop its `event_loop` setting asks for.

    Upstream: kserve#4931 / PR kserve#4971 made uvicorn's loop configurable, but only the multi-worker
    path applies it; with one worker KServe 0.21.0 runs uvicorn inside a plain `asyncio.run`
    (kserve/model_server.py), so the setting is ignored. The only hook `asyncio.run` offers on
    Python 3.11 is the event loop policy.
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

    Upstream: kserve#6050 and uvicorn#3149 (both open; checked on KServe 0.21.0). With several workers
    KServe binds the socket through uvicorn's `Config.bind_socket`, which leaves its protocol number
    at 0; accepted sockets inherit it, and asyncio only disables Nagle's algorithm on sockets that
    report IPPROTO_TCP. Every keep-alive response then waited on the client's delayed ACK (about
    40 ms). Rewrapping the same descriptor with the right protocol number fixes it.
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


def workers_listen_on_their_own_sockets() -> None:
    """Gives each HTTP worker KServe spawns its own listening socket on the port (SO_REUSEPORT), so the
    kernel spreads new connections over the workers instead of whichever worker wakes first.

    Upstream: with several workers, KServe 0.21.0 (kserve/protocol/rest/multiprocess/server.py) binds
    one socket and hands that same socket to every worker. All workers wait on it; the one that wakes
    first accepts every connection queued (asyncio accepts up to its backlog per wake-up), so how a
    burst of new connections splits depends on wake-up timing, and a worker still starting (or busy)
    leaves its share to the others for as long as those connections live. No upstream issue tracks it;
    uvicorn's own multi-process mode shares one socket the same way.

    Here each worker gets a twin socket bound to the same address with SO_REUSEPORT, and Linux hashes
    each new connection to one of the listening twins. The server process keeps the socket KServe
    bound (marked SO_REUSEPORT so the twins may join it; it never listens, so it receives nothing)
    and closes its copy of each twin once the worker has it: a worker that dies takes its socket
    with it, and KServe's replacement worker gets a new twin. A second server on the same port is
    still refused (its first bind lacks SO_REUSEPORT). Without SO_REUSEPORT (not Linux) nothing changes.
    """
    if not hasattr(socket, "SO_REUSEPORT"):
        return
    from kserve.protocol.rest.multiprocess import server as multiprocess

    process_class = multiprocess.RESTServerProcess
    if getattr(process_class, "churnflow_reuseport", False):
        return
    original_init, original_start = process_class.__init__, process_class.start

    def __init__(self: Any, sockets: list[socket.socket], *args: Any, **kwargs: Any) -> None:
        self.churnflow_twins = [listening_twin(sock) for sock in sockets]
        original_init(self, self.churnflow_twins, *args, **kwargs)

    def start(self: Any) -> None:
        original_start(self)  # the spawned worker now holds its own descriptor of each twin
        for twin in self.churnflow_twins:
            twin.close()

    process_class.__init__ = __init__  # type: ignore[method-assign]
    process_class.start = start  # type: ignore[method-assign]
    process_class.churnflow_reuseport = True  # type: ignore[attr-defined]


def listening_twin(sock: socket.socket) -> socket.socket:
    """A new TCP socket bound, with SO_REUSEPORT, to the address `sock` is bound to (for one worker)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return sock  # a Unix socket or an inherited descriptor: shared as KServe shares it
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    twin = socket.socket(sock.family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    twin.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    twin.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    twin.bind(sock.getsockname())
    twin.set_inheritable(True)
    return twin


class ReadyWhenModelsAre(DataPlane):
    """KServe's data plane, but server readiness is every registered model's readiness.

    Upstream: KServe 0.21.0's DataPlane.ready() (kserve/protocol/dataplane.py) answers True whenever
    the process runs (kserve#3262 reports the same with no model loaded), while the Open Inference Protocol
    defines server readiness as ready to serve inference: a probe on /v2/health/ready would send
    traffic to a pod whose model failed to load. Installed by serve() before the server starts, so
    the REST workers (spawned with a pickled copy) and the gRPC server use it alike."""

    async def ready(self) -> bool:
        models = self._model_registry.get_models()
        return bool(models) and all(model.ready for model in models.values())
