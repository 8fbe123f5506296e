"""The ceiling: a bare no-op `kserve.Model` on KServe's own ModelServer, nothing of churnflow in it.

Started by ceiling_bench.py as `python _noop_kserve.py PORT [--keep-timing-middleware]`. `load()` only
says ready; `predict` answers a constant: the v1 shape churnflow answers for one row, or a one-row v2
InferResponse with the same two outputs. Whatever a request costs here is KServe's FastAPI/uvicorn stack
alone, which no predictor on that stack can beat.

Logging as `churnflow serve` has it by default, so the two are measured alike: per-request latency
lines off (`enable_latency_logging=False`), uvicorn's access log and KServe's `kserve.trace` timing
log at WARNING, and KServe's TimingMiddleware (whose only output is that timing log) left out unless
--keep-timing-middleware is given. One worker, asyncio, the docs routes off, as churnflow serves.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

import kserve
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

V1_ANSWER = {"predictions": [{"churn": 0, "probability": 0.0}]}


class NoopModel(kserve.Model):
    """Does nothing: ready at once, the same constant answer for every request."""

    def load(self) -> bool:
        self.ready = True
        return True

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        if isinstance(payload, InferRequest):
            return InferResponse(
                response_id=payload.id or "noop",
                model_name=self.name,
                infer_outputs=[
                    InferOutput(name="churn", shape=[1], datatype="INT64", data=[0]),
                    InferOutput(name="probability", shape=[1], datatype="FP64", data=[0.0]),
                ],
            )
        return V1_ANSWER


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--keep-timing-middleware", action="store_true")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # kserve.model_server parses the command line when imported
    from kserve.model_server import app

    model = NoopModel("churn")
    model.load()
    server = kserve.ModelServer(
        http_port=args.port,
        enable_grpc=False,
        workers=1,
        event_loop="asyncio",
        enable_latency_logging=False,
        enable_docs_url=False,
    )
    for name in ("kserve.trace", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if not args.keep_timing_middleware:
        build = app.build_middleware_stack

        def build_without_timing() -> Any:
            app.user_middleware = [m for m in app.user_middleware if m.cls.__name__ != "TimingMiddleware"]
            return build()

        app.build_middleware_stack = build_without_timing
    server.start([model])


if __name__ == "__main__":
    main()
