"""A fitted tree model read as plain node arrays, one reader for both families.

The forest compiler (components/train/compile_forest.py) writes these arrays into ONNX, and the
explainer (churnflow/core/explain.py) walks them: both must see the same trees, so one module reads them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np


class TreeArrays(NamedTuple):
    """One fitted tree as parallel node arrays (node 0 is the root)."""

    left: np.ndarray
    right: np.ndarray
    is_leaf: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    leaf_value: np.ndarray
    """per node; read at leaves only"""


def is_boosting(model: Any) -> bool:
    return hasattr(model, "_predictors")


def model_trees(model: Any) -> list[TreeArrays]:
    """Every tree of a fitted forest (leaf value: its churn fraction) or of a binary gradient-boosted
    model (leaf value: its raw log-odds increment)."""
    trees = []
    if is_boosting(model):
        for (predictor,) in model._predictors:  # binary: one tree per iteration
            nodes = predictor.nodes
            trees.append(
                TreeArrays(
                    left=nodes["left"].astype(np.int64),
                    right=nodes["right"].astype(np.int64),
                    is_leaf=nodes["is_leaf"].astype(bool),
                    feature=nodes["feature_idx"].astype(np.int64),
                    threshold=nodes["num_threshold"].astype(np.float64),
                    leaf_value=nodes["value"].astype(np.float64),
                )
            )
        return trees
    for estimator in model.estimators_:
        tree = estimator.tree_
        values = tree.value[:, 0, :]
        trees.append(
            TreeArrays(
                left=tree.children_left.astype(np.int64),
                right=tree.children_right.astype(np.int64),
                is_leaf=tree.children_left == -1,
                feature=tree.feature.astype(np.int64),
                threshold=tree.threshold.astype(np.float64),
                leaf_value=(values[:, 1] / values.sum(axis=1)).astype(np.float64),
            )
        )
    return trees
