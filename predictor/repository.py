"""The model repository's load and unload requests (Open Inference Protocol repository extension).

Off unless the operator enables them (`--enable-repository-api`, CHURNFLOW_REPOSITORY_API=true): they
let any caller who reaches the port swap or drop the served model. When on, `load` re-reads the model
directory (a hot reload; a refused directory leaves the previous model serving) and `unload` stops
answering until the next load or release. With several worker processes a request would reach only
one of them, so both are refused then; a release with `--watch` reaches every worker.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import ORJSONResponse
from kserve.protocol.model_repository_extension import ModelRepositoryExtension

from churnflow.predictor.current_model import served_model


def refusal(model: Any, model_name: str, action: str) -> tuple[int, str] | None:
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


async def load_route(model_name: str) -> ORJSONResponse:
    """POST /v2/repository/models/{name}/load: re-read the model directory (hot reload).

    403 when the repository API is off, 404 for a model this server does not serve, 409 with
    several workers or when the new directory is refused (the previous model keeps serving, and
    the answer says why)."""
    model = served_model()
    refused = refusal(model, model_name, "load")
    if refused is not None:
        return ORJSONResponse(status_code=refused[0], content={"error": refused[1]})
    if not model.reload():
        return ORJSONResponse(
            status_code=409,
            content={"error": f"new model refused, the previous one keeps serving: {model.load_error}"},
        )
    version = model.loaded.released.metadata.get("model_version") if model.loaded else None
    return ORJSONResponse({"name": model_name, "load": True, "model_version": version})


async def unload_route(model_name: str) -> ORJSONResponse:
    """POST /v2/repository/models/{name}/unload: the model answers 503 (not ready) until reloaded."""
    model = served_model()
    refused = refusal(model, model_name, "unload")
    if refused is not None:
        return ORJSONResponse(status_code=refused[0], content={"error": refused[1]})
    model.unload()
    return ORJSONResponse({"name": model_name, "unload": True})


class GuardedRepository(ModelRepositoryExtension):
    """KServe's repository extension under the same rules, for gRPC's RepositoryModelLoad/Unload
    (which KServe serves from the server process, whatever the number of HTTP workers)."""

    async def load(self, model_name: str) -> None:
        model = _allowed(model_name, "load")
        if not model.reload():
            from grpc_interceptor.exceptions import FailedPrecondition

            raise FailedPrecondition(f"new model refused, the previous one keeps serving: {model.load_error}")

    async def unload(self, model_name: str) -> None:
        _allowed(model_name, "unload").unload()


def _allowed(model_name: str, action: str) -> Any:
    from grpc_interceptor.exceptions import FailedPrecondition, NotFound, PermissionDenied

    model = served_model()
    refused = refusal(model, model_name, action)
    if refused is not None:
        raise {403: PermissionDenied, 404: NotFound}.get(refused[0], FailedPrecondition)(refused[1])
    return model
