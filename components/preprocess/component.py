"""KFP wrapper of the preprocess step (logic in logic.py)."""

from kfp.dsl import Artifact, Dataset, Output

from churnflow.components.image import churnflow_component


@churnflow_component
def preprocess_op(
    data_uri: str,
    dataset_config: str,
    synthetic_rows: int,
    seed: int,
    test_size: float,
    train_data: Output[Dataset],
    test_data: Output[Dataset],
    contract: Output[Artifact],
) -> int:
    """Reads and validates the customer table (or makes a synthetic one), splits it, writes the contract.

    Returns the training split's row count: the pipeline's DAG chooses how to tune by it (one task for
    a small split, a fan-out of CV tasks for a large one)."""
    from churnflow.components.preprocess.logic import preprocess
    from churnflow.core.config import parse_config_text

    summary = preprocess(
        data_uri,
        parse_config_text(dataset_config, "parameter dataset_config"),
        train_data.path,
        test_data.path,
        contract.path,
        synthetic_rows=synthetic_rows,
        seed=seed,
        test_size=test_size,
    )
    train_data.metadata.update({"rows": summary.train_rows, "sha256": summary.data_sha256})
    test_data.metadata.update({"rows": summary.test_rows})
    print(f"preprocess: {summary}")
    return summary.train_rows
