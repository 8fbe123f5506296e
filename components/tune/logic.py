"""Tuning: score candidates of both model families by stratified k-fold CV on the training split, and
choose with a rule that respects fold-to-fold noise.

The pipeline fans the candidates out (one KFP task each, dsl.ParallelFor), so on a cluster they run on
as many pods at once; locally they run one after another. On a large training split the search runs
in rungs of successive halving on growing subsamples (halving.py), each rung its own fan-out. Backends
older than KFP 2.14 cannot collect a loop's outputs, so for them one task runs the same search in its
own pod (`tune_in_one_task`). The test split is never read here.

The choice is a paired one-standard-error rule: the candidates are listed simplest first (the random
forest before boosting, each family's defaults before its variations). Every candidate is scored on
the same folds (same seed, same rows), so each is compared with the best candidate fold by fold: the
first whose mean fold-by-fold difference from the best is within one standard error of that
difference wins. A difference smaller than the noise is not trusted, so a tuned setting or the other
family must earn its place by more than that; pairing removes the noise both candidates share (a hard
fold is hard for both), which two candidates' own spreads cannot.

The standard error of the mean difference is the corrected one of Nadeau and Bengio (2003) for
cross-validation, sd(d) · √(1/J + n_test/n_train) over J folds: the folds share training rows, so the
naive sd(d)/√J would be too small and trust differences that are noise.

On training splits under `REPEAT_BELOW_ROWS` rows the noise is large, so the candidates the rule
cannot yet separate are cross-validated `REPEATS` times over with reshuffled folds
(RepeatedStratifiedKFold): every candidate is scored on the first k folds, and only the best and the
first listed candidates within one standard error of it (`REPEAT_CANDIDATES` in all) get the other
`REPEATS - 1` repetitions, on the same folds for each; the rule then chooses among those on all
`REPEATS × k` folds (`undecided`, halving.advance). Repeating every candidate cost half as much CPU
again as the whole default run on 1,000 rows; a candidate clearly behind the best after k folds
cannot be chosen, so its repetitions bought nothing.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, f1_score, roc_auc_score
from sklearn.model_selection import RepeatedStratifiedKFold

from churnflow.components.preprocess.outputs import TRAIN_FILE, train_rows
from churnflow.components.tune import halving
from churnflow.components.tune.selection import search_repeats, standard_error
from churnflow.core.contract import FeatureContract
from churnflow.core.data import read_split
from churnflow.core.encoding import encode_contract_frame
from churnflow.core.errors import ChurnflowError
from churnflow.core.hyperparameters import (
    FAMILIES,
    HIST_GRADIENT_BOOSTING,
    RANDOM_FOREST,
    BoostingParams,
    ForestParams,
    build_estimator,
    fit_threads,
    loop_threads,
    model_params,
)
from churnflow.core.workers import process_pool

# Each family's grid lists its defaults first: the one-standard-error rule prefers the earliest candidate.
DEFAULT_GRID: dict[str, dict[str, list[Any]]] = {
    RANDOM_FOREST: {"min_samples_leaf": [1, 5, 20], "max_features": ["sqrt", "0.5"]},
    HIST_GRADIENT_BOOSTING: {"learning_rate": [0.1, 0.05], "max_leaf_nodes": [31, 15]},
}
TUNABLE = {
    RANDOM_FOREST: ("n_estimators", "max_depth", "min_samples_leaf", "max_features", "class_weight"),
    HIST_GRADIENT_BOOSTING: (
        "learning_rate",
        "max_iter",
        "max_leaf_nodes",
        "min_samples_leaf",
        "l2_regularization",
        "early_stopping",
        "validation_fraction",
    ),
}
MAX_CANDIDATES = 64
# Scores where higher is better; brier is negated so that "best" is always the maximum.
WORKER_PRELOAD = [__name__]
"""What the worker processes import before they fork (churnflow/core/workers.py)."""
METRICS = {
    "roc_auc": lambda y, p: roc_auc_score(y, p),
    "average_precision": lambda y, p: average_precision_score(y, p),
    "f1": lambda y, p: f1_score(y, p > 0.5),
    "neg_brier": lambda y, p: -brier_score_loss(y, p),
}


def _check_family_grid(family: str, grid: Any) -> dict[str, list[Any]]:
    where = f"tuning_grid.{family}"
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise ChurnflowError(f"{where}: expected a JSON object of parameter name → non-empty list of values")
    unknown = sorted(set(grid) - set(TUNABLE[family]))
    if unknown:
        raise ChurnflowError(f"{where}: unknown parameter(s) {unknown} (tunable: {', '.join(TUNABLE[family])})")
    return grid


def parse_grid(text: str) -> dict[str, dict[str, list[Any]]]:
    """The search grid per family ("" means the default grid of both families).

    Either `{"random_forest": {...}, "hist_gradient_boosting": {...}}` (a family with `{}` is tried at
    its defaults; a family left out is not tried), or a plain object of forest parameters, which tunes
    the random forest alone as before.
    """
    if not text.strip():
        return DEFAULT_GRID
    try:
        grid = json.loads(text)
    except ValueError as error:
        raise ChurnflowError(f"tuning_grid: not valid JSON ({error})") from None
    if not isinstance(grid, dict) or not grid:
        raise ChurnflowError("tuning_grid: expected a JSON object (per family, or of forest parameters)")
    if not set(grid) & set(FAMILIES) and not any(isinstance(v, dict) for v in grid.values()):
        return {RANDOM_FOREST: _check_family_grid(RANDOM_FOREST, grid)}
    unknown = sorted(set(grid) - set(FAMILIES))
    if unknown:
        raise ChurnflowError(f"tuning_grid: unknown model family {unknown} (expected: {', '.join(FAMILIES)})")
    return {family: _check_family_grid(family, grid[family]) for family in FAMILIES if family in grid}


def _family_candidates(base: ForestParams | BoostingParams, grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    names = list(grid)
    result = []
    for combo in itertools.product(*(grid[n] for n in names)):
        values = {**base.model_dump(), **dict(zip(names, combo, strict=True))}
        if "max_features" in values:
            values["max_features"] = str(values["max_features"])
        candidate = model_params(**values).model_dump()
        if candidate not in result:
            result.append(candidate)
    return result


def candidates(base: ForestParams, tune: bool, grid_text: str) -> list[dict[str, Any]]:
    """Every grid point of each family, simplest first; just the base forest when not tuning.

    The forest's grid is laid over the pipeline's base settings; boosting's over scikit-learn's
    defaults with the same random_state.
    """
    if not tune:
        return [base.model_dump()]
    grid = parse_grid(grid_text)
    bases = {RANDOM_FOREST: base, HIST_GRADIENT_BOOSTING: BoostingParams(random_state=base.random_state)}
    result = [c for family, family_grid in grid.items() for c in _family_candidates(bases[family], family_grid)]
    if len(result) > MAX_CANDIDATES:
        raise ChurnflowError(f"tuning_grid: {len(result)} candidates exceed the limit of {MAX_CANDIDATES}")
    return result


def cross_validate(
    train_dir: str | Path,
    contract_dir: str | Path,
    candidate: dict[str, Any],
    folds: int = 5,
    metric: str = "roc_auc",
    seed: int = 42,
    rows: int | None = None,
    repeats: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Stratified k-fold score of one candidate on the training split, or on its first `rows` rows
    (a random sample: the split is stored shuffled).

    `repeats` = (first, end) scores repetitions first … end-1 of a seeded `end`-times repeated k-fold:
    repetition r's folds do not depend on `end` (the splitter draws them one after another from one
    seeded generator), so (0, 1) and then (1, 3) give the same 3 × k folds as (0, 3). None: all
    repetitions `cv_repeats` asks for."""
    if metric not in METRICS:
        raise ChurnflowError(f"tuning_metric: expected one of {', '.join(METRICS)}, got {metric!r}")
    params = model_params(**candidate)
    contract = FeatureContract.load(contract_dir)
    frame = read_split(Path(train_dir) / TRAIN_FILE, contract.numeric, list(contract.categorical), rows=rows)
    features = encode_contract_frame(contract, frame)
    target = frame[contract.target].to_numpy(dtype="int64")
    first, end = repeats if repeats is not None else (0, cv_repeats(contract_dir, len(frame)))
    splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=end, random_state=seed)
    started = time.perf_counter()
    scores = []
    threads = loop_threads()  # a loop task beside others on one machine gets its share of the cores
    splits = itertools.islice(splitter.split(features, target), first * folds, None)
    for fit_rows, held_rows in splits:
        with fit_threads(params, len(fit_rows), threads):
            model = build_estimator(params, n_jobs=threads or -1).fit(features[fit_rows], target[fit_rows])
        scores.append(float(METRICS[metric](target[held_rows], model.predict_proba(features[held_rows])[:, 1])))
    return {
        "params": params.model_dump(),
        "metric": metric,
        "score": float(np.mean(scores)),
        "std": float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0,
        "standard_error": standard_error(scores),
        "fold_scores": scores,
        "folds": folds,
        "repeats": end - first,
        "rows": len(frame),
        "seconds": round(time.perf_counter() - started, 3),
    }


def score_item(
    train_dir: str | Path,
    contract_dir: str | Path,
    item: dict[str, Any],
    folds: int = 5,
    metric: str = "roc_auc",
    seed: int = 42,
) -> dict[str, Any]:
    """One rung item (components/tune/halving.py): cross-validate its candidate on its rows, or hand
    back a carried result once the search has decided."""
    if "carry" in item:
        return item["carry"]
    if "group" in item:  # rung 1's repetitions: several candidates in one task (halving.advance)
        group = [score_item(train_dir, contract_dir, one, folds, metric, seed) for one in item["group"]]
        return {"index": int(item["index"]), "group": group, "search": item["search"]}
    repeats = tuple(int(r) for r in item["repeats"]) if "repeats" in item else None
    result = cross_validate(
        train_dir,
        contract_dir,
        item["params"],
        folds=folds,
        metric=metric,
        seed=seed,
        rows=int(item["rows"]),
        repeats=repeats,  # type: ignore[arg-type]
    )
    if "earlier" in item:  # the later repetitions of a candidate scored on the first ones: pool them
        result = pooled(item["earlier"], result)
    return {"index": int(item["index"]), **result, "search": item["search"]}


def pooled(earlier: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """One candidate's result over the folds of both: its first repetitions, then the later ones."""
    scores = [float(s) for s in earlier["fold_scores"]] + later["fold_scores"]
    return {
        **later,
        "score": float(np.mean(scores)),
        "std": float(np.std(scores, ddof=1)),
        "standard_error": standard_error(scores),
        "fold_scores": scores,
        "repeats": int(earlier["repeats"]) + int(later["repeats"]),
        "seconds": round(float(earlier["seconds"]) + float(later["seconds"]), 3),
    }


def cv_repeats(contract_dir: str | Path, rows: int) -> int:
    """REPEATS for a training split under REPEAT_BELOW_ROWS rows (the whole split, not a halving rung's
    sample, so every rung of one search uses the same folds), else 1."""
    try:
        total = train_rows(contract_dir)
    except (OSError, ValueError, KeyError):
        total = rows  # a contract without preprocess's summary: the rows in hand
    return search_repeats(total)


def tune_in_one_task(
    train_dir: str | Path,
    contract_dir: str | Path,
    candidate_list: list[dict[str, Any]],
    folds: int = 5,
    metric: str = "roc_auc",
    seed: int = 42,
    halving_min_rows: int = halving.DEFAULT_MIN_ROWS,
    workers: int = 1,
) -> dict[str, Any]:
    """The whole search in one pod, rung after rung, with the same schedule and rule as the fanned-out
    DAG: for backends that cannot collect a ParallelFor's outputs, and for small tables. `workers` > 1
    scores a rung's items side by side in that many processes, as the fan-out's tasks would run; every
    item is scored as alone (same folds, same seeds), so the results are the same.

    Processes, not threads: a forest fit on a small table spends most of its time in scikit-learn's
    per-tree Python code, which holds the GIL, so two threads fitting forests took longer than one
    (bench: 16 fits of 100 trees on 640 rows, 3.2 s alone, 4.6 s in two threads). The pool is
    churnflow/core/workers.py's."""
    from functools import partial

    one = partial(_score_one, str(train_dir), str(contract_dir), folds, metric, seed)
    with process_pool(workers, WORKER_PRELOAD) as pool:

        def score_all(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
            if pool is None:
                return [one(item) for item in items]
            # a group (rung 1's repetitions, one task in the fan-out) is scored member by member, and
            # each member repetition by repetition, so that the pieces spread evenly over the workers
            members = [member for item in items for member in item.get("group", [item])]
            pieces = [_repetitions(member) for member in members]
            scored = iter(pool.map(one, [piece for parts in pieces for piece in parts]))  # in order
            results = iter(
                [
                    _pooled_pieces(member, [next(scored) for _ in parts])
                    for member, parts in zip(members, pieces, strict=True)
                ]
            )
            return [
                {"index": int(item["index"]), "group": [next(results) for _ in item["group"]], "search": item["search"]}
                if "group" in item
                else next(results)
                for item in items
            ]

        items = halving.start(candidate_list, train_rows(contract_dir), halving_min_rows)
        for _ in range(halving.RUNGS - 1):
            items = halving.advance(score_all(items))
        return halving.finish(score_all(items))


def _repetitions(member: dict[str, Any]) -> list[dict[str, Any]]:
    """A repeated candidate (rung 1) as one item per repetition, without its earlier folds; any other
    item as itself. Repetition r's folds do not depend on the others (cross_validate), so the pieces
    pooled in order are the candidate's result."""
    if "earlier" not in member or "repeats" not in member:
        return [member]
    first, end = (int(r) for r in member["repeats"])
    bare = {k: v for k, v in member.items() if k != "earlier"}
    return [{**bare, "repeats": [r, r + 1]} for r in range(first, end)]


def _pooled_pieces(member: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    """What score_item gives for `member`, from the results of its pieces (_repetitions)."""
    if "earlier" not in member or "repeats" not in member:
        return results[0]
    result = member["earlier"]
    for piece in results:
        result = pooled(result, piece)
    return result


def _score_one(
    train_dir: str, contract_dir: str, folds: int, metric: str, seed: int, item: dict[str, Any]
) -> dict[str, Any]:
    """score_item with the item last, so that a pool can map it (a module-level function pickles)."""
    return score_item(train_dir, contract_dir, item, folds, metric, seed)


def base_candidates(
    tune: bool,
    tuning_grid: str,
    *,
    n_estimators: int,
    max_depth: int,
    min_samples_leaf: int,
    max_features: str,
    class_weight: str,
    random_state: int,
) -> list[dict[str, Any]]:
    """The candidates from the pipeline's parameters (the base forest settings and the grid)."""
    from churnflow.core.hyperparameters import forest_params

    base = forest_params(
        n_estimators=n_estimators,
        max_depth=max_depth,
        min_samples_leaf=min_samples_leaf,
        max_features=max_features,
        class_weight=class_weight,
        random_state=random_state,
    )
    return candidates(base, tune, tuning_grid)


def selection_metrics(selection: dict[str, Any]) -> dict[str, float]:
    """What the KFP UI shows of a choice: every candidate's family, mean and spread, and the rule's numbers."""
    metric = selection["metric"]
    figures: dict[str, float] = {}
    for i, candidate in enumerate(selection["candidates"]):
        name = f"candidate_{i}_{candidate['params']['family']}_{candidate['metric']}"
        figures[name] = round(candidate["score"], 6)
        figures[f"{name}_std"] = round(candidate.get("std", 0.0), 6)
    if "halving" in selection:
        figures["tuning_rows"] = selection["halving"]["tuning_rows"]
        figures["halving_rungs"] = len(selection["halving"]["rungs"])
    figures[f"chosen_{metric}"] = round(selection["best_score"], 6)
    figures[f"highest_{metric}"] = round(selection["highest_score"], 6)
    figures["one_standard_error"] = round(selection["tolerance"], 6)
    return figures


def describe_selection(selection: dict[str, Any]) -> str:
    """One log line for the choice."""
    return (
        f"{selection['best']['family']} {selection['metric']}={selection['best_score']:.4f} "
        f"(highest {selection['highest_score']:.4f}, paired standard error {selection['tolerance']:.4f}) "
        f"of {len(selection['candidates'])} candidates{_rows(selection)}, with {selection['best']}"
    )


def _rows(selection: dict[str, Any]) -> str:
    search = selection.get("halving")
    if not search or len(search["rungs"]) < 2:
        return ""
    path = " → ".join(f"{len(r['candidates'])}@{r['rows']:,}" for r in search["rungs"])
    return f" after successive halving ({path} rows)"
