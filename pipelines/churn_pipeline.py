"""The pipeline's DAG: preprocess → tune → train → evaluate → deploy, with evaluation gating deployment.

Tuning is successive halving (components/tune/halving.py) in `RUNGS` fanned-out rungs of CV tasks:
candidates → ParallelFor(cv_score) → next_rung → ParallelFor(cv_score) → next_rung →
ParallelFor(cv_score) → select. A training split of at most `one_task_tuning_rows` rows (preprocess
returns its size) takes the other branch of a dsl.If/dsl.Else instead: tune_op runs the same search
in one task, because there each task's start-up costs more than the fits it would share out
(14 tuning tasks on 1,000 rows). dsl.OneOf hands train whichever choice was made.

This one function is what `churnflow compile` writes for Kubeflow and what `churnflow run` executes
locally through kfp.local; there is no second code path. For KFP backends older than 2.14 (no fan-in
of loop outputs) `training_pipeline` compiles the same function with tuning in one task instead.
"""

import contextvars
from typing import Any, NamedTuple

from kfp import dsl, kubernetes
from kfp.dsl import HTML, Artifact, Model

from churnflow.components.deploy.canary import DEFAULT_CANARY, NO_CANARY
from churnflow.components.deploy.component import deploy_op
from churnflow.components.deploy.inferenceservice import (
    DEFAULT_NAMESPACE,
    DEFAULT_SERVE_IMAGE,
    DEFAULT_STORAGE_SERVICE_ACCOUNT,
    SERVERLESS,
    STORE_SECRET,
)
from churnflow.components.deploy.kubernetes import READY_TIMEOUT_SECONDS
from churnflow.components.deploy.logic import RENDER
from churnflow.components.evaluate.component import evaluate_op
from churnflow.components.evaluate.gate import Gate
from churnflow.components.preprocess.component import preprocess_op
from churnflow.components.train.component import train_op
from churnflow.components.tune.component import candidates_op, cv_score_op, next_rung_op, select_params_op, tune_op
from churnflow.components.tune.halving import DEFAULT_MIN_ROWS, RUNGS
from churnflow.core.artifact import DEFAULT_MODEL_NAME
from churnflow.core.config import config_to_json, load_config
from churnflow.pipelines.resources import set_resources

PIPELINE_NAME = "churnflow-training"
PIPELINE_DESCRIPTION = "Train, evaluate and (if good enough) deploy the churn model."
DATA_SECRET = "churnflow-data"
DATA_SECRET_KEYS = {key: key for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")}
DEFAULT_DATASET_CONFIG = config_to_json(load_config(None))
DEFAULT_GATE = Gate()  # the evaluation gate's floors are declared once, on Gate
# Whether tuning fans out over pods and collects the scores (dsl.Collected, KFP backend 2.14+). KFP
# traces the pipeline function when it is decorated, so the choice is read at that moment.
_FAN_IN = contextvars.ContextVar("fan_in", default=True)
ONE_TASK_TUNING_ROWS = DEFAULT_MIN_ROWS
"""Training splits of at most this many rows are tuned in one task (tune_op), larger ones fanned out:
as many rows as halving's first rung, a split small enough to be one rung of a larger search."""


class PipelineOutputs(NamedTuple):
    """What a run hands back: the trained model, its evaluation report and model card (deployed or not)."""

    model: Model
    evaluation: Artifact
    model_card: HTML


def _training_dag(
    data_uri: str = "",
    dataset_config: str = DEFAULT_DATASET_CONFIG,
    synthetic_rows: int = 1000,
    seed: int = 42,
    test_size: float = 0.2,
    n_estimators: int = 100,
    max_depth: int = 0,
    min_samples_leaf: int = 1,
    max_features: str = "sqrt",
    class_weight: str = "",
    tune: bool = True,
    tuning_grid: str = "",
    tuning_metric: str = "roc_auc",
    cv_folds: int = 5,
    halving_min_rows: int = DEFAULT_MIN_ROWS,
    one_task_tuning_rows: int = ONE_TASK_TUNING_ROWS,
    calibration: str = "auto",
    threshold_goal: str = "f1",
    min_roc_auc: float = DEFAULT_GATE.min_roc_auc,
    min_f1: float = DEFAULT_GATE.min_f1,
    min_precision: float = DEFAULT_GATE.min_precision,
    max_regression: float = DEFAULT_GATE.max_regression,
    champion_metrics: str = "",
    model_name: str = DEFAULT_MODEL_NAME,
    namespace: str = DEFAULT_NAMESPACE,
    serve_image: str = DEFAULT_SERVE_IMAGE,
    local_release_dir: str = "",
    deploy_action: str = RENDER,
    canary_percent: int = NO_CANARY,
    ready_timeout_seconds: float = READY_TIMEOUT_SECONDS,
    store_secret: str = STORE_SECRET,
    data_secret: str = DATA_SECRET,
    storage_service_account: str = DEFAULT_STORAGE_SERVICE_ACCOUNT,
    deployment_mode: str = SERVERLESS,
    canary_bake_seconds: float = DEFAULT_CANARY.bake_seconds,
    prometheus_url: str = DEFAULT_CANARY.prometheus_url,
    canary_max_error_ratio_increase: float = DEFAULT_CANARY.max_error_ratio_increase,
    canary_max_p99_ratio: float = DEFAULT_CANARY.max_p99_ratio,
    canary_min_requests: int = DEFAULT_CANARY.min_requests,
) -> PipelineOutputs:
    preprocess = preprocess_op(
        data_uri=data_uri,
        dataset_config=dataset_config,
        synthetic_rows=synthetic_rows,
        seed=seed,
        test_size=test_size,
    )
    set_resources(preprocess, "compute")
    # Object-storage credentials and endpoint for data_uri, from a Secret (never parameters); kfp.local ignores it.
    kubernetes.use_secret_as_env(preprocess, secret_name=data_secret, secret_key_to_env=DATA_SECRET_KEYS)
    # Tuning fans out: one CV task per candidate (parallel pods on a cluster), then one choice.
    # tune=False is the seed-exact mode: the base settings only, no calibration, threshold 0.5.
    search = {  # what to search: the same for the fanned-out DAG and the one-task variant
        "tune": tune,
        "tuning_grid": tuning_grid,
        "n_estimators": n_estimators,
        "max_depth": max_depth,
        "min_samples_leaf": min_samples_leaf,
        "max_features": max_features,
        "class_weight": class_weight,
        "halving_min_rows": halving_min_rows,
    }
    if not _FAN_IN.get():  # backends before 2.14: every candidate scored in one task
        selection = _tune_in_one_task(preprocess, search, cv_folds, tuning_metric, seed).outputs["Output"]
    else:
        # A small training split is tuned in one task, decided by the DAG at run time: its fits take a
        # few seconds, less than the fan-out's 14 extra task start-ups. A larger one fans out.
        small = preprocess.outputs["Output"] <= one_task_tuning_rows
        with dsl.If(small, name="small-table-tune-in-one-task"):
            together = _tune_in_one_task(preprocess, search, cv_folds, tuning_metric, seed)
        with dsl.Else(name="large-table-fan-out"):
            fanned = _tune_fanned_out(preprocess, search, cv_folds, tuning_metric, seed)
        selection = dsl.OneOf(together.outputs["Output"], fanned.outputs["Output"])
    train = train_op(
        train_data=preprocess.outputs["train_data"],
        contract=preprocess.outputs["contract"],
        selection=selection,
        calibration=calibration,
        threshold_goal=threshold_goal,
        tune=tune,
        seed=seed,
        pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
    )
    set_resources(train, "compute")
    evaluate = evaluate_op(
        model=train.outputs["model"],
        test_data=preprocess.outputs["test_data"],
        min_roc_auc=min_roc_auc,
        min_f1=min_f1,
        min_precision=min_precision,
        max_regression=max_regression,
        champion_metrics=champion_metrics,
    )
    set_resources(evaluate, "compute")
    with dsl.If(evaluate.outputs["Output"] == True, name="model-is-good-enough"):  # noqa: E712
        deploy = deploy_op(
            model=train.outputs["model"],
            report=evaluate.outputs["report"],
            model_name=model_name,
            namespace=namespace,
            serve_image=serve_image,
            pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            local_release_dir=local_release_dir,
            deploy_action=deploy_action,
            canary_percent=canary_percent,
            ready_timeout_seconds=ready_timeout_seconds,
            storage_service_account=storage_service_account,
            deployment_mode=deployment_mode,
            store_secret=store_secret,  # a Secret's name: the store URL itself never is a parameter
            canary_bake_seconds=canary_bake_seconds,
            prometheus_url=prometheus_url,
            canary_max_error_ratio_increase=canary_max_error_ratio_increase,
            canary_max_p99_ratio=canary_max_p99_ratio,
            canary_min_requests=canary_min_requests,
        )
        # A re-run with the same inputs must roll out again, never be skipped as cached.
        deploy.set_caching_options(False)
        set_resources(deploy, "light")
    return PipelineOutputs(
        model=train.outputs["model"], evaluation=evaluate.outputs["report"], model_card=evaluate.outputs["model_card"]
    )


def _tune_in_one_task(
    preprocess: dsl.PipelineTask, search: dict[str, Any], folds: Any, metric: Any, seed: Any
) -> dsl.PipelineTask:
    """The whole search in one task (tune_op): every rung, every candidate, one after another."""
    selection = tune_op(
        train_data=preprocess.outputs["train_data"],
        contract=preprocess.outputs["contract"],
        **search,
        folds=folds,
        metric=metric,
        seed=seed,
    )
    set_resources(selection, "compute")
    return selection


def _tune_fanned_out(
    preprocess: dsl.PipelineTask, search: dict[str, Any], folds: Any, metric: Any, seed: Any
) -> dsl.PipelineTask:
    """The search fanned out: one CV task per candidate and rung (parallel pods on a cluster), collected
    by next_rung between rungs and by select_params at the end, which it returns."""
    rung = candidates_op(contract=preprocess.outputs["contract"], **search, random_state=seed)
    set_resources(rung, "light")
    for number in range(RUNGS):
        with dsl.ParallelFor(rung.output, name=f"cross-validate-rung-{number}") as candidate:
            scored = cv_score_op(
                train_data=preprocess.outputs["train_data"],
                contract=preprocess.outputs["contract"],
                candidate=candidate,
                folds=folds,
                metric=metric,
                seed=seed,
            )
            set_resources(scored, "compute")
        if number < RUNGS - 1:
            rung = next_rung_op(results=dsl.Collected(scored.output))
            set_resources(rung, "light")
    selection = select_params_op(results=dsl.Collected(scored.output))
    set_resources(selection, "light")
    return selection


churn_training_pipeline = dsl.pipeline(name=PIPELINE_NAME, description=PIPELINE_DESCRIPTION)(_training_dag)


def training_pipeline(backend: tuple[int, int] | None = None) -> Any:
    """The training pipeline for a KFP backend version (None: the newest, today's DAG).

    Before 2.14 a backend cannot collect a ParallelFor's outputs, so tuning runs as one task that
    cross-validates every candidate (same parameters, same selection, same outputs downstream)."""
    from churnflow.pipelines.backends import FEATURES

    # Built afresh each time, so the task resources in force (pipelines/resources.py) apply too.
    token = _FAN_IN.set(backend is None or backend >= FEATURES["collected"].needs)
    try:
        return dsl.pipeline(name=PIPELINE_NAME, description=PIPELINE_DESCRIPTION)(_training_dag)
    finally:
        _FAN_IN.reset(token)
