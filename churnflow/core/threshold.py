"""The decision threshold: the probability above which a customer is called a churner.

Chosen at training time on out-of-fold predictions (after calibration, churnflow/core/calibration.py)
and stored as the contract's `threshold`. The rule "churn when probability > threshold" is
`churn_flags`, the one place it is written: serving, bulk scoring, evaluation, explanations and the
model card all call it, so a customer is never a churner on one path and not on another.
"""

from __future__ import annotations

import re

import numpy as np

from churnflow.core.errors import ChurnflowError

_PRECISION_GOAL = re.compile(r"^precision\s*>=\s*([0-9.]+)$")


def churn_flags(probability: np.ndarray, threshold: float) -> np.ndarray:
    """1 where the (calibrated) probability is strictly above the threshold, else 0, as int64.

    Strictly above: a threshold chosen by `choose_threshold` sits one step below the chosen cut, so
    the cut itself still counts as churn."""
    return (np.asarray(probability) > threshold).astype(np.int64)


def choose_threshold(goal: str, probability: np.ndarray, target: np.ndarray) -> tuple[float, dict]:
    """The churn decision threshold for a goal: "f1" (best F1), "precision>=P" (most recall at that
    precision, for retention campaigns) or a fixed number such as "0.5"."""
    from sklearn.metrics import precision_recall_curve  # training only: loading a model stays light

    goal = goal.strip().lower()
    if goal == "f1" or _PRECISION_GOAL.match(goal):
        precision, recall, thresholds = precision_recall_curve(target, probability)
        precision, recall = precision[:-1], recall[:-1]
        if goal == "f1":
            f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
            best = int(np.argmax(f1))
        else:
            floor = float(_PRECISION_GOAL.match(goal).group(1))
            reachable = np.flatnonzero(precision >= floor)
            if reachable.size == 0:
                raise ChurnflowError(
                    f"threshold_goal {goal!r}: no threshold reaches precision {floor} on training data"
                )
            best = int(reachable[np.argmax(recall[reachable])])
        # Served as "churn when probability > threshold": step just below the chosen cut.
        threshold = float(np.nextafter(thresholds[best], -np.inf))
        return threshold, {
            "goal": goal,
            "threshold": threshold,
            "precision_oof": float(precision[best]),
            "recall_oof": float(recall[best]),
        }
    try:
        threshold = float(goal)
    except ValueError:
        raise ChurnflowError(f"threshold_goal: expected f1, precision>=P or a number, got {goal!r}") from None
    if not 0.0 <= threshold < 1.0:
        raise ChurnflowError(f"threshold_goal: a fixed threshold must be in [0, 1), got {threshold}")
    return threshold, {"goal": "fixed", "threshold": threshold}
