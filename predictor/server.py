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
from typing import Any

from churnflow.predictor.current_model import register_served
from churnflow.predictor.gc_freeze import freeze_startup_objects
from churnflow.predictor.logs import configure_logging
from churnflow.predictor.patches import (
    ReadyWhenModelsAre,
    listening_sockets_keep_tcp_nodelay,
    single_worker_event_loop,
)
from churnflow.predictor.repository import GuardedRepository
from churnflow.predictor.routes import install_http_hooks

log = logging.getLogger("churnflow.predictor")


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
    kserve_options: dict[str, Any] | None = None,
) -> None:
    """Loads the model and runs KServe's ModelServer until interrupted.

    A model that fails to load leaves the server up but not ready (503 on readiness and inference),
    with one log line saying why; a re-release seen by `watch_seconds`, or a repository load, brings
    it up. With `store_url` (or $CHURNFLOW_STORE_URL) every prediction is logged to that store in the
    background (churnflow.store.logger; buffer size $CHURNFLOW_STORE_BUFFER_ROWS, default 100,000 rows).
    `event_loop` is KServe's choice: "asyncio" (our default: under overload uvloop can leave new
    connections, readiness probes included, waiting seconds; see the README), "auto" or "uvloop".
    gRPC is served when `grpc_port` is set, by the server process (beside the HTTP workers when there
    are several). `metadata_sha256` (or $CHURNFLOW_METADATA_SHA256) pins the artifact's metadata.json;
    `enable_repository_api` (or $CHURNFLOW_REPOSITORY_API=true) turns on repository load/unload.
    `kserve_options` are further keyword arguments for KServe's ModelServer (python -m passes KServe's
    own flags this way).
    """
    configure_logging()
    metrics_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Must be in the environment before the workers are spawned (they import prometheus_client);
        # ours to remove when the server stops (a directory the operator set is theirs).
        metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="churnflow-metrics-")
    from kserve import ModelServer

    from churnflow.core.released_model import normalize_sha256
    from churnflow.predictor.model import DEFAULT_MAX_BATCH, ChurnModel

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
        **{"enable_latency_logging": False, "enable_docs_url": False, **(kserve_options or {})},
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
