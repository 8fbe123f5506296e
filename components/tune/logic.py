"""Tuning: score RandomForest candidates by stratified k-fold CV on the training split, pick the best.

The pipeline fans the candidates out (one KFP task each, dsl.ParallelFor), so on a cluster they run on
as many pods at once; locally they run one after another. Backends older than KFP 2.14 cannot collect
a loop's outputs, so for them one task scores every candidate in its own pod (`tune_in_one_task`) with
the same cross_validate and select_best. The test split is never read here.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import average_precision_score, brier_score_loss, f1_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold

from churnflow.components.preprocess.logic import TRAIN_FILE
from churnflow.contract import FeatureContract
from churnflow.data import read_split
from churnflow.errors import ChurnflowError
from churnflow.hyperparameters import ForestParams, forest_params

DEFAULT_GRID = {"min_samples_leaf": [1, 5, 20], "max_features": ["sqrt", "0.5"]}
TUNABLE = ("n_estimators", "max_depth", "min_samples_leaf", "max_features", "class_weight")
MAX_CANDIDATES = 64
# Scores where higher is better; brier is negated so that "best" is always the maximum.
METRICS = {
    "roc_auc": lambda y, p: roc_auc_score(y, p),
    "average_precision": lambda y, p: average_precision_score(y, p),
    "f1": lambda y, p: f1_score(y, p > 0.5),
    "neg_brier": lambda y, p: -brier_score_loss(y, p),
}


def parse_grid(text: str) -> dict[str, list[Any]]:
    """The search grid: a JSON object of parameter → list of values ("" means the default grid)."""
    if not text.strip():
        return DEFAULT_GRID
    try:
        grid = json.loads(text)
    except ValueError as error:
        raise ChurnflowError(f"tuning_grid: not valid JSON ({error})") from None
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise ChurnflowError("tuning_grid: expected a JSON object of parameter name → non-empty list of values")
    unknown = sorted(set(grid) - set(TUNABLE))
    if unknown:
        raise ChurnflowError(f"tuning_grid: unknown parameter(s) {unknown} (tunable: {', '.join(TUNABLE)})")
    return grid


def candidates(base: ForestParams, tune: bool, grid_text: str) -> list[dict[str, Any]]:
    """Every combination of the grid over the base settings; just the base settings when not tuning."""
    if not tune:
        return [base.model_dump()]
    grid = parse_grid(grid_text)
    names = sorted(grid)
    combos = list(itertools.product(*(grid[n] for n in names)))
    if len(combos) > MAX_CANDIDATES:
        raise ChurnflowError(f"tuning_grid: {len(combos)} candidates exceed the limit of {MAX_CANDIDATES}")
    result = []
    for combo in combos:
        values = {**base.model_dump(), **dict(zip(names, combo, strict=True))}
        values["max_features"] = str(values["max_features"])
        result.append(forest_params(**values).model_dump())
    return result


def cross_validate(
    train_dir: str | Path,
    contract_dir: str | Path,
    candidate: dict[str, Any],
    folds: int = 5,
    metric: str = "roc_auc",
    seed: int = 42,
) -> dict[str, Any]:
    """Stratified k-fold score of one candidate on the training split."""
    if metric not in METRICS:
        raise ChurnflowError(f"tuning_metric: expected one of {', '.join(METRICS)}, got {metric!r}")
    params = forest_params(**candidate)
    contract = FeatureContract.load(contract_dir)
    frame = read_split(Path(train_dir) / TRAIN_FILE, contract.numeric, list(contract.categorical))
    features = contract.encode_frame(frame)
    target = frame[contract.target].to_numpy(dtype="int64")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    started = time.perf_counter()
    scores = []
    for fit_rows, held_rows in splitter.split(features, target):
        model = RandomForestClassifier(**params.sklearn_kwargs(), n_jobs=-1).fit(features[fit_rows], target[fit_rows])
        scores.append(float(METRICS[metric](target[held_rows], model.predict_proba(features[held_rows])[:, 1])))
    return {
        "params": params.model_dump(),
        "metric": metric,
        "score": float(np.mean(scores)),
        "std": float(np.std(scores)),
        "fold_scores": scores,
        "seconds": round(time.perf_counter() - started, 3),
    }


def select_best(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The best candidate by mean CV score (ties: the first listed, i.e. the simplest grid point)."""
    if not results:
        raise ChurnflowError("tuning: no candidate was scored")
    ranked = sorted(results, key=lambda r: -r["score"])
    return {
        "best": ranked[0]["params"],
        "metric": ranked[0]["metric"],
        "best_score": ranked[0]["score"],
        "candidates": results,
    }


def tune_in_one_task(
    train_dir: str | Path,
    contract_dir: str | Path,
    candidate_list: list[dict[str, Any]],
    folds: int = 5,
    metric: str = "roc_auc",
    seed: int = 42,
) -> dict[str, Any]:
    """Cross-validates every candidate one after another and picks the best: the fan-out and the
    fan-in in one pod, for backends that cannot collect a ParallelFor's outputs."""
    results = [
        cross_validate(train_dir, contract_dir, candidate, folds=folds, metric=metric, seed=seed)
        for candidate in candidate_list
    ]
    return select_best(results)
