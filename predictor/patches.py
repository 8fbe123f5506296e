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
