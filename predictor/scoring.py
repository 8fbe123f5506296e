"""Scoring a model matrix: the compiled forest when there is one, scikit-learn otherwise.

ONNX Runtime sessions hold native state that does not pickle, and KServe starts extra workers by
pickling the model into spawned processes, so the scorer drops its session when pickled and builds
it again on first use in the new process.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from churnflow.artifact import MODEL_FILE, ONNX_FILE, ONNX_INPUT

log = logging.getLogger(__name__)


class Scorer:
    """Churn probability for each row of a float64 matrix."""

    def __init__(self, model_dir: str | Path, prefer_compiled: bool = True) -> None:
        self.model_dir = Path(model_dir)
        self.sklearn = joblib.load(self.model_dir / MODEL_FILE)
        self.sklearn.n_jobs = None  # one request is fastest on one thread
        self._onnx_bytes: bytes | None = None
        self._session: Any = None
        if prefer_compiled and (self.model_dir / ONNX_FILE).is_file():
            self._onnx_bytes = (self.model_dir / ONNX_FILE).read_bytes()
            self._session = self._new_session()

    @property
    def backend(self) -> str:
        return "onnxruntime" if self._onnx_bytes is not None else "scikit-learn"

    def _new_session(self) -> Any:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        return onnxruntime.InferenceSession(self._onnx_bytes, options, providers=["CPUExecutionProvider"])

    def probability(self, features: np.ndarray) -> np.ndarray:
        if self._onnx_bytes is None:
            return self.sklearn.predict_proba(features)[:, 1]
        if self._session is None:
            self._session = self._new_session()
        return self._session.run(None, {ONNX_INPUT: features})[0]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_session"] = None
        return state
