"""serve(): KServe's ModelServer around a churn model, with churnflow's additions in place.

What each addition does lives in its own module: routes.py (extra routes and error shapes), guard.py
(load shedding, limits, request metrics), repository.py (load/unload), patches.py (KServe, uvicorn
and asyncio behaviour changed from the outside, each with its upstream reference), gc_freeze.py.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

from churnflow.predictor.current_model import register_served
from churnflow.predictor.gc_freeze import freeze_startup_objects
from churnflow.predictor.logs import configure_logging
from churnflow.predictor.patches import (
    ReadyWhenModelsAre,
    listening_sockets_keep_tcp_nodelay,
    single_worker_event_loop,
    workers_listen_on_their_own_sockets,
)
from churnflow.predictor.repository import GuardedRepository
from churnflow.predictor.routes import install_http_hooks
from churnflow.predictor.settings import PredictorSettings
from churnflow.predictor.settings import install as install_settings

log = logging.getLogger("churnflow.predictor")


def serve(settings: PredictorSettings) -> None:
    """Loads the model and runs KServe's ModelServer until interrupted, as `settings` say
    (predictor/settings.py: read once at start-up from the flags and the environment).

    A model that fails to load leaves the server up but not ready (503 on readiness and inference),
    with one log line saying why; a re-release seen by `watch_seconds`, or a repository load, brings
    it up. With `store_url` every prediction is logged to that store in the background
    (churnflow.store.logger, buffering up to `store_buffer_rows`). `event_loop` is KServe's choice:
    "asyncio" (our default: under overload uvloop can leave new connections, readiness probes
    included, waiting seconds; see the README), "auto" or "uvloop". gRPC is served when `grpc_port`
    is set, by the server process (beside the HTTP workers when there are several).
    `metadata_sha256` pins the artifact's metadata.json; `repository_api` turns on repository
    load/unload. `kserve_options` are further keyword arguments for KServe's ModelServer.
    """
    install_settings(settings)  # before anything below reads it; workers get it inside the model
    configure_logging()
    workers, grpc_port, event_loop = settings.workers, settings.grpc_port, settings.event_loop
    metrics_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Must be in the environment before the workers are spawned (they import prometheus_client);
        # ours to remove when the server stops (a directory the operator set is theirs).
        metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="churnflow-metrics-")
    from kserve import ModelServer

    from churnflow.predictor.model import ChurnModel

    model = ChurnModel(
        settings.model_name,
        settings.model_dir,
        max_batch=settings.max_batch,
        metadata_sha256=settings.metadata_sha256,
    )
    model.settings = settings
    model.repository_api = settings.repository_api
    if settings.store_url:
        from churnflow.store.logger import PredictionLogger

        model.prediction_log = PredictionLogger(
            settings.store_url, settings.model_name, capacity=settings.store_buffer_rows
        )
        log.info("logging predictions to %s", model.prediction_log.display_url)
    model.workers = workers
    model.load()
    register_served(model)
    install_http_hooks()
    listening_sockets_keep_tcp_nodelay()
    workers_listen_on_their_own_sockets()
    model.watch(settings.watch_seconds)
    server = ModelServer(
        http_port=settings.http_port,
        grpc_port=grpc_port or 8081,
        enable_grpc=grpc_port > 0,
        workers=workers,
        event_loop=event_loop,
        **{"enable_latency_logging": False, "enable_docs_url": False, **settings.kserve_options},
    )
    server.register_model(model)
    # Set before start(): the REST workers get pickled copies, the gRPC server uses these directly.
    server.dataplane = ReadyWhenModelsAre(model_registry=server.registered_models)
    server.model_repository_extension = GuardedRepository(model_registry=server.registered_models)
    if grpc_port:
        where = "the server process, beside the HTTP workers" if workers > 1 else "the server process"
        log.info("gRPC (Open Inference Protocol v2) on port %d, served by %s", grpc_port, where)
    if workers == 1:
        single_worker_event_loop(event_loop)
        freeze_startup_objects()  # with several workers, each one does so when it has its model
    try:
        server.start([])
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
