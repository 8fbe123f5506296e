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

log = logging.getLogger(__name__)

MAX_COMPILED_NODES = 20_000_000
TOLERANCE = 1e-9
INPUT_NAME = "features"
OUTPUT_NAME = "probability"
BRANCH_LEQ = 0


def _forest_arrays(model: RandomForestClassifier) -> dict[str, list]:
    """Flattens every tree into TreeEnsemble's parallel arrays (interior nodes and leaves apart)."""
    arrays: dict[str, list] = {
        k: [] for k in ("feature", "split", "true_id", "true_leaf", "false_id", "false_leaf", "roots", "leaf_weight")
    }
    for estimator in model.estimators_:
        tree = estimator.tree_
        left, right = tree.children_left, tree.children_right
        values = tree.value[:, 0, :]
        churn_fraction = values[:, 1] / values.sum(axis=1)
        interior = np.flatnonzero(left != -1)
        if interior.size == 0:  # a single-leaf tree: one dummy split whose branches share the leaf
            leaf = len(arrays["leaf_weight"])
            arrays["leaf_weight"].append(float(churn_fraction[0]))
            arrays["roots"].append(len(arrays["feature"]))
            for key, value in (
                ("feature", 0),
                ("split", 0.0),
                ("true_id", leaf),
                ("true_leaf", 1),
                ("false_id", leaf),
                ("false_leaf", 1),
            ):
                arrays[key].append(value)
            continue
        offset = len(arrays["feature"])
        interior_id = {int(node): offset + i for i, node in enumerate(interior)}
        arrays["roots"].append(interior_id[0])
        for node in interior:
            arrays["feature"].append(int(tree.feature[node]))
            arrays["split"].append(float(tree.threshold[node]))
            for child, id_key, leaf_key in (
                (left[node], "true_id", "true_leaf"),
                (right[node], "false_id", "false_leaf"),
            ):
                if left[child] == -1:
                    arrays[id_key].append(len(arrays["leaf_weight"]))
                    arrays[leaf_key].append(1)
                    arrays["leaf_weight"].append(float(churn_fraction[child]))
                else:
                    arrays[id_key].append(interior_id[int(child)])
                    arrays[leaf_key].append(0)
    return arrays


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
        tree_roots=a["roots"],
        nodes_featureids=a["feature"],
        nodes_splits=numpy_helper.from_array(np.asarray(a["split"], dtype=np.float64)),
        nodes_modes=numpy_helper.from_array(np.full(len(a["feature"]), BRANCH_LEQ, dtype=np.uint8)),
        nodes_truenodeids=a["true_id"],
        nodes_trueleafs=a["true_leaf"],
        nodes_falsenodeids=a["false_id"],
        nodes_falseleafs=a["false_leaf"],
        leaf_targetids=[0] * len(a["leaf_weight"]),
        leaf_weights=numpy_helper.from_array(np.asarray(a["leaf_weight"], dtype=np.float64)),
    )
    graph = helper.make_graph(
        [
            helper.make_node("Cast", [INPUT_NAME], ["x32"], to=TensorProto.FLOAT),
            helper.make_node("Cast", ["x32"], ["x64"], to=TensorProto.DOUBLE),
            trees,
            helper.make_node("Div", ["leaf_sum", "n_trees"], ["mean"]),
            helper.make_node("Squeeze", ["mean", "axis1"], [OUTPUT_NAME]),
        ],
        "churnflow_forest",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.DOUBLE, [None, n_features])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.DOUBLE, [None])],
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
    compiled = session.run(None, {INPUT_NAME: np.ascontiguousarray(sample, dtype=np.float64)})[0]
    reference = model.predict_proba(sample)[:, 1]
    return float(np.max(np.abs(compiled - reference))) if len(sample) else 0.0
