"""What /metrics exports beyond KServe's own `request_*_seconds` step histograms.

Names follow Prometheus conventions. The Flask baseline's (bench/baseline_app.py) `requests_total` and
`request_latency_seconds` are covered by `churnflow_requests_total` and
`churnflow_request_duration_seconds` (all HTTP requests, by protocol and status code).
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from churnflow.monitoring.reference import MISSING_BIN, UNSEEN_BIN

SMALL_BATCH = 16
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
PROBABILITY_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 10)) + (1.0,)

REQUESTS = Counter(
    "churnflow_requests",
    "HTTP requests answered, by protocol (v1, v2, compat, other) and status code.",
    ["protocol", "status"],
)
ERRORS = Counter("churnflow_request_errors", "HTTP requests answered with a 4xx or 5xx status.", ["protocol", "status"])
REQUEST_DURATION = Histogram(
    "churnflow_request_duration_seconds",
    "Time from request to response, by protocol.",
    ["protocol"],
    buckets=LATENCY_BUCKETS,
)
ROWS = Counter("churnflow_predicted_rows", "Rows (customers) scored.", ["model_name"])
PREDICTED_CLASS = Counter("churnflow_predictions", "Predicted class per scored row.", ["model_name", "churn"])
PROBABILITY = Histogram(
    "churnflow_churn_probability",
    "Predicted churn probability per row.",
    ["model_name"],
    buckets=PROBABILITY_BUCKETS,
)
UNSEEN = Counter(
    "churnflow_unseen_category", "Categorical values unseen in training (read as all-zero).", ["model_name", "feature"]
)
MISSING = Counter(
    "churnflow_missing_category", "Categorical fields absent or null (read as all-zero).", ["model_name", "feature"]
)
EXTRA = Counter("churnflow_extra_fields", "Request fields not in the feature contract (ignored).", ["model_name"])
FEATURE_BIN = Counter(
    "churnflow_feature_bin",
    "Scored rows per feature bin: training deciles for numeric features, levels for categorical ones.",
    ["model_name", "feature", "bin"],
)
REFERENCE_FRACTION = Gauge(
    "churnflow_feature_reference_ratio",
    "Fraction of training rows in each feature bin (the drift baseline for churnflow_feature_bin_total).",
    ["model_name", "feature", "bin"],
)
EVENT_LOOP_LAG = Gauge(
    "churnflow_event_loop_lag_seconds",
    "How late the worker's event loop wakes a 20 ms timer (queueing delay).",
    multiprocess_mode="max",
)
SHED = Counter("churnflow_shed_requests", "Inference requests answered 503 because the worker was overloaded.")
MODEL_INFO = Gauge(
    "churnflow_model_info",
    "The loaded model (value 1): version, SHA-256, training time and backend.",
    ["model_name", "model_version", "sha256", "trained_at", "backend"],
)
MODEL_LOADED = Gauge(
    "churnflow_model_loaded_timestamp_seconds", "When the serving model was loaded (Unix time).", ["model_name"]
)
# Drift results. The drift check (`churnflow drift`, the drift-check pipeline) computes them offline and
# writes them to drift.prom for a textfile collector or pushgateway (churnflow.monitoring.drift_report); they are
# declared here too so the serving scrape names every metric the alert rules and dashboard read.
FEATURE_DRIFT_PSI = Gauge(
    "churnflow_feature_drift_psi", "PSI of a feature's live distribution against training.", ["model_name", "feature"]
)
PREDICTION_DRIFT_PSI = Gauge(
    "churnflow_prediction_drift_psi", "PSI of served probabilities against the evaluation's.", ["model_name"]
)
PRECISION_DROP = Gauge(
    "churnflow_precision_drop_ratio",
    "Relative drop of live precision below the deployed model's evaluation precision (0.1 = 10% lower).",
    ["model_name"],
)


class ModelMetrics:
    """Per-model metric children resolved once, so the hot path does no label look-ups."""

    def __init__(self, model_name: str, numeric: list[str], reference: dict[str, Any] | None) -> None:
        self.name = model_name
        self.rows = ROWS.labels(model_name)
        self.classes = (PREDICTED_CLASS.labels(model_name, "0"), PREDICTED_CLASS.labels(model_name, "1"))
        self.probability = PROBABILITY.labels(model_name)
        self.extra = EXTRA.labels(model_name)
        features = (reference or {}).get("features", {})
        self.numeric_bins: list[tuple[int, np.ndarray, list[float], list[Any]]] = []
        """(column index, bin edges as an array for batches and as a list for bisect on a few rows, children)"""
        self.categorical_bins: list[tuple[str, dict[str, Any]]] = []
        for feature, spec in features.items():
            children = [FEATURE_BIN.labels(model_name, feature, b) for b in spec["bins"]]
            for bin_name, fraction in zip(spec["bins"], spec["fractions"], strict=True):
                REFERENCE_FRACTION.labels(model_name, feature, bin_name).set(fraction)
            if spec["kind"] == "numeric" and feature in numeric:
                edges = np.asarray(spec["edges"], dtype="float64")
                self.numeric_bins.append((numeric.index(feature), edges, edges.tolist(), children))
            elif spec["kind"] == "categorical":
                self.categorical_bins.append((feature, dict(zip(spec["bins"], children, strict=True))))

    def set_model_info(self, version: str, sha256: str, trained_at: str, backend: str, loaded_at: float) -> None:
        MODEL_INFO.clear()
        MODEL_INFO.labels(self.name, version, sha256, trained_at, backend).set(1)
        MODEL_LOADED.labels(self.name).set(loaded_at)

    def observe(self, probability: np.ndarray, churn: np.ndarray, aligned: Any) -> None:
        """Counts one scored batch: rows, classes, probabilities, alignment notes and drift bins."""
        rows = len(probability)
        self.rows.inc(rows)
        positives = int(churn.sum())
        if positives:
            self.classes[1].inc(positives)
        if rows - positives:
            self.classes[0].inc(rows - positives)
        for value in probability.tolist():
            self.probability.observe(value)
        if aligned.extra_fields:
            self.extra.inc(aligned.extra_fields)
        for feature, count in aligned.unseen.items():
            UNSEEN.labels(self.name, feature).inc(count)
        for feature, count in aligned.missing.items():
            MISSING.labels(self.name, feature).inc(count)
        if rows <= SMALL_BATCH:  # a request's few rows: plain bisect beats numpy's per-call overhead
            matrix = aligned.features.tolist()
            for column, _, edge_list, children in self.numeric_bins:
                for row in matrix:
                    children[bisect_right(edge_list, row[column])].inc()
        else:
            for column, edges, _, children in self.numeric_bins:
                counts = np.bincount(
                    np.searchsorted(edges, aligned.features[:, column], side="right"), minlength=len(children)
                )
                for child, count in zip(children, counts.tolist(), strict=False):
                    if count:
                        child.inc(count)
        for feature, children in self.categorical_bins:
            unseen = children[UNSEEN_BIN]
            for level in aligned.levels.get(feature, ()):
                children.get(MISSING_BIN if level is None else level, unseen).inc()
