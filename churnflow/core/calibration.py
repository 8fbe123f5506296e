"""Calibration: how a forest's raw probability becomes a probability a campaign can budget with.

Calibration and the decision threshold (churnflow/core/threshold.py) are chosen at training time on
out-of-fold predictions of the training split (the test split stays untouched until evaluate) and travel
inside the model artifact as plain JSON, never pickles: `calibration.json` (an isotonic step function or
Platt's sigmoid) and the contract's `threshold`. The predictor applies the very same functions after
either scoring backend, so the compiled fast path and scikit-learn serve identical answers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from churnflow.core.errors import ChurnflowError

CALIBRATION_FILE = "calibration.json"
CALIBRATION_MODES = ("auto", "none", "isotonic", "sigmoid")


@dataclass(frozen=True)
class Calibrator:
    """A monotone map from raw forest probability to calibrated probability."""

    method: str
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    a: float = 0.0
    b: float = 0.0

    def apply(self, probability: np.ndarray) -> np.ndarray:
        if self.method == "isotonic":
            return np.interp(probability, self.x, self.y)
        if self.method == "sigmoid":
            return 1.0 / (1.0 + np.exp(-(self.a * probability + self.b)))
        return probability

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "x": list(self.x), "y": list(self.y), "a": self.a, "b": self.b}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibrator:
        return cls(
            data["method"], tuple(data.get("x", ())), tuple(data.get("y", ())), data.get("a", 0.0), data.get("b", 0.0)
        )


IDENTITY = Calibrator("none")


def fit_calibrator(method: str, probability: np.ndarray, target: np.ndarray) -> Calibrator:
    """Fits an isotonic or sigmoid map of raw probabilities to outcomes.

    scikit-learn is imported here, not at the top: applying a calibrator is numpy alone, and loading
    a released model (serving, `churnflow score`) should not pay a second of scikit-learn imports."""
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    if method == "isotonic":
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(probability, target)
        return Calibrator("isotonic", tuple(iso.X_thresholds_.tolist()), tuple(iso.y_thresholds_.tolist()))
    if method == "sigmoid":
        logistic = LogisticRegression(C=1e6).fit(probability.reshape(-1, 1), target)
        return Calibrator("sigmoid", a=float(logistic.coef_[0, 0]), b=float(logistic.intercept_[0]))
    return IDENTITY


def choose_calibration(mode: str, oof: np.ndarray, target: np.ndarray, seed: int) -> tuple[Calibrator, dict]:
    """Picks the calibration for `mode` ("auto" keeps isotonic only if it lowers out-of-fold Brier).

    The comparison is itself cross-validated: each fold's calibrator is fitted on the other folds'
    out-of-fold probabilities, so the Brier score it is judged by is held out twice over.
    """
    if mode not in CALIBRATION_MODES:
        raise ChurnflowError(f"calibration: expected one of {', '.join(CALIBRATION_MODES)}, got {mode!r}")
    from sklearn.metrics import brier_score_loss
    from sklearn.model_selection import StratifiedKFold

    raw_brier = float(brier_score_loss(target, oof))
    report: dict[str, Any] = {"mode": mode, "raw_brier_oof": raw_brier}
    if mode == "none":
        return IDENTITY, {**report, "method": "none"}
    candidates = ["isotonic", "sigmoid"] if mode == "auto" else [mode]
    best, best_brier = "none", raw_brier
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    for method in candidates:
        calibrated = np.empty_like(oof)
        for fit_rows, held_rows in folds.split(oof, target):
            calibrated[held_rows] = fit_calibrator(method, oof[fit_rows], target[fit_rows]).apply(oof[held_rows])
        brier = float(brier_score_loss(target, calibrated))
        report[f"{method}_brier_oof"] = brier
        if mode != "auto" or brier < best_brier:
            best, best_brier = method, brier
    report["method"] = best
    return fit_calibrator(best, oof, target), report


def save_calibrator(calibrator: Calibrator, directory: str | Path) -> None:
    (Path(directory) / CALIBRATION_FILE).write_text(json.dumps(calibrator.to_json()) + "\n")


def load_calibrator(directory: str | Path) -> Calibrator:
    path = Path(directory) / CALIBRATION_FILE
    return Calibrator.from_json(json.loads(path.read_text())) if path.is_file() else IDENTITY
