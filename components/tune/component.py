"""KFP wrappers of the tuning steps (logic in logic.py): candidates → ParallelFor(cv_score) → select,
or, for KFP backends older than 2.14 (no fan-in of loop outputs), tune_op doing all three in one task."""

from typing import List  # noqa: UP035 - KFP reads typing.List annotations

from kfp.dsl import Artifact, Dataset, Input, Metrics, Output

from churnflow.components.image import churnflow_component


@churnflow_component
def candidates_op(
    tune: bool,
    tuning_grid: str,
    n_estimators: int,
    max_depth: int,
    min_samples_leaf: int,
    max_features: str,
    class_weight: str,
    random_state: int,
) -> List[dict]:  # noqa: UP006
    """The candidate settings to score: the grid over the base settings, or only the base when not tuning."""
    from churnflow.components.tune.logic import base_candidates

    return base_candidates(
        tune,
        tuning_grid,
        n_estimators=n_estimators,
        max_depth=max_depth,
        min_samples_leaf=min_samples_leaf,
        max_features=max_features,
        class_weight=class_weight,
        random_state=random_state,
    )


@churnflow_component
def cv_score_op(
    train_data: Input[Dataset],
    contract: Input[Artifact],
    candidate: dict,
    folds: int,
    metric: str,
    seed: int,
) -> str:
    """Stratified k-fold CV score (mean and spread) of one candidate on the training split (JSON)."""
    import json

    from churnflow.components.tune.logic import cross_validate

    result = cross_validate(train_data.path, contract.path, candidate, folds=folds, metric=metric, seed=seed)
    print(f"cv_score: {result['metric']}={result['score']:.4f} ± {result['std']:.4f} (sd) for {result['params']}")
    return json.dumps(result)


@churnflow_component
def select_params_op(results: List[str], tuning_metrics: Output[Metrics]) -> str:  # noqa: UP006
    """Chooses by the one-standard-error rule; logs every candidate's CV mean and spread as KFP metrics."""
    import json

    from churnflow.components.tune.logic import describe_selection, select_best, selection_metrics

    selection = select_best([json.loads(r) for r in results])
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
    tuning_metrics: Output[Metrics],
) -> str:
    """Scores every candidate by CV in this one pod and picks by the same rule (same JSON and metrics as
    select_params_op)."""
    import json

    from churnflow.components.tune.logic import (
        base_candidates,
        describe_selection,
        selection_metrics,
        tune_in_one_task,
    )

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
    selection = tune_in_one_task(train_data.path, contract.path, listed, folds=folds, metric=metric, seed=seed)
    for name, value in selection_metrics(selection).items():
        tuning_metrics.log_metric(name, value)
    print(f"tune: {describe_selection(selection)}")
    return json.dumps(selection)
