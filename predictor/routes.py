"""What churnflow adds to KServe's FastAPI app, in every serving process.

- the request guard (guard.py) as the outermost middleware;
- HTTP 400 naming the field for bodies FastAPI rejects (KServe answers those with 422), and FastAPI's
  own errors in the {"error": ...} shape every other answer has;
- `POST /predict`, the Flask baseline's route and answer shape (bench/baseline_app.py), for existing clients;
- `GET /v2/models/{name}` with the serving `model_version` in `versions` (what a rollout checks);
- the model repository's load and unload (repository.py), ahead of KServe's own;
- `/metrics` aggregated across workers when several run (PROMETHEUS_MULTIPROC_DIR).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import ORJSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from churnflow.predictor import repository
from churnflow.predictor.current_model import served_model
from churnflow.predictor.guard import RequestGuard
from churnflow.predictor.patches import drop_timing_middleware
from churnflow.predictor.settings import current as current_settings

_installed: set[int] = set()


def install_http_hooks(app: Any = None) -> None:
    """Adds churnflow's middleware, handlers and routes to KServe's app (once per process).

    Called before KServe registers its own routes (in the server process and in each worker as it
    unpickles the model), so the routes added here take precedence over KServe's for the same path."""
    if app is None:
        from kserve.model_server import app
    if id(app) in _installed:
        return
    _installed.add(id(app))
    # KServe's app sets ORJSONResponse as the default response class, which FastAPI now warns about.
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")
    drop_timing_middleware(app, current_settings().access_log)
    app.add_exception_handler(RequestValidationError, bad_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_api_route("/predict", original_predict, methods=["POST"], include_in_schema=True)
    app.add_api_route("/v2/repository/models/{model_name}/load", repository.load_route, methods=["POST"])
    app.add_api_route("/v2/repository/models/{model_name}/unload", repository.unload_route, methods=["POST"])
    app.add_api_route("/v2/models/{model_name}", model_metadata, methods=["GET"])
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        app.add_api_route("/metrics", multiprocess_metrics, methods=["GET"], include_in_schema=False)
    app.add_middleware(RequestGuard)


async def model_metadata(model_name: str) -> ORJSONResponse:
    """KServe's v2 model metadata plus `versions`: the model_version this server answers with, which a
    rollout reads to know the new model serves (components/deploy/kubernetes.py)."""
    model = served_model()
    if model is None or model.name != model_name:
        return ORJSONResponse(status_code=404, content={"error": f"Model with name {model_name} does not exist."})
    version = model.loaded.released.metadata.get("model_version") if model.loaded else None
    return ORJSONResponse(
        {
            "name": model_name,
            "versions": [version] if version else [],
            "platform": "",
            "inputs": model.get_input_types(),
            "outputs": model.get_output_types(),
        }
    )


async def original_predict(request: Request) -> ORJSONResponse:
    """The Flask baseline's POST /predict (bench/baseline_app.py): one customer in, {"churn", "probability"} out."""
    from kserve.errors import InvalidInput, ModelNotReady

    model = served_model()
    if model is None or not model.ready:
        raise ModelNotReady(getattr(model, "name", "churn"))
    try:
        body = orjson.loads(await request.body())
    except Exception as error:
        raise InvalidInput(f"body: not valid JSON ({error})") from None
    response, _ = await model(body, dict(request.headers))
    predictions = response["predictions"]
    return ORJSONResponse(predictions[0] if isinstance(body, dict) and "instances" not in body else response)


async def multiprocess_metrics(request: Request) -> Response:
    """Every worker's metrics added up (KServe's /metrics shows only the worker that answers)."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


async def bad_request(_: Request, error: RequestValidationError) -> ORJSONResponse:
    return ORJSONResponse(status_code=400, content={"error": _validation_message(error)})


async def http_error(_: Request, error: StarletteHTTPException) -> Response:
    """FastAPI's own errors ({"detail": ...}) in the {"error": ...} shape every other answer has."""
    detail = str(error.detail)
    if detail == "There was an error parsing the body":
        detail = "body: not valid JSON (unparseable, not UTF-8, or nested too deeply)"
    return ORJSONResponse(status_code=error.status_code, content={"error": detail}, headers=error.headers)


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
