"""One released model behind every path: serving, `churnflow score` and the evaluate step answer the
same probability for the same rows, and each of them (and the drift check) refuses a tampered file.

Both facts follow from the structure (each path holds a churnflow.core.released_model.ReleasedModel);
these tests are what notices when a path grows its own loader or scorer again.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from churnflow.components.evaluate.logic import Gate, evaluate, score_split
from churnflow.components.preprocess.logic import TEST_FILE
from churnflow.components.train.logic import train
from churnflow.core.artifact import MODEL_FILE, ONNX_FILE, REFERENCE_FILE
from churnflow.core.contract import CONTRACT_FILE, FeatureContract
from churnflow.core.data import read_split
from churnflow.core.errors import ChurnflowError
from churnflow.core.hyperparameters import BoostingParams
from churnflow.core.released_model import ReleasedModel
from churnflow.monitoring.drift import run_check
from churnflow.predictor.model import ChurnModel
from churnflow.scoring.bulk import ROW_COLUMN, score_table

TOLERANCE = 1e-12


@pytest.fixture(scope="module", params=["forest", "boosting"])
def released(request: pytest.FixtureRequest, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's compiled forest, and a calibrated gradient-boosted model trained on the same splits."""
    if request.param == "forest":
        return model_dir
    root = model_dir.parent
    target = tmp_path_factory.mktemp("boosted") / "model"
    train(
        root / "train",
        root / "contract",
        target,
        BoostingParams(max_iter=40, max_leaf_nodes=15),
        calibration="sigmoid",
        threshold_goal="f1",
    )
    return target


def split_dir(model_dir: Path) -> Path:
    return model_dir.parent / "test"


def split_rows(model_dir: Path) -> pd.DataFrame:
    contract = FeatureContract.load(model_dir)
    return read_split(split_dir(model_dir) / TEST_FILE, contract.numeric, list(contract.categorical))


def serving_probability(directory: Path, frame: pd.DataFrame) -> np.ndarray:
    """What the predictor answers for the rows as v1 instances (blank values sent as JSON null)."""
    model = ChurnModel("churn", str(directory))
    assert model.load(), model.load_error
    contract = model.loaded.released.contract
    instances = [
        {c: (None if pd.isna(v) else v) for c, v in record.items() if c in contract.input_columns}
        for record in frame.to_dict("records")
    ]
    batch = model.predict(model.preprocess({"instances": instances}))
    return batch.probability


def bulk_probability(directory: Path, frame: pd.DataFrame, tmp_path: Path) -> np.ndarray:
    """What `churnflow score` writes for the rows, put back in their input order."""
    contract = FeatureContract.load(directory)
    columns = [c for c in contract.input_columns if c in frame.columns]
    source, output = tmp_path / "base.parquet", tmp_path / "scores.parquet"
    frame[columns].reset_index(drop=True).to_parquet(source)
    summary = score_table(str(directory), str(source), str(output), batch_rows=97, progress=False)
    assert summary.rows_scored == len(frame) and summary.rows_rejected == 0
    scores = pq.read_table(output).to_pandas().sort_values(ROW_COLUMN)
    assert scores[ROW_COLUMN].tolist() == list(range(len(frame)))
    return scores["probability"].to_numpy()


def test_serving_bulk_scoring_and_evaluation_give_the_same_probability(
    released: Path, model_dir: Path, tmp_path: Path
) -> None:
    frame = split_rows(model_dir)
    model = ReleasedModel.load(released)
    assert model.scorer.backend == "onnxruntime"  # the compiled forest scores on every path
    evaluated = score_split(model, split_dir(model_dir))
    served = serving_probability(released, frame)
    bulk = bulk_probability(released, frame, tmp_path)
    assert len(served) == len(bulk) == len(evaluated.probability) == len(frame)
    assert np.max(np.abs(served - evaluated.probability)) <= TOLERANCE
    assert np.max(np.abs(bulk - evaluated.probability)) <= TOLERANCE
    # and the report the gate reads is computed from those probabilities
    report = evaluate(released, split_dir(model_dir), Gate(min_roc_auc=0.0))
    assert report["metrics"]["rows"] == len(frame)
    churn = model.churn(served)
    assert report["metrics"]["confusion_matrix"][0][1] + report["metrics"]["confusion_matrix"][1][1] == churn.sum()


def _serving(directory: Path, model_dir: Path, tmp_path: Path) -> str:
    model = ChurnModel("churn", str(directory))
    assert not model.load()
    return model.load_error or ""


def _bulk(directory: Path, model_dir: Path, tmp_path: Path) -> str:
    source = tmp_path / "base.parquet"
    split_rows(model_dir).to_parquet(source)
    with pytest.raises(ChurnflowError) as refused:
        score_table(str(directory), str(source), str(tmp_path / "scores.parquet"), progress=False)
    return str(refused.value)


def _evaluate(directory: Path, model_dir: Path, tmp_path: Path) -> str:
    with pytest.raises(ChurnflowError) as refused:
        evaluate(directory, split_dir(model_dir), Gate())
    return str(refused.value)


def _drift(directory: Path, model_dir: Path, tmp_path: Path) -> str:
    with pytest.raises(ChurnflowError) as refused:
        run_check(f"sqlite:///{tmp_path / 'store.db'}", directory)
    return str(refused.value)


PATHS: dict[str, Callable[[Path, Path, Path], str]] = {
    "serving": _serving,
    "bulk": _bulk,
    "evaluate": _evaluate,
    "drift": _drift,
}


@pytest.mark.parametrize("name", [ONNX_FILE, MODEL_FILE, CONTRACT_FILE, REFERENCE_FILE])
@pytest.mark.parametrize("path", sorted(PATHS))
def test_every_path_refuses_a_tampered_file(path: str, name: str, model_dir: Path, tmp_path: Path) -> None:
    tampered = tmp_path / "model"
    shutil.copytree(model_dir, tampered)
    with open(tampered / name, "ab") as handle:
        handle.write(b" ")
    message = PATHS[path](tampered, model_dir, tmp_path)
    assert f"{name} SHA-256" in message and "refusing to load it" in message, message
