"""The training reference for drift: how each feature was distributed when the model was trained.

Numeric features are cut at their training deciles; categorical features keep their level
frequencies. The predictor counts live traffic into the same bins (a Prometheus counter per bin), so
the population stability index of live vs. training data is one PromQL expression away, and the
offline drift check reads the same file. Stored as `reference.json` in the model artifact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churnflow.core.artifact import REFERENCE_FILE
from churnflow.core.contract import FeatureContract

DECILES = np.linspace(0.1, 0.9, 9)
MISSING_BIN = "missing"
UNSEEN_BIN = "unseen"


def numeric_bins(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """Bin index of each value: 0 below the first edge … len(edges) at or above the last."""
    return np.searchsorted(np.asarray(edges, dtype="float64"), values, side="right")


def build_reference(frame: pd.DataFrame, contract: FeatureContract) -> dict[str, Any]:
    """Decile edges and bin fractions of each numeric feature, level fractions of each categorical."""
    features: dict[str, Any] = {}
    rows = len(frame)
    for column in contract.numeric:
        values = frame[column].to_numpy(dtype="float64")
        values = np.where(np.isnan(values), contract.numeric_fill[column], values)
        edges = sorted(set(np.quantile(values, DECILES).round(10).tolist()))
        counts = np.bincount(numeric_bins(values, edges), minlength=len(edges) + 1)
        features[column] = {
            "kind": "numeric",
            "edges": edges,
            "bins": [str(i) for i in range(len(edges) + 1)],
            "fractions": (counts / rows).tolist(),
            "mean": float(values.mean()),
            "std": float(values.std()),
            "sample": np.random.default_rng(0).choice(values, min(rows, 2000), replace=False).tolist(),
        }
    for column, levels in contract.categorical.items():
        counts = frame[column].value_counts(dropna=False)
        fractions = [float(counts.get(level, 0)) / rows for level in levels]
        missing = float(frame[column].isna().sum()) / rows
        features[column] = {
            "kind": "categorical",
            "bins": [*levels, MISSING_BIN, UNSEEN_BIN],
            "fractions": [*fractions, missing, 0.0],
        }
    return {"rows": rows, "features": features}


def save_reference(reference: dict[str, Any], directory: str | Path) -> None:
    (Path(directory) / REFERENCE_FILE).write_text(json.dumps(reference) + "\n")


def load_reference(directory: str | Path) -> dict[str, Any] | None:
    path = Path(directory) / REFERENCE_FILE
    return json.loads(path.read_text()) if path.is_file() else None
