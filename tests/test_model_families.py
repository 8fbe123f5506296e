"""Issue 16: the model family is a tuning dimension, chosen by a noise-aware rule, and both families keep
every guarantee the forest has: ONNX equal to scikit-learn, exact explanations, the same artifact."""

from __future__ import annotations

import json
import os
import re

import joblib
import numpy as np
import pytest

from churnflow.components.preprocess.logic import TEST_FILE, preprocess
from churnflow.components.train.logic import train
from churnflow.components.tune.logic import DEFAULT_GRID, candidates, cross_validate, parse_grid
from churnflow.components.tune.selection import REPEATS, select_best
from churnflow.core.config import load_config
from churnflow.core.contract import FeatureContract
from churnflow.core.data import read_split
from churnflow.core.encoding import encode_contract_frame
from churnflow.core.errors import ChurnflowError
from churnflow.core.explain import explain_rows, log_odds_contributions, path_contributions
from churnflow.core.hyperparameters import BoostingParams, ForestParams, model_params
from churnflow.core.scorer import Scorer


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    preprocess("", load_config(None), root / "train", root / "test", root / "contract", synthetic_rows=3000, seed=5)
    return root


@pytest.fixture(scope="module")
def boosted(splits, tmp_path_factory):
    """A calibrated gradient-boosted model artifact and its test matrix."""
    model_dir = tmp_path_factory.mktemp("boosted") / "model"
    metadata = train(
        splits / "train",
        splits / "contract",
        model_dir,
        BoostingParams(max_iter=60, max_leaf_nodes=15),
        calibration="sigmoid",
        threshold_goal="f1",
    )
    contract = FeatureContract.load(model_dir)
    frame = read_split(splits / "test" / TEST_FILE, contract.numeric, list(contract.categorical))
    return model_dir, metadata, encode_contract_frame(contract, frame)


def test_the_default_grid_tries_both_families_simplest_first():
    listed = candidates(ForestParams(), True, "")
    families = [c["family"] for c in listed]
    assert families == ["random_forest"] * 6 + ["hist_gradient_boosting"] * 4
    # each family's own defaults come first: the one-standard-error rule prefers them
    assert listed[0] == ForestParams().model_dump()
    assert listed[6] == BoostingParams().model_dump()
    assert set(DEFAULT_GRID) == {"random_forest", "hist_gradient_boosting"}


def test_grids_per_family_and_the_plain_forest_grid():
    assert set(parse_grid('{"min_samples_leaf": [1, 5]}')) == {"random_forest"}
    only_boosting = candidates(ForestParams(), True, '{"hist_gradient_boosting": {"l2_regularization": [0, 1]}}')
    assert [c["l2_regularization"] for c in only_boosting] == [0.0, 1.0]
    assert {c["family"] for c in only_boosting} == {"hist_gradient_boosting"}
    defaults_only = candidates(ForestParams(), True, '{"random_forest": {}, "hist_gradient_boosting": {}}')
    assert defaults_only == [ForestParams().model_dump(), BoostingParams().model_dump()]


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ('{"xgboost": {}}', "tuning_grid: unknown model family ['xgboost']"),
        ('{"hist_gradient_boosting": {"n_estimators": [10]}}', "tuning_grid.hist_gradient_boosting: unknown parameter"),
        ('{"hist_gradient_boosting": {"learning_rate": [0]}}', "hyperparameter learning_rate"),
        ('{"hist_gradient_boosting": {"early_stopping": ["maybe"]}}', "hyperparameter early_stopping"),
    ],
)
def test_bad_family_grids_are_one_line_errors(grid, message):
    with pytest.raises(ChurnflowError, match=re.escape(message)):
        candidates(ForestParams(), True, grid)


def test_model_params_names_an_unknown_family():
    with pytest.raises(ChurnflowError, match="hyperparameter family: expected one of"):
        model_params(family="svm")
    assert isinstance(model_params(**BoostingParams().model_dump()), BoostingParams)
    assert isinstance(model_params(n_estimators=5), ForestParams)


def _result(params: dict, scores: list[float]) -> dict:
    from churnflow.components.tune.selection import standard_error

    return {
        "params": params,
        "metric": "roc_auc",
        "score": float(np.mean(scores)),
        "standard_error": standard_error(scores),
        "fold_scores": scores,
    }


def test_selection_prefers_the_simpler_candidate_within_one_standard_error():
    simple = _result({"n": 1}, [0.80, 0.84, 0.82, 0.86, 0.78])
    # +0.0024 on average, but ahead on some folds and behind on others: noise
    tuned = _result({"n": 2}, [0.83, 0.83, 0.80, 0.865, 0.787])
    chosen = select_best([simple, tuned])
    assert chosen["best"] == {"n": 1} and chosen["highest_params"] == {"n": 2}
    differences = np.subtract(simple["fold_scores"], tuned["fold_scores"])
    corrected = np.std(differences, ddof=1) * np.sqrt(1 / 5 + 1 / 4)  # Nadeau-Bengio, 5 folds
    assert chosen["tolerance"] == pytest.approx(corrected)
    assert chosen["candidates"][0]["paired_difference"] == pytest.approx(differences.mean())


def test_pairing_takes_a_candidate_that_wins_on_every_fold_by_less_than_the_spread_between_folds():
    # The case: both scored on the same folds, the folds differ a lot, boosting wins on each.
    simple = _result({"n": 1}, [0.80, 0.90, 0.85, 0.75, 0.95])
    boosted = _result({"n": 2}, [0.821, 0.919, 0.870, 0.772, 0.968])  # +0.018 to +0.022, every fold
    # one standard error of the best's own folds (0.035) would keep the simpler candidate ...
    assert simple["score"] >= boosted["score"] - boosted["standard_error"]
    # ... the paired differences (0.020 ± 0.001) do not
    chosen = select_best([simple, boosted])
    assert chosen["best"] == {"n": 2} and chosen["tolerance"] == 0.0
    assert chosen["candidates"][0]["paired_difference"] == pytest.approx(-0.02)
    assert chosen["candidates"][0]["paired_standard_error"] < 0.002


def test_pairing_keeps_the_simpler_candidate_when_the_differences_are_noise():
    # The best's own folds agree closely (the unpaired rule would take it), but it beats the
    # simpler candidate on some folds and loses on others.
    simple = _result({"n": 1}, [0.86, 0.80, 0.85, 0.79, 0.84])
    tuned = _result({"n": 2}, [0.831, 0.834, 0.832, 0.833, 0.835])
    assert simple["score"] < tuned["score"] - tuned["standard_error"]
    assert select_best([simple, tuned])["best"] == {"n": 1}


def test_candidates_not_scored_on_the_same_folds_fall_back_to_the_unpaired_rule():
    simple = {**_result({"n": 1}, [0.80, 0.81, 0.80]), "rows": 100}
    other = {**_result({"n": 2}, [0.85, 0.86, 0.85]), "rows": 300}
    chosen = select_best([simple, other])
    assert chosen["best"] == {"n": 2} and chosen["candidates"][0]["paired_difference"] is None


def test_selection_takes_a_candidate_better_by_more_than_the_noise():
    simple = _result({"n": 1}, [0.80, 0.81, 0.80, 0.81, 0.80])
    better = _result({"n": 2}, [0.85, 0.86, 0.85, 0.86, 0.85])
    assert select_best([simple, better])["best"] == {"n": 2}


def test_cross_validation_records_the_spread_of_each_family(splits):
    for params in (ForestParams(n_estimators=20), BoostingParams(max_iter=30)):
        result = cross_validate(splits / "train", splits / "contract", params.model_dump(), folds=3)
        assert len(result["fold_scores"]) == 3 * REPEATS  # a small table: repeated CV
        assert result["folds"] == 3 and result["repeats"] == REPEATS
        assert result["std"] == pytest.approx(np.std(result["fold_scores"], ddof=1))
        assert result["standard_error"] == pytest.approx(result["std"] / np.sqrt(3 * REPEATS))
        assert result["params"]["family"] == params.family


def test_boosted_model_is_compiled_and_served_equal_to_scikit_learn(boosted):
    model_dir, metadata, features = boosted
    assert metadata["family"] == "hist_gradient_boosting"
    assert metadata["algorithm"] == "HistGradientBoostingClassifier"
    assert metadata["compiled"]["format"] == "onnx" and metadata["compiled"]["max_abs_difference"] <= 1e-12
    model = joblib.load(model_dir / "model.joblib")
    scorer = Scorer(model_dir)
    assert scorer.backend == "onnxruntime"
    served = scorer.probability(features)
    assert np.max(np.abs(served - model.predict_proba(features)[:, 1])) <= 1e-12


def test_boosted_explanations_decompose_the_log_odds_exactly(boosted):
    model_dir, _, features = boosted
    model = joblib.load(model_dir / "model.joblib")
    base, log_odds = log_odds_contributions(model, features)
    assert np.max(np.abs(base + log_odds.sum(axis=1) - model._raw_predict(features).ravel())) <= 1e-12
    # the probability-scale parts add up to the uncalibrated probability, keeping each row's signs
    p_base, parts = path_contributions(model, features)
    assert np.max(np.abs(p_base + parts.sum(axis=1) - model.predict_proba(features)[:, 1])) <= 1e-12
    assert np.array_equal(np.sign(parts), np.sign(log_odds))
    # a column the model never splits on gets nothing
    used = {
        int(f)
        for (predictor,) in model._predictors
        for f in predictor.nodes["feature_idx"][~predictor.nodes["is_leaf"].astype(bool)]
    }
    unused = [j for j in range(features.shape[1]) if j not in used]
    assert all(np.all(parts[:, j] == 0.0) for j in unused)
    assert np.abs(parts).sum() > 0


def test_boosted_explain_adds_up_to_the_served_probability(boosted):
    model_dir, _, features = boosted
    contract = FeatureContract.load(model_dir)
    scorer = Scorer(model_dir)
    from churnflow.core.calibration import load_calibrator

    model = joblib.load(model_dir / "model.joblib")
    served = load_calibrator(model_dir).apply(scorer.probability(features[:200]))
    uncalibrated = model.predict_proba(features[:200])[:, 1]
    answers = explain_rows(model, contract, features[:200], served)
    for answer, probability, raw in zip(answers, served, uncalibrated, strict=True):
        total = answer["base_value"] + sum(answer["contributions"].values()) + answer["calibration_adjustment"]
        assert abs(total - probability) <= 1e-12 and answer["probability"] == float(probability)
        # the calibration's own shift, not a remainder that could hide wrong contributions
        assert abs(answer["calibration_adjustment"] - (probability - raw)) <= 1e-12
    assert json.dumps(answers)  # plain JSON for the :explain route


def _openmp_threads() -> int:
    from threadpoolctl import threadpool_info

    return min(i["num_threads"] for i in threadpool_info() if i["user_api"] == "openmp")


def test_boosting_fits_small_tables_on_one_openmp_thread(splits, monkeypatch):
    """HistGradientBoosting's per-split thread synchronisation costs more than it shares on small tables
    (and spins on a busy machine): small fits take one thread, large ones and forests keep every core."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from churnflow.components.tune import logic as tune_logic
    from churnflow.core.hyperparameters import SMALL_TABLE_ROWS, fit_threads

    cores = _openmp_threads()
    with fit_threads(BoostingParams(), 1000):
        assert _openmp_threads() == 1
    with fit_threads(BoostingParams(), SMALL_TABLE_ROWS):
        assert _openmp_threads() == cores
    with fit_threads(ForestParams(), 1000):
        assert _openmp_threads() == cores

    seen: list[int] = []

    class Recording(HistGradientBoostingClassifier):
        def fit(self, X, y, sample_weight=None):  # noqa: N803 - scikit-learn's names
            seen.append(_openmp_threads())
            return super().fit(X, y, sample_weight)

    monkeypatch.setattr(tune_logic, "build_estimator", lambda params, n_jobs=-1: Recording(**params.sklearn_kwargs()))
    cross_validate(splits / "train", splits / "contract", BoostingParams(max_iter=10).model_dump(), folds=3)
    assert seen == [1] * 3 * REPEATS  # every fold of every repetition


def test_a_loop_task_sharing_the_machine_fits_on_its_share_of_the_cores(splits, monkeypatch):
    """kfp.local runs two CV tasks at once: each gets half the cores, for forests (n_jobs) and for
    boosting on large tables (OpenMP), or the two oversubscribe the machine and spin."""
    from sklearn.ensemble import RandomForestClassifier

    from churnflow.components.tune import logic as tune_logic
    from churnflow.core.hyperparameters import LOOP_THREADS_ENV, SMALL_TABLE_ROWS, fit_threads
    from churnflow.pipelines.local import loop_task_threads

    assert loop_task_threads() == max(1, len(os.sched_getaffinity(0)) // 2)
    with fit_threads(BoostingParams(), SMALL_TABLE_ROWS, threads=1):
        assert _openmp_threads() == 1
    jobs: list[int | None] = []

    class Recording(RandomForestClassifier):
        def fit(self, X, y, sample_weight=None):  # noqa: N803 - scikit-learn's names
            jobs.append(self.n_jobs)
            return super().fit(X, y, sample_weight)

    real = tune_logic.build_estimator
    monkeypatch.setattr(
        tune_logic, "build_estimator", lambda params, n_jobs=-1: Recording(**real(params, n_jobs).get_params())
    )
    candidate = ForestParams(n_estimators=5).model_dump()
    cross_validate(splits / "train", splits / "contract", candidate, folds=2)
    monkeypatch.setenv(LOOP_THREADS_ENV, "1")
    cross_validate(splits / "train", splits / "contract", candidate, folds=2)
    assert jobs == [-1] * 2 * REPEATS + [1] * 2 * REPEATS  # 2 folds, repeated
