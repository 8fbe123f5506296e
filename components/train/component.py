"""KFP wrapper of the train step (logic in logic.py)."""

from kfp.dsl import Artifact, Dataset, Input, Model, Output

from churnflow.components.image import churnflow_component


@churnflow_component
def train_op(
    train_data: Input[Dataset],
    contract: Input[Artifact],
    selection: str,
    calibration: str,
    threshold_goal: str,
    tune: bool,
    seed: int,
    pipeline_run: str,
    model: Output[Model],
):
    """Fits the chosen model (forest or boosted trees), calibrates it, picks the threshold, writes the artifact.

    With tune=False (seed-exact mode) calibration is off and the threshold is 0.5, whatever was asked.
    """
    import json

    from churnflow.components.preprocess.outputs import train_rows
    from churnflow.core.hyperparameters import ONE_THREAD_FOREST_ROWS
    from churnflow.core.workers import side_by_side, start_server

    if tune and side_by_side(train_rows(contract.path), ONE_THREAD_FOREST_ROWS) > 1:
        start_server(["churnflow.components.train.logic"])  # the fits' workers import beside this task

    from churnflow.components.train.logic import train
    from churnflow.core.hyperparameters import model_params

    tuning = json.loads(selection)
    metadata = train(
        train_data.path,
        contract.path,
        model.path,
        model_params(**tuning["best"]),
        pipeline_run=pipeline_run,
        calibration=calibration if tune else "none",
        threshold_goal=threshold_goal if tune else "0.5",
        tuning=tuning,
        seed=seed,
    )
    model.metadata.update(
        {
            "framework": "scikit-learn",
            "algorithm": metadata["algorithm"],
            "model_version": metadata["model_version"],
            "sha256": metadata["files"]["model.joblib"],
            "compiled": metadata["compiled"]["format"] or "none",
            "calibration": metadata["calibration"]["method"],
            "threshold": metadata["threshold"]["threshold"],
        }
    )
