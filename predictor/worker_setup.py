"""Making a process ready to serve: the server process, and each worker KServe spawns.

KServe starts extra workers by pickling the model into spawned processes, so a worker's first
churnflow code is ChurnModel.__setstate__, which calls prepare_worker() once the model is installed.
"""

from __future__ import annotations

from typing import Any

from churnflow.predictor.current_model import register_served
from churnflow.predictor.gc_freeze import freeze_startup_objects
from churnflow.predictor.routes import install_http_hooks
from churnflow.predictor.settings import install as install_settings


def prepare_worker(model: Any) -> None:
    """The process-wide part of serving `model` here: the settings the server process read (they
    travel inside the model; a worker never reads them again), our routes on KServe's app, the model
    they answer for, and the start-up objects frozen out of the garbage collector's reach (last: this
    process is about to serve)."""
    if getattr(model, "settings", None) is not None:
        install_settings(model.settings)
    register_served(model)
    install_http_hooks()
    freeze_startup_objects()
