"""Issue 23 item 1: bulk scoring on every core, with reading, scoring and writing overlapped.

More threads must not change an answer: bulk probabilities with N threads equal serving's (one thread
per request) within 1e-12 for the forest and the gradient-boosted model, `--threads 1` and `--threads 2`
write the same file (ranks too), and an error in any stage is still one line and leaves no thread behind.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import churnflow.scoring.bulk as bulk
from churnflow.components.train.logic import train
from churnflow.core.contract import FeatureContract
from churnflow.core.errors import ChurnflowError
from churnflow.core.hyperparameters import BoostingParams
from churnflow.core.released_model import ReleasedModel
from churnflow.core.synthetic import synthetic_customers
from churnflow.predictor.model import ChurnModel
from churnflow.scoring.bulk import ROW_COLUMN, default_threads, score_table

from .conftest import CHURNFLOW

TOLERANCE = 1e-12
ROWS = 30_000
"""Enough rows per batch that ONNX Runtime and OpenMP really split the work between threads."""


@pytest.fixture(scope="module", params=["forest", "boosting"])
def released(request: pytest.FixtureRequest, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's compiled forest, and a gradient-boosted model trained on the same splits."""
    if request.param == "forest":
        return model_dir
    root = model_dir.parent
    target = tmp_path_factory.mktemp("boosted-threads") / "model"
    train(root / "train", root / "contract", target, BoostingParams(max_iter=40, max_leaf_nodes=15))
    return target


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("base") / "base.parquet"
    synthetic_customers(ROWS, 11).drop(columns=["churn", "customer_id"], errors="ignore").to_parquet(path)
    return path


def serving_probability(directory: Path, frame: pd.DataFrame) -> np.ndarray:
    """What the predictor answers (ChurnModel, one thread per request) for the rows as v1 instances."""
    model = ChurnModel("churn", str(directory))
    assert model.load(), model.load_error
    assert model.loaded.released.scorer.threads == 1  # serving stays on one thread per request
    contract = model.loaded.released.contract
    records = frame[contract.input_columns].to_dict("records")
    return np.concatenate(
        [
            model.predict(model.preprocess({"instances": records[i : i + 10_000]})).probability
            for i in range(0, len(records), 10_000)
        ]
    )


def bulk_scores(directory: Path, source: Path, output: Path, threads: int, **options) -> pd.DataFrame:
    summary = score_table(str(directory), str(source), str(output), batch_rows=7_000, progress=False, threads=threads)
    assert summary.rows_scored == ROWS, summary
    return pq.read_table(output).to_pandas()


@pytest.mark.slow
def test_bulk_on_two_threads_answers_what_serving_answers(released: Path, base: Path, tmp_path: Path) -> None:
    model = ReleasedModel.load(released, threads=2)
    assert model.scorer.backend == "onnxruntime"
    frame = pd.read_parquet(base)
    served = serving_probability(released, frame)
    scores = bulk_scores(released, base, tmp_path / "scores.parquet", threads=2).sort_values(ROW_COLUMN)
    assert scores[ROW_COLUMN].tolist() == list(range(ROWS))
    difference = np.max(np.abs(scores["probability"].to_numpy() - served))
    assert difference <= TOLERANCE, difference


@pytest.mark.slow
def test_bulk_on_scikit_learn_answers_what_serving_answers(
    model_dir: Path, base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large forest table is scored by scikit-learn (bulk.SKLEARN_MIN_ROWS): still serving's answer
    (ONNX Runtime) within 1e-12, and the same file on one thread and on two."""
    monkeypatch.setattr(bulk, "SKLEARN_MIN_ROWS", ROWS)
    frame = pd.read_parquet(base)
    served = serving_probability(model_dir, frame)
    summaries = []
    for threads in (1, 2):
        summaries.append(score_table(str(model_dir), str(base), str(tmp_path / f"{threads}.parquet"), threads=threads))
        assert summaries[-1].evaluator == f"scikit-learn on {threads} thread(s)"
    one, two = (pq.read_table(tmp_path / f"{threads}.parquet").to_pandas() for threads in (1, 2))
    pd.testing.assert_frame_equal(one, two, check_exact=True)
    scores = two.sort_values(ROW_COLUMN)
    difference = np.max(np.abs(scores["probability"].to_numpy() - served))
    assert difference <= TOLERANCE, difference


@pytest.mark.slow
def test_one_and_two_threads_write_the_same_ranked_file(released: Path, base: Path, tmp_path: Path) -> None:
    one = bulk_scores(released, base, tmp_path / "one.parquet", threads=1)
    two = bulk_scores(released, base, tmp_path / "two.parquet", threads=2)
    pd.testing.assert_frame_equal(one, two, check_exact=True)
    assert one["rank"].tolist() == list(range(1, ROWS + 1))


def test_scikit_learn_on_two_threads_answers_what_one_thread_answers(released: Path, base: Path) -> None:
    """When scikit-learn scores (no compiled model), its threads (n_jobs, OpenMP) keep the answer."""
    contract = FeatureContract.load(released)
    from churnflow.scoring.arrow_encoding import BatchEncoder

    features = BatchEncoder(contract).encode(pq.read_table(base).to_batches(max_chunksize=ROWS)[0]).features
    one = ReleasedModel.load(released, prefer_compiled=False, threads=1)
    two = ReleasedModel.load(released, prefer_compiled=False, threads=2)
    assert two.scorer.backend == "scikit-learn"
    difference = np.max(np.abs(one.probability(features) - two.probability(features)))
    assert difference <= TOLERANCE, difference


def _stage_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(("churnflow-score", "churnflow-evaluate"))]


def test_a_reading_error_is_one_line_and_leaves_no_thread(model_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "base"
    source.mkdir()
    frame = synthetic_customers(3_000, 4)
    frame.to_csv(source / "part-0.csv", index=False)
    bad = frame.to_csv(index=False) + "1,2,3\n"  # a short row, read after part-0 was scored
    (source / "part-1.csv").write_text(bad)
    with pytest.raises(ChurnflowError, match=r"^data .*base: cannot read it \(.*\)$") as error:
        score_table(str(model_dir), str(source), str(tmp_path / "s.parquet"), batch_rows=500, threads=2)
    assert "\n" not in str(error.value)
    assert _stage_threads() == []


def test_a_writing_error_is_one_line_and_leaves_no_thread(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "base.parquet"
    synthetic_customers(3_000, 4).to_parquet(source)

    def full_disk(*args, **kwargs) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bulk.pq, "write_table", full_disk)
    with pytest.raises(ChurnflowError, match=r"^sorted runs: cannot write them \(.*No space left on device\)$"):
        score_table(str(model_dir), str(source), str(tmp_path / "s.parquet"), batch_rows=500, threads=2)
    assert _stage_threads() == []


def test_a_scoring_error_stops_the_stages(model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An error (or Ctrl-C) in the scoring thread stops the reader and writer too, and cleans the runs."""
    source = tmp_path / "base.parquet"
    synthetic_customers(3_000, 4).to_parquet(source)
    model = ReleasedModel.load(model_dir, threads=2)
    calls = []

    def interrupted(features: np.ndarray) -> np.ndarray:
        calls.append(len(features))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return np.full(len(features), 0.5)

    monkeypatch.setattr(model.scorer, "probability", interrupted)
    runs_before = set(Path(bulk.tempfile.gettempdir()).glob("churnflow-score-*"))
    with pytest.raises(KeyboardInterrupt):
        score_table(str(model_dir), str(source), str(tmp_path / "s.parquet"), batch_rows=500, model=model)
    assert _stage_threads() == []
    assert set(Path(bulk.tempfile.gettempdir()).glob("churnflow-score-*")) == runs_before


def test_threads_option_is_checked_in_one_line(model_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "base.parquet"
    synthetic_customers(50, 4).to_parquet(source)
    result = subprocess.run(
        [CHURNFLOW, "score", "--model-dir", str(model_dir), "--data", str(source), "--threads", "0"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode != 0
    assert result.stderr.strip() == "churnflow: error: --threads: expected a positive number, got 0", result.stderr


def test_default_threads_follow_affinity_and_the_cgroup_quota(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cores = default_threads(tmp_path / "absent")
    assert cores >= 1
    cpu_max.write_text("max 100000\n")
    assert default_threads(cpu_max) == cores
    cpu_max.write_text("50000 100000\n")  # half a core: still one thread
    assert default_threads(cpu_max) == 1
    cpu_max.write_text(f"{150000 * cores} 100000\n")  # more quota than cores: the cores
    assert default_threads(cpu_max) == cores


def test_small_row_groups_are_joined_into_whole_batches(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parquet yields at most a row group per batch: 100-row groups must still make 1,000-row runs
    (10M rows in 25,000-row groups made 400 runs, a 1.3 GiB merge and 4x the CPU)."""
    source = tmp_path / "base.parquet"
    pq.write_table(pa.Table.from_pandas(synthetic_customers(3_000, 4)), source, row_group_size=100)
    runs: list[int] = []
    merge = bulk.merge_runs

    def counting(paths, *args, **kwargs):
        runs.extend(pq.ParquetFile(path).metadata.num_rows for path in paths)
        return merge(paths, *args, **kwargs)

    monkeypatch.setattr(bulk, "merge_runs", counting)
    summary = score_table(str(model_dir), str(source), str(tmp_path / "s.parquet"), batch_rows=1_000, threads=2)
    assert summary.rows_scored == 3_000
    assert runs == [1_000, 1_000, 1_000]
