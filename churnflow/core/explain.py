"""Reasons per prediction: how much each of the caller's columns pushed the churn probability.

The decision-path decomposition (Saabas) is exact and cheap for both model families: walking each
tree from root to leaf, every split moves the node's value, and that move is credited to the split's
feature, so the moves along a path add up to the leaf.
- random forest: node values are churn fractions; averaged over trees, `base_value + sum(contributions)`
  equals predict_proba to floating-point precision.
- gradient-boosted trees: node values are log-odds, and the exact sum is the model's raw log-odds
  F(x) = F0 + sum(c_i). The served scale is the probability, so each row's contributions are scaled
  by one common factor, (sigmoid(F) - sigmoid(F0)) / (F - F0): every sign and every ratio between
  columns is kept, and base_value = sigmoid(F0) plus the scaled parts is predict_proba again.
One-hot columns are folded back into the column the caller sent. With a calibrated model the
calibration's own shift is reported separately, so the parts still add up to the served probability.

Why not a library: treeinterpreter (same method) is unmaintained since 2020, and shap's TreeExplainer
brings numba/llvmlite (over 100 MB) into the serving image for the same numbers on a forest's paths.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import expit

from churnflow.core.contract import FeatureContract
from churnflow.core.threshold import churn_flags
from churnflow.core.trees import is_boosting, model_trees


def path_contributions(model: Any, features: np.ndarray) -> tuple[float, np.ndarray]:
    """(base value, rows × model-columns contributions) in uncalibrated churn-probability units."""
    if is_boosting(model):
        base, log_odds = log_odds_contributions(model, features)
        total = base + log_odds.sum(axis=1)
        moved = total - base
        safe = np.where(moved == 0.0, 1.0, moved)
        # where F == F0 the parts sum to zero already; the derivative keeps them on the same scale
        scale = np.where(moved == 0.0, expit(base) * (1.0 - expit(base)), (expit(total) - expit(base)) / safe)
        return float(expit(base)), log_odds * scale[:, None]
    return _forest_contributions(model, features)


def log_odds_contributions(model: Any, features: np.ndarray) -> tuple[float, np.ndarray]:
    """Gradient-boosted trees: (baseline + every tree's root value, rows × columns) in log-odds.

    Interior nodes carry values too, so the walk credits `value[child] - value[node]` to the split's
    feature. Like scikit-learn, x <= threshold goes left (model matrices hold no missing values: blanks
    are read as the training median before the model sees them)."""
    rows, width = features.shape
    contributions = np.zeros((rows, width))
    base = float(np.asarray(model._baseline_prediction).ravel()[0])
    everyone = np.arange(rows)
    for tree in model_trees(model):
        values = tree.leaf_value  # every node's value
        base += values[0]
        node = np.zeros(rows, dtype=np.int64)
        active = everyone[~tree.is_leaf[node]]
        while active.size:
            at = node[active]
            column = tree.feature[at]
            x = features[active, column]
            child = np.where(x <= tree.threshold[at], tree.left[at], tree.right[at])
            np.add.at(contributions, (active, column), values[child] - values[at])
            node[active] = child
            active = active[~tree.is_leaf[child]]
    return base, contributions


def _forest_contributions(model: Any, features: np.ndarray) -> tuple[float, np.ndarray]:
    rows, width = features.shape
    contributions = np.zeros((rows, width))
    base = 0.0
    for estimator in model.estimators_:
        tree = estimator.tree_
        totals = tree.value[:, 0, :].sum(axis=1)
        churn = tree.value[:, 0, 1] / totals
        base += churn[0]
        path = estimator.decision_path(features)
        nodes = path.indices  # per row: root first, node ids increasing along the path
        row_of = np.repeat(np.arange(rows), np.diff(path.indptr))
        has_child = np.ones(len(nodes), dtype=bool)
        has_child[path.indptr[1:] - 1] = False
        parents, children = nodes[has_child], nodes[np.flatnonzero(has_child) + 1]
        np.add.at(contributions, (row_of[has_child], tree.feature[parents]), churn[children] - churn[parents])
    trees = len(model.estimators_)
    return base / trees, contributions / trees


def fold_to_inputs(contract: FeatureContract, contributions: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Sums one-hot columns back into their categorical column: rows × input-columns."""
    columns = contract.input_columns
    index = {name: i for i, name in enumerate(columns)}
    owner = [index[name] for name in contract.numeric]
    for column, levels in contract.categorical.items():
        owner.extend(index[column] for _ in levels)
    folded = np.zeros((contributions.shape[0], len(columns)))
    np.add.at(folded.T, np.asarray(owner), contributions.T)
    return columns, folded


def explain_rows(
    model: Any,
    contract: FeatureContract,
    features: np.ndarray,
    served: np.ndarray,
    top: int = 3,
) -> list[dict[str, Any]]:
    """Per row: probability, churn, base value, every column's contribution, and the top movers."""
    base, raw_contributions = path_contributions(model, features)
    columns, contributions = fold_to_inputs(contract, raw_contributions)
    raw = base + raw_contributions.sum(axis=1)
    churn = churn_flags(served, contract.threshold)
    answers = []
    for row in range(features.shape[0]):
        values = contributions[row]
        order = np.argsort(values)
        answers.append(
            {
                "churn": int(churn[row]),
                "probability": float(served[row]),
                "base_value": float(base),
                "contributions": {columns[i]: float(values[i]) for i in range(len(columns))},
                "calibration_adjustment": float(served[row] - raw[row]),
                "top_increasing": [[columns[i], float(values[i])] for i in order[::-1][:top] if values[i] > 0],
                "top_decreasing": [[columns[i], float(values[i])] for i in order[:top] if values[i] < 0],
            }
        )
    return answers
