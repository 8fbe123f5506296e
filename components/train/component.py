"""KFP wrapper of the train step (logic in logic.py)."""

from kfp.dsl import Artifact, Dataset, Input, Model, Output

from churnflow.components.image import churnflow_component


@churnflow_component
def train_op(
    train_data: Input[Dataset],
    contract: Input[Artifact],
    n_estimators: int,
    max_depth: int,
    min_samples_leaf: int,
    max_features: str,
    class_weight: str,
    random_state: int,
    pipeline_run: str,
    model: Output[Model],
):
    """Fits the RandomForest and writes the model artifact directory (model, contract, metadata)."""
    from churnflow.components.train.logic import train
    from churnflow.hyperparameters import forest_params

    params = forest_params(
        n_estimators=n_estimators,
        max_depth=max_depth,
        min_samples_leaf=min_samples_leaf,
        max_features=max_features,
        class_weight=class_weight,
        random_state=random_state,
    )
    metadata = train(train_data.path, contract.path, model.path, params, pipeline_run=pipeline_run)
    model.metadata.update(
        {
            "framework": "scikit-learn",
            "model_version": metadata["model_version"],
            "sha256": metadata["files"]["model.joblib"],
            "compiled": metadata["compiled"]["format"] or "none",
        }
    )
