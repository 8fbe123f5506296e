"""`churnflow serve` with the model's steps doing no work at all: the ceiling of the serving stack.

Started by request_bench.py as `python _noop_server.py --model-dir DIR --port PORT [serve flags]`. The
server, its hooks, flags and event loop are churnflow's own; only ChurnModel's preprocess, predict and
postprocess are replaced by ones that return a constant answer, so what remains is KServe's
FastAPI/uvicorn stack plus churnflow's request guard: what no predictor on it can beat.
"""

from __future__ import annotations

import sys
from typing import Any

from churnflow.cli import main
from churnflow.predictor.model import ChurnModel

ANSWER = {"predictions": [{"churn": 0, "probability": 0.0}]}


def _pass(self: ChurnModel, payload: Any, headers: dict[str, str] | None = None) -> Any:
    return payload


def _answer(self: ChurnModel, payload: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return ANSWER


ChurnModel.preprocess = _pass
ChurnModel.predict = _answer
ChurnModel.postprocess = _pass

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
