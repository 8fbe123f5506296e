"""Train: fit the chosen model (random forest or gradient-boosted trees) on the training split and write
the model artifact directory."""

from __future__ import annotations

import json
import platform
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn
from sklearn.model_selection import StratifiedKFold, cross_val_predict

import churnflow
from churnflow.components.deploy.labels import run_name
from churnflow.components.preprocess.outputs import DATA_SUMMARY_FILE, TRAIN_FILE
from churnflow.components.train.compile_forest import TOLERANCE, compile_model, compiled_max_difference, tree_nodes
from churnflow.core.artifact import MODEL_FILE, ONNX_FILE, write_metadata
from churnflow.core.calibration import IDENTITY, choose_calibration, save_calibrator
from churnflow.core.contract import FeatureContract
from churnflow.core.data import read_split
from churnflow.core.encoding import encode_contract_frame
from churnflow.core.hyperparameters import (
    ONE_THREAD_FOREST_ROWS,
    ModelParams,
    build_estimator,
    fit_threads,
    forest_jobs,
)
from churnflow.core.threshold import choose_threshold
from churnflow.core.workers import process_pool, side_by_side
from churnflow.monitoring.reference import build_reference, save_reference

COMPILE_CHECK_ROWS = 2000


def fit_model(features: np.ndarray, target: np.ndarray, params: ModelParams) -> Any:
    """Fits on all cores; a forest then gets n_jobs reset, since one request's predict_proba is fastest
    single-threaded."""
    model = build_estimator(params, n_jobs=forest_jobs(len(features)))
    with fit_threads(params, len(features)):
        model.fit(features, target)
    if hasattr(model, "n_jobs"):
        model.n_jobs = None
    return model


def library_versions() -> dict[str, str]:
    import onnxruntime
    import pandas

    return {
        "python": platform.python_version(),
        "churnflow": churnflow.__version__,
        "scikit-learn": sklearn.__version__,
        "pandas": pandas.__version__,
        "numpy": np.__version__,
        "joblib": joblib.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


WORKER_PRELOAD = [__name__]
"""What the worker processes import before they fork (churnflow/core/workers.py)."""


def out_of_fold_probability(
    features: np.ndarray, target: np.ndarray, params: ModelParams, seed: int, pool: Any = None
) -> np.ndarray:
    """Churn probabilities for every training row from models that did not see it (5-fold, stratified),
    the folds side by side in `pool`'s processes when there is one (the same fits, so the same numbers)."""
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    if pool is None:
        model = build_estimator(params, n_jobs=forest_jobs(len(features)))
        with fit_threads(params, len(features)):
            return cross_val_predict(model, features, target, cv=folds, method="predict_proba")[:, 1]
    splits = list(folds.split(features, target))
    jobs = [(features[fit], target[fit], features[held], params) for fit, held in splits]
    probability = np.empty(len(target))
    for (_, held), part in zip(splits, pool.map(_fold_probability, jobs), strict=True):
        probability[held] = part
    return probability


def _fold_probability(job: tuple[np.ndarray, np.ndarray, np.ndarray, ModelParams]) -> np.ndarray:
    """One fold of out_of_fold_probability in a worker: fit on the fold's rows, score the held-out ones."""
    features, target, held, params = job
    return fit_model(features, target, params).predict_proba(held)[:, 1]


def _timed_fit(job: tuple[np.ndarray, np.ndarray, ModelParams]) -> tuple[Any, float]:
    """fit_model and its seconds, in a worker."""
    started = time.perf_counter()
    model = fit_model(*job)
    return model, time.perf_counter() - started


def train(
    train_dir: str | Path,
    contract_dir: str | Path,
    model_dir: str | Path,
    params: ModelParams,
    pipeline_run: str = "",
    calibration: str = "none",
    threshold_goal: str = "0.5",
    tuning: dict[str, Any] | None = None,
    seed: int = 42,
    workers: int | None = None,
) -> dict[str, Any]:
    """Fits the model, chooses calibration and threshold, compiles it, and writes the artifact.

    With calibration "none" and a fixed threshold this is the baseline script's forest exactly (100 trees,
    random_state 42: bench/baseline_train.py)
    (seed-exact mode); otherwise both are chosen on out-of-fold predictions of the training split.

    On a small table (under ONE_THREAD_FOREST_ROWS, where each fit runs on one thread) the final fit
    and the five out-of-fold fits run side by side in `workers` processes (default: one per core),
    as tune's candidates do; the fits are the same, so the artifact is too."""
    contract = FeatureContract.load(contract_dir)
    frame = read_split(Path(train_dir) / TRAIN_FILE, contract.numeric, list(contract.categorical))
    features = encode_contract_frame(contract, frame)
    target = frame[contract.target].to_numpy(dtype="int64")

    out_of_fold = not (calibration == "none" and _is_fixed(threshold_goal))
    if workers is None:
        workers = side_by_side(len(features), ONE_THREAD_FOREST_ROWS) if out_of_fold else 1
    with process_pool(workers, WORKER_PRELOAD) as pool:
        if pool is None:
            started = time.perf_counter()
            model = fit_model(features, target, params)
            fit_seconds = time.perf_counter() - started
        else:
            final = pool.submit(_timed_fit, (features, target, params))

        calibrator, calibration_report = IDENTITY, {"mode": calibration, "method": "none"}
        if not out_of_fold:
            threshold, threshold_report = choose_threshold(threshold_goal, np.empty(0), np.empty(0))
        else:
            rows = calibration_rows(tuning, len(features))
            oof = out_of_fold_probability(features[:rows], target[:rows], params, seed, pool)
            calibrator, calibration_report = choose_calibration(calibration, oof, target[:rows], seed)
            threshold, threshold_report = choose_threshold(threshold_goal, calibrator.apply(oof), target[:rows])
            calibration_report["rows"] = rows
        if pool is not None:
            model, fit_seconds = final.result()
    contract = contract.model_copy(update={"threshold": threshold})

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, model_dir / MODEL_FILE)
    contract.save(model_dir)
    save_calibrator(calibrator, model_dir)
    save_reference(build_reference(frame, contract), model_dir)

    compiled = compile_model(model, len(contract.feature_columns))
    compiled_info: dict[str, Any] = {"format": None}
    if compiled is not None:
        sample = features[np.random.default_rng(0).permutation(len(features))[:COMPILE_CHECK_ROWS]]
        difference = compiled_max_difference(compiled, model, sample)
        compiled_info = {"format": "onnx", "max_abs_difference": difference, "checked_rows": len(sample)}
        if difference <= TOLERANCE:
            (model_dir / ONNX_FILE).write_bytes(compiled)
        else:
            compiled_info["format"] = None
            compiled_info["rejected"] = f"differs from scikit-learn by {difference:.2e} > {TOLERANCE}"

    data_summary = json.loads((Path(contract_dir) / DATA_SUMMARY_FILE).read_text())
    trained_at = datetime.now(UTC).replace(microsecond=0)
    metadata = {
        "model_version": f"{trained_at:%Y%m%d%H%M%S}-{uuid.uuid4().hex[:6]}",
        "trained_at": trained_at.isoformat(),
        "pipeline_run": run_name(pipeline_run),
        "algorithm": type(model).__name__,
        "family": params.family,
        "hyperparameters": params.model_dump(),
        "tuning": tuning,
        "calibration": calibration_report,
        "threshold": threshold_report,
        "data": data_summary,
        "fit_seconds": round(fit_seconds, 3),
        "tree_nodes": tree_nodes(model),
        "compiled": compiled_info,
        "versions": library_versions(),
    }
    return write_metadata(model_dir, metadata)


def calibration_rows(tuning: dict[str, Any] | None, rows: int) -> int:
    """Rows whose out-of-fold predictions choose the calibration and the threshold.

    All of them, unless tuning ran successive halving: then the rows of its last rung (a prefix of
    the shuffled split, a random sample), where the chosen settings were scored. Five more fits on
    every row of a large table would cost five times the final fit to refine a curve that a sample of
    tens of thousands of rows already pins down."""
    search = (tuning or {}).get("halving") or {}
    return min(rows, int(search.get("tuning_rows", rows)))


def _is_fixed(goal: str) -> bool:
    try:
        float(goal)
    except ValueError:
        return False
    return True
