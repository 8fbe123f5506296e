"""KFP wrappers of the tuning steps (logic in logic.py and halving.py): candidates → ParallelFor(cv_score)
→ next_rung → ParallelFor(cv_score) → next_rung → ParallelFor(cv_score) → select, or, for KFP backends
older than 2.14 (no fan-in of loop outputs), tune_op doing all of it in one task."""

from typing import List  # noqa: UP035 - KFP reads typing.List annotations

from kfp.dsl import Artifact, Dataset, Input, Metrics, Output

from churnflow.components.image import churnflow_component


@churnflow_component
def candidates_op(
    contract: Input[Artifact],
    tune: bool,
    tuning_grid: str,
    n_estimators: int,
    max_depth: int,
    min_samples_leaf: int,
    max_features: str,
    class_weight: str,
    random_state: int,
    halving_min_rows: int,
) -> List[dict]:  # noqa: UP006
    """The candidate settings (the grid over the base settings, or only the base when not tuning) as
    rung 0's items, each carrying the search's schedule (rows per rung, from the split's size)."""
    from churnflow.components.preprocess.outputs import train_rows
    from churnflow.components.tune import halving
    from churnflow.components.tune.logic import base_candidates

    listed = base_candidates(
        tune,
        tuning_grid,
        n_estimators=n_estimators,
        max_depth=max_depth,
        min_samples_leaf=min_samples_leaf,
        max_features=max_features,
        class_weight=class_weight,
        random_state=random_state,
    )
    items = halving.start(listed, train_rows(contract.path), halving_min_rows)
    print(f"candidates: {len(items)}, rows per rung {items[0]['search']['schedule']}")
    return items


@churnflow_component
def next_rung_op(results: List[str]) -> List[dict]:  # noqa: UP006
    """Keeps the best third of a rung (and its one-standard-error choice) for the next, larger rung."""
    import json

    from churnflow.components.tune import halving

    items = halving.advance([json.loads(r) for r in results])
    if "group" in items[0]:
        print(f"next rung: more folds for {len(items[0]['group'])} candidate(s) within the noise, in one task")
    else:
        print(f"next rung: {'decided, carried' if 'carry' in items[0] else 'scoring'} {len(items)} candidate(s)")
    return items


@churnflow_component
def cv_score_op(
    train_data: Input[Dataset],
    contract: Input[Artifact],
    candidate: dict,
    folds: int,
    metric: str,
    seed: int,
) -> str:
    """Stratified k-fold CV score (mean and spread) of one rung item: a candidate on a prefix of the
    training split, a group of candidates' later repetitions (rung 1 on a small table), or a result
    carried through once the search has decided (JSON)."""
    import json

    from churnflow.components.tune.logic import score_item

    result = score_item(train_data.path, contract.path, candidate, folds=folds, metric=metric, seed=seed)
    for one in result.get("group", [result]):  # a group: rung 1's repetitions, several candidates
        print(
            f"cv_score: {one['metric']}={one['score']:.4f} ± {one['std']:.4f} (sd) on {one['rows']} rows, "
            f"{len(one['fold_scores'])} folds{' (carried)' if 'carry' in candidate else ''} for {one['params']}"
        )
    return json.dumps(result)


@churnflow_component
def select_params_op(results: List[str], tuning_metrics: Output[Metrics]) -> str:  # noqa: UP006
    """Chooses by the one-standard-error rule; logs every candidate's CV mean and spread as KFP metrics."""
    import json

    from churnflow.components.tune.halving import finish
    from churnflow.components.tune.logic import describe_selection, selection_metrics

    selection = finish([json.loads(r) for r in results])
    for name, value in selection_metrics(selection).items():
        tuning_metrics.log_metric(name, value)
    print(f"select: {describe_selection(selection)}")
    return json.dumps(selection)


@churnflow_component
def tune_op(
    train_data: Input[Dataset],
    contract: Input[Artifact],
    tune: bool,
    tuning_grid: str,
    n_estimators: int,
    max_depth: int,
    min_samples_leaf: int,
    max_features: str,
    class_weight: str,
    folds: int,
    metric: str,
    seed: int,
    halving_min_rows: int,
    tuning_metrics: Output[Metrics],
) -> str:
    """Runs the whole search (every rung, every candidate) in this one pod and picks by the same rule
    (same JSON and metrics as select_params_op). It never runs beside a sibling task, so the share of
    the cores `churnflow run` gives loop tasks (LOOP_THREADS_ENV) is not its own: it takes them all. On
    a small split (where fits are short and memory no concern) a rung's candidates run side by side,
    one core each, as the fan-out's tasks would; on a large one each fit takes every core."""
    import json
    import os

    from churnflow.components.preprocess.outputs import train_rows
    from churnflow.components.tune.selection import REPEAT_BELOW_ROWS
    from churnflow.core.workers import side_by_side, start_server

    workers = side_by_side(train_rows(contract.path), REPEAT_BELOW_ROWS)
    os.environ.pop("CHURNFLOW_LOOP_THREADS", None)  # churnflow.core.hyperparameters.LOOP_THREADS_ENV
    if workers > 1:
        os.environ["CHURNFLOW_LOOP_THREADS"] = "1"  # each fit one core: the candidates share them
        start_server(["churnflow.components.tune.logic"])  # imports the fitting stack beside this task

    from churnflow.components.tune.logic import base_candidates, describe_selection, selection_metrics, tune_in_one_task

    listed = base_candidates(
        tune,
        tuning_grid,
        n_estimators=n_estimators,
        max_depth=max_depth,
        min_samples_leaf=min_samples_leaf,
        max_features=max_features,
        class_weight=class_weight,
        random_state=seed,
    )
    selection = tune_in_one_task(
        train_data.path,
        contract.path,
        listed,
        folds=folds,
        metric=metric,
        seed=seed,
        halving_min_rows=halving_min_rows,
        workers=workers,
    )
    for name, value in selection_metrics(selection).items():
        tuning_metrics.log_metric(name, value)
    print(f"tune: {describe_selection(selection)}")
    return json.dumps(selection)
