"""Evaluate: score the candidate on the held-out split and decide whether it may be deployed.

The candidate is read as a ReleasedModel (churnflow/core/released_model.py), the object serving and
`churnflow score` answer with: the same digest check, the same scorer (the compiled forest when there
is one), calibrator and threshold rule, so the probabilities gated on here are the ones served.

The gate has two parts: absolute floors (minimum ROC-AUC, F1, ...) and, when the metrics of the model
now in production are given, champion/challenger: the candidate may not be worse than the champion by
more than `max_regression` on the gate metric.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    classification_report,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from churnflow.components.evaluate.gate import Gate
from churnflow.components.preprocess.outputs import TEST_FILE
from churnflow.core.contract import FeatureContract
from churnflow.core.data import read_split
from churnflow.core.encoding import encode_contract_frame
from churnflow.core.errors import ChurnflowError
from churnflow.core.explain import fold_to_inputs, path_contributions
from churnflow.core.released_model import ReleasedModel
from churnflow.core.threshold import churn_flags
from churnflow.evaluation.model_card import bootstrap_intervals, gains_curve, resamples_for, top_decile_lift
from churnflow.monitoring.drift import probability_reference

REPORT_FILE = "evaluation.json"
GATE_METRICS = ("roc_auc", "accuracy", "precision", "recall", "f1")
ROC_POINTS = 50


def holdout_metrics(target: np.ndarray, probability: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """All evaluation metrics for churn probabilities against 0/1 outcomes."""
    predicted = churn_flags(probability, threshold)  # the served rule: churn only above the threshold
    fpr, tpr, thresholds = roc_curve(target, probability)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(ROC_POINTS, len(fpr))).round().astype(int))
    precision_points, recall_points, _ = precision_recall_curve(target, probability)
    return {
        "roc_auc": float(roc_auc_score(target, probability)),
        "pr_auc": float(average_precision_score(target, probability)),
        "lift_top_decile": top_decile_lift(target, probability),
        "accuracy": float(accuracy_score(target, predicted)),
        "precision": float(precision_score(target, predicted, zero_division=0)),
        "recall": float(recall_score(target, predicted, zero_division=0)),
        "f1": float(f1_score(target, predicted, zero_division=0)),
        "brier": float(brier_score_loss(target, probability)),
        "threshold": threshold,
        "rows": len(target),
        "calibration_curve": reliability(target, probability),
        "positive_rate": float(np.mean(target)),
        "confusion_matrix": confusion_matrix(target, predicted, labels=[0, 1]).tolist(),
        "roc_curve": {
            "fpr": fpr[keep].tolist(),
            "tpr": tpr[keep].tolist(),
            "thresholds": np.minimum(thresholds[keep], 1.0).tolist(),
        },
        "pr_curve": {"precision": precision_points.tolist(), "recall": recall_points.tolist()},
        "gains_curve": gains_curve(target, probability),
        "classification_report": classification_report(
            target,
            predicted,
            labels=[0, 1],
            target_names=["retained", "churned"],
            output_dict=True,
            zero_division=0,
        ),
    }


def reliability(target: np.ndarray, probability: np.ndarray, bins: int = 10) -> dict[str, list[float]]:
    """Observed churn rate against mean predicted probability per probability bin (quantile bins)."""
    observed, predicted = calibration_curve(target, probability, n_bins=bins, strategy="quantile")
    return {"mean_predicted": predicted.tolist(), "observed_rate": observed.tolist()}


def reliability_png(curve: dict[str, list[float]], brier: float, path: str | Path) -> None:
    """Draws the reliability curve (the evaluate step's PNG artifact) on a bare Figure, which renders
    to PNG through Agg by itself: pyplot (its backend and figure manager) is a tenth of a second more
    import for a task that never shows a window."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.5, 4.5), dpi=100)
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    axes.plot(curve["mean_predicted"], curve["observed_rate"], marker="o", label="model")
    axes.set(
        xlabel="predicted churn probability",
        ylabel="observed churn rate",
        xlim=(0, 1),
        ylim=(0, 1),
        title=f"Reliability on the test split (Brier {brier:.3f})",
    )
    axes.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, format="png")


def decide(metrics: dict[str, Any], gate: Gate, champion: dict[str, Any] | None) -> tuple[bool, list[str]]:
    """Applies the floors and the champion comparison; returns (deploy, reasons it was refused)."""
    reasons = []
    floors = (("roc_auc", gate.min_roc_auc), ("f1", gate.min_f1), ("precision", gate.min_precision))
    for name, floor in floors:
        if metrics[name] < floor:
            reasons.append(f"{name} {metrics[name]:.4f} is below the floor {floor:.4f}")
    if metrics["brier"] > gate.max_brier:
        reasons.append(f"brier {metrics['brier']:.4f} is above the ceiling {gate.max_brier:.4f}")
    if champion:
        name = gate.compare_metric
        if name not in champion:
            raise ChurnflowError(f"champion metrics: no {name!r} to compare against (has {sorted(champion)})")
        if metrics[name] < float(champion[name]) - gate.max_regression:
            reasons.append(
                f"{name} {metrics[name]:.4f} is worse than the production model's {float(champion[name]):.4f}"
            )
    return not reasons, reasons


def parse_champion(text: str) -> dict[str, Any] | None:
    """Champion metrics arrive as a JSON string parameter ("" when there is no production model)."""
    if not text.strip():
        return None
    try:
        data = json.loads(text)
    except ValueError as error:
        raise ChurnflowError(f"champion_metrics: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise ChurnflowError("champion_metrics: expected a JSON object of metric names to values")
    return data.get("metrics", data)


class SplitScores(NamedTuple):
    """The test split as the released model scores it."""

    target: np.ndarray
    features: np.ndarray
    """the model matrix (the contract's encoding)"""
    raw: np.ndarray
    """the scorer's probability before calibration"""
    probability: np.ndarray
    """the served probability: scorer, then calibrator"""


def score_split(model: ReleasedModel, test_dir: str | Path) -> SplitScores:
    """Scores the held-out split through the released model's own scorer and calibrator, the ones
    serving and `churnflow score` use, so the gated probabilities are the served ones."""
    contract = model.contract
    frame = read_split(Path(test_dir) / TEST_FILE, contract.numeric, list(contract.categorical))
    features = encode_contract_frame(contract, frame)
    raw = model.raw_probability(features)
    return SplitScores(
        target=frame[contract.target].to_numpy(dtype="int64"),
        features=features,
        raw=raw,
        probability=model.calibrator.apply(raw),
    )


def evaluate(model_dir: str | Path, test_dir: str | Path, gate: Gate, champion_metrics: str = "") -> dict[str, Any]:
    """Scores the model on the test split and returns the full report (also what evaluation.json holds)."""
    model = ReleasedModel.load(model_dir)
    contract = model.contract
    split = score_split(model, test_dir)
    target, features, raw, probability = split.target, split.features, split.raw, split.probability
    metrics = holdout_metrics(target, probability, threshold=contract.threshold)
    metrics["brier_uncalibrated"] = float(brier_score_loss(target, raw))
    champion = parse_champion(champion_metrics)
    deploy, reasons = decide(metrics, gate, champion)
    return {
        "metrics": metrics,
        "intervals": bootstrap_intervals(target, probability, contract.threshold, resamples_for(len(target))),
        "resamples": resamples_for(len(target)),
        "importance": feature_importance(model.scorer.sklearn, contract, features),
        "gate": gate.model_dump(),
        "champion": champion,
        "deploy": deploy,
        "reasons": reasons,
        # the served-probability distribution on the test split: the drift check's prediction baseline
        "probability_reference": probability_reference(probability),
    }


def feature_importance(model: Any, contract: FeatureContract, features: np.ndarray) -> list[tuple[str, float]]:
    """Each input column's mean absolute contribution over the test rows (a model matrix), largest first.

    The same decision-path decomposition the predictor's :explain answers with, so the card's global
    ranking and a single customer's reasons are measured in the same units."""
    _, contributions = path_contributions(model, features)
    columns, folded = fold_to_inputs(contract, contributions)
    importance = np.abs(folded).mean(axis=0)
    return sorted(((c, float(v)) for c, v in zip(columns, importance, strict=True)), key=lambda p: -p[1])
