"""Issue 7: tuning candidates and CV, calibration, the decision threshold, and reasons per prediction."""

from __future__ import annotations

import json
import re

import joblib
import numpy as np
import pytest
from sklearn.metrics import brier_score_loss

from churnflow.components.preprocess.logic import TEST_FILE, preprocess
from churnflow.components.train.logic import train
from churnflow.components.tune.logic import DEFAULT_GRID, candidates, cross_validate
from churnflow.components.tune.selection import REPEATS, select_best
from churnflow.core.calibration import Calibrator, choose_calibration, load_calibrator
from churnflow.core.config import load_config
from churnflow.core.contract import FeatureContract
from churnflow.core.data import read_split
from churnflow.core.encoding import encode_contract_frame
from churnflow.core.errors import ChurnflowError
from churnflow.core.explain import explain_rows
from churnflow.core.hyperparameters import ForestParams
from churnflow.core.threshold import choose_threshold


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("quality")
    preprocess("", load_config(None), root / "train", root / "test", root / "contract", synthetic_rows=1500, seed=3)
    return root


def test_candidates_cover_the_grid_over_the_base_settings():
    base = ForestParams(n_estimators=50)
    forests = [c for c in candidates(base, True, "") if c["family"] == "random_forest"]
    forest_grid = DEFAULT_GRID["random_forest"]
    assert len(forests) == len(forest_grid["min_samples_leaf"]) * len(forest_grid["max_features"])
    assert all(c["n_estimators"] == 50 and c["random_state"] == 42 for c in forests)
    assert {c["min_samples_leaf"] for c in forests} == set(forest_grid["min_samples_leaf"])


def test_seed_exact_mode_has_one_candidate_the_seed_defaults():
    assert candidates(ForestParams(), False, '{"min_samples_leaf": [1, 2]}') == [ForestParams().model_dump()]
    assert ForestParams().sklearn_kwargs()["n_estimators"] == 100
    assert ForestParams().sklearn_kwargs()["random_state"] == 42


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ("{not json", "tuning_grid: not valid JSON"),
        ('{"min_samples_leaf": []}', "non-empty list"),
        ('{"criterion": ["gini"]}', "unknown parameter(s) ['criterion']"),
        ('{"min_samples_leaf": [0]}', "hyperparameter min_samples_leaf"),
        ('{"min_samples_leaf": [1,2,3,4,5,6,7,8,9], "n_estimators": [1,2,3,4,5,6,7,8]}', "exceed the limit"),
    ],
)
def test_bad_grids_are_one_line_errors(grid, message):
    with pytest.raises(ChurnflowError, match=re.escape(message)):
        candidates(ForestParams(), True, grid)


def test_cross_validation_uses_only_the_training_split_and_select_picks_the_best(splits, monkeypatch):
    """Every row a CV fit learns from or is scored on is a training-split row, each fold scores rows
    its fit never saw, the folds together use the whole training split, and no test row is touched."""
    from sklearn.ensemble import RandomForestClassifier

    from churnflow.components.preprocess.logic import TEST_FILE, TRAIN_FILE
    from churnflow.components.tune import logic as tune_logic

    seen: list[tuple[str, np.ndarray]] = []

    class Recording(RandomForestClassifier):
        def fit(self, X, y, sample_weight=None):  # noqa: N803 - scikit-learn's names
            seen.append(("fit", np.asarray(X).copy()))
            return super().fit(X, y, sample_weight)

        def predict_proba(self, X):  # noqa: N803
            seen.append(("score", np.asarray(X).copy()))
            return super().predict_proba(X)

    monkeypatch.setattr(tune_logic, "build_estimator", lambda params, n_jobs=-1: Recording(**params.sklearn_kwargs()))
    results = [
        cross_validate(
            splits / "train",
            splits / "contract",
            ForestParams(n_estimators=20, min_samples_leaf=leaf).model_dump(),
            folds=3,
        )
        for leaf in (1, 20)
    ]
    contract = FeatureContract.load(splits / "contract")

    def encoded(path) -> set[bytes]:
        frame = read_split(path, contract.numeric, list(contract.categorical))
        return {row.tobytes() for row in encode_contract_frame(contract, frame)}

    train_rows, test_rows = encoded(splits / "train" / TRAIN_FILE), encoded(splits / "test" / TEST_FILE)
    assert not train_rows & test_rows  # so a test row reaching a fit could not hide as a training row
    assert [kind for kind, _ in seen] == ["fit", "score"] * 6 * REPEATS  # 2 candidates, 3 folds, repeated
    for (_, fitted), (_, scored) in zip(seen[::2], seen[1::2], strict=True):
        fitted_rows, scored_rows = {r.tobytes() for r in fitted}, {r.tobytes() for r in scored}
        outside = len((fitted_rows | scored_rows) - train_rows)
        assert not outside, f"{outside} rows outside the training split reached a CV fit"
        leaked = len((fitted_rows | scored_rows) & test_rows)
        assert not leaked, f"{leaked} test-split rows reached a CV fit"
        overlap = len(fitted_rows & scored_rows)
        assert not overlap, f"{overlap} rows were scored by a fit that learned them"
        assert fitted_rows | scored_rows == train_rows, "a fold did not use the whole training split"
    assert set().union(*({r.tobytes() for r in s} for _, s in seen[1:6:2])) == train_rows  # 3 folds cover it
    for result in results:
        assert len(result["fold_scores"]) == 3 * REPEATS and 0.5 < result["score"] <= 1.0
    selection = select_best(results)
    best = max(results, key=lambda r: r["score"])
    differences = [np.subtract(r["fold_scores"], best["fold_scores"]) for r in results]  # paired, same folds
    within = [
        r
        for r, d in zip(results, differences, strict=True)
        if d.mean() >= -np.std(d, ddof=1) * np.sqrt(1 / len(d) + 1 / 2)  # Nadeau-Bengio, 3 folds
    ]
    assert selection["best"] == within[0]["params"] and selection["highest_score"] == best["score"]
    assert len(selection["candidates"]) == 2


def test_calibration_auto_only_keeps_a_method_that_lowers_out_of_fold_brier():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 1, 4000)
    target = (rng.uniform(0, 1, 4000) < truth).astype(int)
    squashed = 0.5 + (truth - 0.5) * 0.3  # badly under-confident scores
    calibrator, report = choose_calibration("auto", squashed, target, seed=0)
    assert report["method"] in ("isotonic", "sigmoid")
    assert brier_score_loss(target, calibrator.apply(squashed)) < brier_score_loss(target, squashed)
    _, report = choose_calibration("auto", truth, target, seed=0)
    kept = report["raw_brier_oof"] if report["method"] == "none" else report[f"{report['method']}_brier_oof"]
    assert kept <= report["raw_brier_oof"]
    with pytest.raises(ChurnflowError, match="calibration: expected one of"):
        choose_calibration("platt", truth, target, seed=0)


def test_calibrator_round_trips_through_json():
    calibrator = Calibrator("isotonic", (0.1, 0.5, 0.9), (0.0, 0.4, 1.0))
    again = Calibrator.from_json(json.loads(json.dumps(calibrator.to_json())))
    values = np.linspace(0, 1, 11)
    assert np.array_equal(again.apply(values), calibrator.apply(values))


def test_threshold_goals():
    rng = np.random.default_rng(1)
    probability = rng.uniform(0, 1, 2000)
    target = (rng.uniform(0, 1, 2000) < probability).astype(int)
    f1_threshold, report = choose_threshold("f1", probability, target)
    assert 0.0 < f1_threshold < 0.6 and report["goal"] == "f1"
    strict, report = choose_threshold("precision>=0.8", probability, target)
    predicted = probability > strict
    assert (target[predicted] == 1).mean() >= 0.8 and strict > f1_threshold
    assert choose_threshold("0.5", probability, target)[0] == 0.5
    for bad in ("best", "1.5", "precision>=1.01"):
        with pytest.raises(ChurnflowError, match="threshold_goal"):
            choose_threshold(bad, probability, target)


def test_train_records_calibration_and_threshold_and_serves_what_evaluate_scored(splits, tmp_path):
    metadata = train(
        splits / "train",
        splits / "contract",
        tmp_path / "model",
        ForestParams(n_estimators=30),
        calibration="auto",
        threshold_goal="f1",
    )
    contract = FeatureContract.load(tmp_path / "model")
    assert contract.threshold == metadata["threshold"]["threshold"] != 0.5
    assert metadata["calibration"]["method"] == load_calibrator(tmp_path / "model").method
    seed_exact = train(splits / "train", splits / "contract", tmp_path / "seed", ForestParams(n_estimators=30))
    assert seed_exact["calibration"]["method"] == "none" and FeatureContract.load(tmp_path / "seed").threshold == 0.5


def test_explanations_add_up_to_the_probability(splits, tmp_path):
    train(
        splits / "train",
        splits / "contract",
        tmp_path / "model",
        ForestParams(n_estimators=25),
        calibration="isotonic",
        threshold_goal="f1",
    )
    contract = FeatureContract.load(tmp_path / "model")
    model = joblib.load(tmp_path / "model" / "model.joblib")
    frame = read_split(splits / "test" / TEST_FILE, contract.numeric, list(contract.categorical))
    features = encode_contract_frame(contract, frame)
    served = load_calibrator(tmp_path / "model").apply(model.predict_proba(features)[:, 1])
    answers = explain_rows(model, contract, features, served)
    assert len(answers) == len(frame)
    for answer, probability in zip(answers, served, strict=True):
        assert set(answer["contributions"]) == set(contract.input_columns)  # one-hot folded back
        total = answer["base_value"] + sum(answer["contributions"].values()) + answer["calibration_adjustment"]
        assert total == pytest.approx(probability, abs=1e-12)
        assert answer["probability"] == probability
        assert all(v > 0 for _, v in answer["top_increasing"]) and all(v < 0 for _, v in answer["top_decreasing"])


def test_explanations_match_an_independent_decomposition(splits, tmp_path):
    """Calibration off, the contributions are the forest's decision-path decomposition itself:
    treeinterpreter (an independent implementation of the same method) must give the same numbers,
    one-hot columns summed into the caller's column, to 1e-12, on every test-split row."""
    from treeinterpreter import treeinterpreter

    train(splits / "train", splits / "contract", tmp_path / "model", ForestParams(n_estimators=25, max_depth=8))
    contract = FeatureContract.load(tmp_path / "model")
    model = joblib.load(tmp_path / "model" / "model.joblib")
    frame = read_split(splits / "test" / TEST_FILE, contract.numeric, list(contract.categorical))
    features = encode_contract_frame(contract, frame)
    assert len(features) >= 200
    served = model.predict_proba(features)[:, 1]
    answers = explain_rows(model, contract, features, served)

    prediction, bias, contributions = treeinterpreter.predict(model, features)
    owner = {column: column for column in contract.numeric}
    for column, levels in contract.categorical.items():
        owner.update({contract.one_hot_column(column, level): column for level in levels})
    expected = {column: np.zeros(len(features)) for column in contract.input_columns}
    for j, model_column in enumerate(contract.feature_columns):
        expected[owner[model_column]] += contributions[:, j, 1]
    assert np.abs(prediction[:, 1] - served).max() < 1e-12
    for row, answer in enumerate(answers):
        assert answer["base_value"] == pytest.approx(bias[row, 1], abs=1e-12)
        for column in contract.input_columns:
            assert answer["contributions"][column] == pytest.approx(expected[column][row], abs=1e-12), column
        assert abs(answer["calibration_adjustment"]) < 1e-12  # nothing left over for calibration to hide


def test_explain_route_answers_per_instance(server):
    import httpx

    row = {"tenure": 3, "usage": 20, "age": 40, "monthly_charges": 120, "contract_type": "Month-to-month"}
    response = httpx.post(f"{server.url}/v1/models/churn:explain", json={"instances": [row, row]})
    assert response.status_code == 200, response.text
    explanations = response.json()["explanations"]
    predicted = httpx.post(f"{server.url}/v1/models/churn:predict", json={"instances": [row]}).json()
    assert len(explanations) == 2
    assert explanations[0]["probability"] == pytest.approx(predicted["predictions"][0]["probability"], abs=1e-12)
    assert explanations[0]["top_increasing"][0][0] in {"tenure", "contract_type", "monthly_charges"}
    bad = httpx.post(f"{server.url}/v1/models/churn:explain", json={"instances": [{"tenure": "x"}]})
    assert bad.status_code == 400 and "tenure" in bad.json()["error"]


def test_compiled_pipeline_fans_tuning_out_and_collects_it(tmp_path):
    import yaml

    from churnflow.pipelines.kubeflow import compile_pipeline

    spec = next(yaml.safe_load_all(compile_pipeline(tmp_path / "p.yaml").read_text()))
    root = spec["root"]["dag"]["tasks"]
    # the fan-out is the large-table branch of a dsl.If/dsl.Else (small tables: tune_op, one task)
    branches = spec["components"][root["condition-branches-1"]["componentRef"]["name"]]["dag"]["tasks"]
    fan_out = next(t for t in branches.values() if t["taskInfo"]["name"] == "large-table-fan-out")
    tasks = spec["components"][fan_out["componentRef"]["name"]]["dag"]["tasks"]
    loops = [tasks[name] for name in sorted(tasks) if "parameterIterator" in tasks[name]]
    assert len(loops) == 3  # one fan-out per rung of the search, each fed by the previous rung's choice
    for loop, feeder in zip(loops, ["candidates-op", "next-rung-op", "next-rung-op-2"], strict=True):
        assert loop["parameterIterator"]["items"]["inputParameter"]
        assert feeder in loop["dependentTasks"]
        assert any(
            t.startswith("cv-score-op") for t in spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
        )
    assert tasks["select-params-op"]["dependentTasks"] == ["for-loop-6"]
    assert root["train-op"]["dependentTasks"] == ["condition-branches-1", "preprocess-op"]
