"""KServe's ModelServer with a model that does no work at all: the ceiling any predictor can reach.

Started by request_bench.py as `python _noop_server.py PORT`; answers every v1 predict with a constant.
Per-request access and timing log lines are dropped, as `churnflow serve` drops them by default.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from kserve import Model, ModelServer


class NoWork(Model):
    def __init__(self) -> None:
        super().__init__("churn")
        self.ready = True

    def load(self) -> bool:
        return True

    def predict(self, payload, headers=None):  # noqa: ANN001 - KServe's signature
        return {"predictions": [{"churn": 0, "probability": 0.0}], "loop": type(asyncio.get_running_loop()).__module__}


class _Quiet(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.name not in ("uvicorn.access", "kserve.trace")


if __name__ == "__main__":
    server = ModelServer(http_port=int(sys.argv[1]), workers=1, enable_grpc=False, enable_latency_logging=False)
    for name in ("", "uvicorn", "uvicorn.access", "kserve", "kserve.trace"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(_Quiet())
    server.start([NoWork()])
