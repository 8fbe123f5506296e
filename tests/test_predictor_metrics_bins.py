"""The drift-bin counters count each row in the bin of its own column's value, on both paths of
ModelMetrics.observe: bisect over a request's few rows, and numpy over a batch."""

from __future__ import annotations

import numpy as np
from prometheus_client import REGISTRY

from churnflow.monitoring.reference import MISSING_BIN, UNSEEN_BIN
from churnflow.predictor.metrics import SMALL_BATCH, ModelMetrics
from churnflow.predictor.request_decoding import Aligned

EDGES = {"tenure": [6.0, 12.0, 24.0], "usage": [10.0, 50.0, 90.0]}


def reference() -> dict:
    features = {
        name: {
            "kind": "numeric",
            "edges": edges,
            "bins": [str(i) for i in range(len(edges) + 1)],
            "fractions": [0.25] * 4,
        }
        for name, edges in EDGES.items()
    }
    features["plan"] = {"kind": "categorical", "bins": ["a", MISSING_BIN, UNSEEN_BIN], "fractions": [0.5, 0.25, 0.25]}
    return {"features": features}


def bin_counts(model_name: str) -> dict[tuple[str, str], float]:
    counts = {}
    for feature, edges in EDGES.items():
        for b in range(len(edges) + 1):
            value = REGISTRY.get_sample_value(
                "churnflow_feature_bin_total", {"model_name": model_name, "feature": feature, "bin": str(b)}
            )
            counts[(feature, str(b))] = value or 0.0
    return counts


def expected_counts(features: np.ndarray) -> dict[tuple[str, str], float]:
    counts = {}
    for column, (feature, edges) in enumerate(EDGES.items()):
        found = np.searchsorted(edges, features[:, column], side="right")
        for b in range(len(edges) + 1):
            counts[(feature, str(b))] = float(np.count_nonzero(found == b))
    return counts


def test_numeric_bins_count_each_column_on_small_and_large_batches():
    rng = np.random.default_rng(7)
    for rows, name in ((3, "bins-small"), (SMALL_BATCH + 5, "bins-large")):
        # tenure and usage on different scales, so a row binned by the wrong column lands elsewhere
        features = np.column_stack([rng.uniform(0, 30, rows), rng.uniform(0, 100, rows), np.ones(rows)])
        metrics = ModelMetrics(name, ["tenure", "usage"], reference())
        aligned = Aligned(features=features, levels={"plan": ["a"] * rows})
        metrics.observe(np.full(rows, 0.3), np.zeros(rows, dtype=np.int64), aligned)
        assert bin_counts(name) == expected_counts(features), rows
