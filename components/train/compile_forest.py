"""Compiles a fitted forest to ONNX at training time, so the predictor serves it in microseconds.

The graph is one `ai.onnx.ml` TreeEnsemble node (opset 5), which keeps splits and leaf values in
double precision and outputs float64. skl2onnx's converter emits TreeEnsembleClassifier, whose
probabilities are float32 (a served 0.45 becomes 0.44999998807907104), so the forest is written
directly with the `onnx` helper instead: a few dozen lines that map sklearn's tree arrays one to one.

Exactness: scikit-learn compares float32(x) <= threshold, so the graph casts the input to float32
and back before the trees; leaf values are summed then divided by the number of trees. Served
probabilities equal predict_proba's to about 1e-16 (summation order); training checks that on
sample rows and records the largest difference. A forest that is too large or disagrees by more
than the tolerance is not compiled, and the predictor falls back to scikit-learn.
"""

from __future__ import annotations

import logging

import numpy as np
from sklearn.ensemble import RandomForestClassifier

from churnflow.artifact import ONNX_INPUT, ONNX_OUTPUT

log = logging.getLogger(__name__)

MAX_COMPILED_NODES = 20_000_000
TOLERANCE = 1e-15  # a few float64 ulps: only summation order may differ
BRANCH_LEQ = 0


def _forest_arrays(model: RandomForestClassifier) -> dict[str, np.ndarray]:
    """Flattens every tree into TreeEnsemble's parallel arrays (interior nodes and leaves numbered apart).

    Vectorised per tree, so large forests flatten quickly.
    """
    parts: dict[str, list[np.ndarray]] = {
        k: [] for k in ("feature", "split", "true_id", "true_leaf", "false_id", "false_leaf", "roots", "leaf_weight")
    }
    node_offset = leaf_offset = 0
    for estimator in model.estimators_:
        tree = estimator.tree_
        left, right = tree.children_left, tree.children_right
        values = tree.value[:, 0, :]
        churn_fraction = values[:, 1] / values.sum(axis=1)
        is_leaf = left == -1
        interior, leaves = np.flatnonzero(~is_leaf), np.flatnonzero(is_leaf)
        if interior.size == 0:  # a single-leaf tree: one dummy split whose branches share the leaf
            interior, left, right = np.array([0]), np.array([0]), np.array([0])
            features, splits = np.array([0]), np.array([0.0])
        else:
            features, splits = tree.feature[interior], tree.threshold[interior]
        position = np.empty(len(is_leaf), dtype=np.int64)
        position[interior] = node_offset + np.arange(interior.size)
        position[leaves] = leaf_offset + np.arange(leaves.size)
        for child, id_key, leaf_key in (
            (left[interior], "true_id", "true_leaf"),
            (right[interior], "false_id", "false_leaf"),
        ):
            parts[id_key].append(position[child])
            parts[leaf_key].append(is_leaf[child].astype(np.int64))
        parts["feature"].append(features.astype(np.int64))
        parts["split"].append(splits.astype(np.float64))
        parts["roots"].append(np.array([node_offset]))
        parts["leaf_weight"].append(churn_fraction[leaves].astype(np.float64))
        node_offset += interior.size
        leaf_offset += leaves.size
    return {key: np.concatenate(chunks) for key, chunks in parts.items()}


def compile_forest(model: RandomForestClassifier, n_features: int) -> bytes | None:
    """Returns the serialized ONNX model, or None when the forest should stay in scikit-learn."""
    nodes = sum(tree.tree_.node_count for tree in model.estimators_)
    if nodes > MAX_COMPILED_NODES:
        log.warning(
            "forest has %d nodes (> %d): not compiled, serving will use scikit-learn", nodes, MAX_COMPILED_NODES
        )
        return None
    from onnx import TensorProto, helper, numpy_helper

    a = _forest_arrays(model)
    trees = helper.make_node(
        "TreeEnsemble",
        ["x64"],
        ["leaf_sum"],
        domain="ai.onnx.ml",
        aggregate_function=1,  # SUM
        n_targets=1,
        post_transform=0,
        tree_roots=a["roots"].tolist(),
        nodes_featureids=a["feature"].tolist(),
        nodes_splits=numpy_helper.from_array(a["split"]),
        nodes_modes=numpy_helper.from_array(np.full(len(a["feature"]), BRANCH_LEQ, dtype=np.uint8)),
        nodes_truenodeids=a["true_id"].tolist(),
        nodes_trueleafs=a["true_leaf"].tolist(),
        nodes_falsenodeids=a["false_id"].tolist(),
        nodes_falseleafs=a["false_leaf"].tolist(),
        leaf_targetids=np.zeros(len(a["leaf_weight"]), dtype=np.int64).tolist(),
        leaf_weights=numpy_helper.from_array(a["leaf_weight"]),
    )
    graph = helper.make_graph(
        [
            helper.make_node("Cast", [ONNX_INPUT], ["x32"], to=TensorProto.FLOAT),
            helper.make_node("Cast", ["x32"], ["x64"], to=TensorProto.DOUBLE),
            trees,
            helper.make_node("Div", ["leaf_sum", "n_trees"], ["mean"]),
            helper.make_node("Squeeze", ["mean", "axis1"], [ONNX_OUTPUT]),
        ],
        "churnflow_forest",
        [helper.make_tensor_value_info(ONNX_INPUT, TensorProto.DOUBLE, [None, n_features])],
        [helper.make_tensor_value_info(ONNX_OUTPUT, TensorProto.DOUBLE, [None])],
        initializer=[
            numpy_helper.from_array(np.array([float(len(model.estimators_))]), "n_trees"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        ],
    )
    onnx_model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 19), helper.make_opsetid("ai.onnx.ml", 5)],
        producer_name="churnflow",
    )
    return onnx_model.SerializeToString()


def compiled_max_difference(onnx_bytes: bytes, model: RandomForestClassifier, sample: np.ndarray) -> float:
    """Largest |p_onnx - p_sklearn| of the churn probability over `sample` rows."""
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    compiled = session.run(None, {ONNX_INPUT: np.ascontiguousarray(sample, dtype=np.float64)})[0]
    reference = model.predict_proba(sample)[:, 1]
    return float(np.max(np.abs(compiled - reference))) if len(sample) else 0.0
