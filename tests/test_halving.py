"""Issue 16 item 3: large tables are tuned by successive halving on growing prefixes of the shuffled
training split, read compactly, and the chosen settings are fitted on every row."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churnflow.components.preprocess.logic import TRAIN_FILE, preprocess
from churnflow.components.train.logic import train
from churnflow.components.tune import halving
from churnflow.components.tune.logic import candidates, cross_validate, score_item, tune_in_one_task
from churnflow.components.tune.selection import REPEATS, select_best
from churnflow.core.config import load_config
from churnflow.core.contract import FeatureContract
from churnflow.core.data import read_split, validate_table, write_split
from churnflow.core.errors import ChurnflowError
from churnflow.core.hyperparameters import BoostingParams, ForestParams, model_params
from churnflow.core.synthetic import synthetic_customers


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("halving")
    preprocess("", load_config(None), root / "train", root / "test", root / "contract", synthetic_rows=3000, seed=3)
    return root


FOLD_PATTERN = np.array([-1.2, -0.4, 0.0, 0.4, 1.2]) / np.std([-1.2, -0.4, 0.0, 0.4, 1.2], ddof=1)


def result(index: int, score: float, standard_error: float, rows: int = 100) -> dict:
    """A cross_validate result as the rung functions see it (a forest candidate numbered `index`)."""
    return {
        "index": index,
        "params": ForestParams(min_samples_leaf=index + 1).model_dump(),
        "metric": "roc_auc",
        "score": score,
        "std": standard_error * np.sqrt(5),
        "standard_error": standard_error,
        # fold noise of that size, in a pattern of its own: the paired rule sees noisy differences
        "fold_scores": (score + standard_error * np.sqrt(5) * np.roll(FOLD_PATTERN, index)).tolist(),
        "folds": 5,
        "rows": rows,
        "search": {"train_rows": 1000, "schedule": [100, 300, 900], "factor": 3, "rungs": [], "decided": False},
    }


# -- the schedule --------------------------------------------------------------------------------


def test_small_tables_are_searched_flat_and_large_ones_in_rungs_of_three_times_the_rows() -> None:
    assert halving.schedule(800, 10_000) == [800]
    assert halving.schedule(30_000, 10_000) == [30_000]  # not more than one rung's worth
    assert halving.schedule(30_001, 10_000) == [10_000, 30_000, 30_001]
    assert halving.schedule(800_000, 10_000) == [10_000, 30_000, 90_000]
    assert halving.schedule(50_000, 10_000) == [10_000, 30_000, 50_000]
    assert halving.schedule(8_000_000, 0) == [8_000_000]  # 0 turns halving off
    with pytest.raises(ChurnflowError, match="halving_min_rows: expected 0 .off. or a positive row count, got -1"):
        halving.schedule(1000, -1)


# -- a rung --------------------------------------------------------------------------------------


def test_a_rung_keeps_its_best_third_and_the_candidate_the_noise_aware_rule_would_choose() -> None:
    # the simplest candidate (0) is not in the best third, but within one standard error of the best
    scores = [0.829, 0.800, 0.810, 0.834, 0.838, 0.790, 0.837]
    items = halving.advance([result(i, s, standard_error=0.01) for i, s in enumerate(scores)])
    assert [item["index"] for item in items] == [0, 3, 4, 6]  # ceil(7/3)=3 best, plus 0; listed order
    assert {item["rows"] for item in items} == {300}
    assert items[0]["params"] == ForestParams(min_samples_leaf=1).model_dump()
    assert [r["rows"] for r in items[0]["search"]["rungs"]] == [100]


def test_a_rung_ignores_the_order_in_which_the_fan_in_delivered_its_results() -> None:
    scores = [0.80, 0.84, 0.79, 0.83, 0.85, 0.81]
    listed = [result(i, s, standard_error=0.001) for i, s in enumerate(scores)]
    shuffled = listed[:]
    random.Random(4).shuffle(shuffled)
    assert halving.advance(shuffled) == halving.advance(listed)
    assert [item["index"] for item in halving.advance(listed)] == [1, 4]


def test_numbers_that_came_back_as_floats_from_kfp_are_typed_again() -> None:
    floated = result(2, 0.8, 0.01)
    floated["params"] = {k: float(v) if isinstance(v, int) else v for k, v in floated["params"].items()}
    floated.update(index=2.0, rows=100.0)
    selection = halving.finish([floated])
    assert selection["best"] == ForestParams(min_samples_leaf=3).model_dump()
    assert isinstance(selection["best"]["n_estimators"], int)
    assert selection["candidates"][0]["rows"] == 100 and isinstance(selection["candidates"][0]["rows"], int)


def test_once_decided_the_later_rungs_carry_the_choice_without_fitting(splits: Path) -> None:
    # one candidate clearly ahead: rung 0 decides, and rungs 1 and 2 only pass its result on
    items = halving.start([ForestParams(min_samples_leaf=n).model_dump() for n in (1, 2, 3)], 1000, 100)
    scored = [
        {**result(i, s, 0.001), "search": item["search"]}
        for i, (s, item) in enumerate(zip([0.7, 0.9, 0.8], items, strict=True))
    ]
    carried = halving.advance(scored)
    assert len(carried) == 1 and carried[0]["carry"]["index"] == 1
    assert carried[0]["carry"]["search"]["decided"] is True
    again = halving.advance([score_item(splits / "train", splits / "contract", item) for item in carried])
    assert again == carried
    selection = halving.finish([score_item(splits / "train", splits / "contract", item) for item in again])
    assert selection["best"] == ForestParams(min_samples_leaf=2).model_dump()
    assert [c["index"] for c in selection["candidates"]] == [0, 1, 2]
    assert selection["halving"]["rungs"] == [{"rung": 0, "rows": 100, "candidates": [0, 1, 2]}]
    assert selection["halving"]["tuning_rows"] == 100


# -- repeated cross-validation on a small table: only for the undecided ----------------------------


def _flat(scores: list[float], standard_errors: list[float]) -> list[dict]:
    """Rung 0's results of a flat search on a small training split (repetitions due)."""
    items = halving.start([ForestParams(min_samples_leaf=i + 1).model_dump() for i in range(len(scores))], 1000, 10_000)
    assert {tuple(item["repeats"]) for item in items} == {(0, 1)}  # rung 0: one k-fold for everyone
    return [
        {**result(i, s, e, rows=1000), "repeats": 1, "seconds": 0.5, "search": item["search"]}
        for i, (s, e, item) in enumerate(zip(scores, standard_errors, items, strict=True))
    ]


def test_on_a_small_table_only_the_candidates_within_the_noise_of_the_best_are_repeated() -> None:
    # 4 is the best; 0 and 3 are within its noise, 1, 2 and 5 far behind (tight folds)
    rung0 = _flat([0.835, 0.70, 0.71, 0.836, 0.84, 0.72], [0.01, 0.001, 0.001, 0.01, 0.01, 0.001])
    (task,) = halving.advance(rung0)  # one task scores them one after another
    items = task["group"]
    assert [item["index"] for item in items] == [0, 3, 4]
    assert all(item["repeats"] == [1, REPEATS] and item["rows"] == 1000 for item in items)
    assert items[0]["earlier"]["fold_scores"] == rung0[0]["fold_scores"]  # pooled with rung 0's folds
    assert items[0]["search"]["repeated"] is True


def test_the_repetitions_go_to_at_most_three_the_best_and_the_first_listed_within_its_noise() -> None:
    rung0 = _flat([0.835, 0.837, 0.836, 0.84, 0.70], [0.01] * 4 + [0.001])
    assert [item["index"] for item in halving.advance(rung0)[0]["group"]] == [0, 1, 3]


def test_a_small_table_whose_best_is_clear_after_one_k_fold_is_decided_at_rung_0() -> None:
    rung0 = _flat([0.70, 0.71, 0.90], [0.001, 0.001, 0.001])
    carried = halving.advance(rung0)
    assert len(carried) == 1 and carried[0]["carry"]["index"] == 2
    assert carried[0]["carry"]["search"]["decided"] is True


def test_repetitions_scored_later_pool_into_the_same_folds_as_scoring_them_at_once(splits: Path) -> None:
    train_dir, contract_dir = splits / "train", splits / "contract"
    params = ForestParams(n_estimators=8).model_dump()
    at_once = cross_validate(train_dir, contract_dir, params, folds=3, repeats=(0, REPEATS))
    first = cross_validate(train_dir, contract_dir, params, folds=3, repeats=(0, 1))
    item = {"index": 0, "params": params, "rows": 2400, "search": {}, "repeats": [1, REPEATS]}
    later = score_item(train_dir, contract_dir, {**item, "earlier": first}, folds=3)
    assert later["fold_scores"] == at_once["fold_scores"] and later["repeats"] == REPEATS
    assert later["score"] == pytest.approx(at_once["score"]) and later["std"] == pytest.approx(at_once["std"])


def test_a_small_table_repeats_only_its_undecided_candidates_in_one_task_as_in_the_fan_out(splits: Path) -> None:
    grid = '{"max_depth": [0, 1], "min_samples_leaf": [1, 5, 20]}'
    listed = candidates(ForestParams(n_estimators=8), True, grid)
    listed.append(BoostingParams(max_iter=20).model_dump())
    train_dir, contract_dir = splits / "train", splits / "contract"
    together = tune_in_one_task(train_dir, contract_dir, listed, folds=3)
    rungs = together["halving"]["rungs"]
    assert [r["rows"] for r in rungs] == [2400, 2400] and rungs[0]["candidates"] == list(range(7))
    assert rungs[1]["candidates"] == [2, 6]  # min_samples_leaf=20 and boosting: the rest is far behind
    folds = {c["index"]: len(c["fold_scores"]) for c in together["candidates"]}
    assert {i for i, n in folds.items() if n == 3 * REPEATS} == set(rungs[1]["candidates"])
    assert {i for i, n in folds.items() if n == 3} == set(range(7)) - set(rungs[1]["candidates"])
    repeated = [c for c in together["candidates"] if not c.get("screened_out")]
    assert together["best"] == select_best(repeated)["best"]  # chosen on the pooled folds
    items = halving.start(listed, 2400, halving.DEFAULT_MIN_ROWS)
    for _ in range(halving.RUNGS - 1):
        items = halving.advance([score_item(train_dir, contract_dir, i, folds=3) for i in reversed(items)])
    fanned = halving.finish([score_item(train_dir, contract_dir, i, folds=3) for i in reversed(items)])
    assert fanned["best"] == together["best"] and fanned["halving"] == together["halving"]
    for one, other in zip(fanned["candidates"], together["candidates"], strict=True):  # fits agree to ~1e-5
        assert one["index"] == other["index"] and one["fold_scores"] == pytest.approx(other["fold_scores"], abs=1e-4)


# -- the compact split ---------------------------------------------------------------------------


def test_the_split_round_trips_exactly_and_compactly_and_a_prefix_reads_only_its_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = 150_000  # three row groups
    frame = pd.DataFrame(
        {
            "tenure": rng.integers(0, 72, rows).astype("float64"),
            "monthly_charges": rng.uniform(20, 120, rows).round(2),
            "plan": rng.choice(["Basic", "Pro", None], rows),
            "churn": rng.integers(0, 2, rows),
        }
    )
    frame.loc[::7, "tenure"] = np.nan
    write_split(frame, tmp_path / "split.parquet")
    back = read_split(tmp_path / "split.parquet", ["tenure", "monthly_charges"], ["plan"])
    pd.testing.assert_frame_equal(back, frame)
    import pyarrow.parquet as pq

    schema = pq.read_schema(tmp_path / "split.parquet")
    assert str(schema.field("tenure").type) == "float"  # whole numbers: float32 is exact
    assert str(schema.field("monthly_charges").type) == "double"  # cents are not exact in float32
    assert str(schema.field("plan").type).startswith("dictionary")
    prefix = read_split(tmp_path / "split.parquet", ["tenure", "monthly_charges"], ["plan"], rows=70_000)
    pd.testing.assert_frame_equal(prefix, frame.iloc[:70_000])


def test_the_training_split_is_stored_shuffled_so_a_prefix_is_a_random_sample(splits: Path) -> None:
    contract = FeatureContract.load(splits / "contract")
    frame = read_split(splits / "train" / TRAIN_FILE, contract.numeric, list(contract.categorical))
    source = validate_table(synthetic_customers(3000, 3), load_config(None)).frame.reset_index(names="position")
    located = frame.iloc[:600].merge(source, on=contract.numeric + ["churn"], how="left")
    assert located["position"].notna().all()
    # the first 600 training rows come from all over the source table, not from its start
    assert located["position"].max() > 2400 and not located["position"].is_monotonic_increasing
    assert abs(frame.iloc[:600]["churn"].mean() - frame["churn"].mean()) < 0.05


# -- the whole search ----------------------------------------------------------------------------


def test_the_search_in_one_task_halves_and_chooses_as_the_fanned_out_rungs_do(splits: Path) -> None:
    listed = candidates(ForestParams(n_estimators=8), True, '{"min_samples_leaf": [1, 3, 10, 30], "max_depth": [0, 4]}')
    assert len(listed) == 8
    train_dir, contract_dir = splits / "train", splits / "contract"
    together = tune_in_one_task(train_dir, contract_dir, listed, folds=3, halving_min_rows=200)
    assert together["halving"]["schedule"] == [200, 600, 1800]
    assert [(r["rows"], r["candidates"]) for r in together["halving"]["rungs"]] == [
        (200, [0, 1, 2, 3, 4, 5, 6, 7]),
        (600, [1, 3, 4, 5]),  # the best third of 8, plus the rule's choice (3 × 3-fold CV, paired)
        (1800, [1, 4]),  # the best third of 4
    ]
    # the DAG's way: every rung fanned out, results collected in reverse order
    items = halving.start(listed, 2400, 200)
    for _ in range(halving.RUNGS - 1):
        items = halving.advance([score_item(train_dir, contract_dir, i, folds=3) for i in reversed(items)])
    fanned = halving.finish([score_item(train_dir, contract_dir, i, folds=3) for i in reversed(items)])
    strip = lambda s: json.loads(json.dumps(s, default=str).replace('"seconds"', '"_"'))  # noqa: E731
    assert {k: v for k, v in strip(together).items() if k != "candidates"} == {
        k: v for k, v in strip(fanned).items() if k != "candidates"
    }
    assert [c["index"] for c in together["candidates"]] == [c["index"] for c in fanned["candidates"]]
    assert together["best"] == select_best(together["candidates"])["best"]
    assert together["candidates"][0]["rows"] == together["halving"]["tuning_rows"]


def test_calibration_uses_the_last_rungs_rows_and_the_final_fit_every_row(splits: Path, tmp_path: Path) -> None:
    selection = {
        "best": ForestParams(n_estimators=10).model_dump(),
        "halving": {"tuning_rows": 600, "train_rows": 2400, "schedule": [200, 600], "rungs": []},
    }
    metadata = train(
        splits / "train",
        splits / "contract",
        tmp_path / "model",
        model_params(**selection["best"]),
        calibration="sigmoid",
        threshold_goal="f1",
        tuning=selection,
    )
    assert metadata["calibration"]["rows"] == 600
    import joblib

    model = joblib.load(tmp_path / "model" / "model.joblib")
    assert sum(model.estimators_[0].tree_.weighted_n_node_samples[:1]) == 2400  # fitted on every row


@pytest.mark.slow
def test_the_pipeline_halves_through_kfp_local_and_fits_the_choice_on_every_row(tmp_path: Path) -> None:
    """The real DAG: three fanned-out rungs through kfp.local; train fits the last rung's choice on all
    2,400 training rows and calibrates on the last rung's 1,800."""
    from churnflow.pipelines.local import run_local

    arguments = {
        "tuning_grid": '{"min_samples_leaf": [1, 3, 10, 30], "max_depth": [0, 4]}',
        "n_estimators": 8,
        "cv_folds": 3,
        "halving_min_rows": 200,
        "calibration": "sigmoid",
        "one_task_tuning_rows": 0,  # the fan-out, which a split this small would not get by default
    }
    handlers = list(logging.root.handlers)
    run = run_local(tmp_path, config=load_config(None), rows=3000, arguments=arguments)
    assert logging.root.handlers == handlers  # none left writing to the closed run log
    metadata = json.loads((run.output_dir / "candidate" / "metadata.json").read_text())
    tuning = metadata["tuning"]
    assert [r["rows"] for r in tuning["halving"]["rungs"]] == [200, 600, 1800]
    assert [len(r["candidates"]) for r in tuning["halving"]["rungs"]][0] == 8
    assert tuning["best"] == select_best(tuning["candidates"])["best"]
    assert {c["rows"] for c in tuning["candidates"]} == {1800}
    assert metadata["hyperparameters"] == tuning["best"]
    assert metadata["calibration"]["rows"] == 1800 and metadata["data"]["train_rows"] == 2400
    assert run.metrics["roc_auc"] > 0.7
