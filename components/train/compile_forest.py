"""Compiles a fitted forest to ONNX at training time, so the predictor serves it in microseconds.

The compiled graph reads float64 (ONNX-ML opset 3), which keeps split thresholds in double precision:
its probabilities match scikit-learn's within about 1e-7. Training checks that on sample rows and
records the largest difference; a forest that is too large, fails to convert or disagrees by more
than the tolerance is simply not compiled, and the predictor falls back to scikit-learn.
"""

from __future__ import annotations

import logging

import numpy as np
from sklearn.ensemble import RandomForestClassifier

log = logging.getLogger(__name__)

MAX_COMPILED_NODES = 20_000_000
TOLERANCE = 1e-6
INPUT_NAME = "features"


def compile_forest(model: RandomForestClassifier, n_features: int) -> bytes | None:
    """Returns the serialized ONNX model, or None when the forest should stay in scikit-learn."""
    nodes = sum(tree.tree_.node_count for tree in model.estimators_)
    if nodes > MAX_COMPILED_NODES:
        log.warning(
            "forest has %d nodes (> %d): not compiled, serving will use scikit-learn", nodes, MAX_COMPILED_NODES
        )
        return None
    try:
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import DoubleTensorType

        onnx_model = to_onnx(
            model,
            initial_types=[(INPUT_NAME, DoubleTensorType([None, n_features]))],
            options={id(model): {"zipmap": False}},
            target_opset={"": 17, "ai.onnx.ml": 3},
        )
    except Exception as error:  # a converter gap must not fail training: sklearn still serves
        log.warning("forest not compiled to ONNX (%s): serving will use scikit-learn", error)
        return None
    return onnx_model.SerializeToString()


def compiled_max_difference(onnx_bytes: bytes, model: RandomForestClassifier, sample: np.ndarray) -> float:
    """Largest |p_onnx - p_sklearn| of the churn probability over `sample` rows."""
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    compiled = session.run(None, {INPUT_NAME: np.ascontiguousarray(sample, dtype=np.float64)})[1][:, 1]
    reference = model.predict_proba(sample)[:, 1]
    return float(np.max(np.abs(compiled - reference))) if len(sample) else 0.0
