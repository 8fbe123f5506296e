"""Issue 23 item 1: `churnflow score` holds a few batches, whatever the table size, and loads light.

10M rows peaked at 1.41 GiB RSS: Arrow's dataset scanner read a whole 5M-row Parquet file ahead of the
scoring (650 MiB of Arrow memory), the CSV reader read ahead many 12.8 MB blocks, and the merge's
Parquet readers pre-buffered every run whole. These tests measure Arrow's own allocation counter
(pyarrow.total_allocated_bytes: tracemalloc does not see Arrow) while the stages are slow consumers,
which is when read-ahead fills up.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import churnflow.scoring.bulk as bulk
from churnflow.core.released_model import ReleasedModel
from churnflow.core.synthetic import synthetic_customers
from churnflow.scoring.ranking import merge_runs, sort_run

ROWS = 400_000
BATCH = 20_000
COLUMNS = ["customer_id", "tenure", "contract_type"]


def _table(rows: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "customer_id": pa.array([f"C{i:09d}" for i in range(rows)]),
            "tenure": rng.integers(0, 72, rows),
            "contract_type": pa.array(rng.choice(["Month-to-month", "One year", "Two year"], rows)),
        }
    )


def _peak_while_reading(path: Path, columns: list[str]) -> tuple[int, int, int]:
    """(rows read, peak Arrow bytes, bytes of one batch) reading `path` as `churnflow score` does, slowly."""
    dataset, _ = bulk.open_table(str(path), columns, BATCH)
    start = pa.total_allocated_bytes()
    peak, rows, one = 0, 0, 0
    for batch in bulk._batches(dataset, columns, BATCH, str(path)):
        time.sleep(0.01)  # a slow consumer: read-ahead fills whatever room it has
        rows += batch.num_rows
        one = max(one, batch.nbytes)
        peak = max(peak, pa.total_allocated_bytes() - start)
    return rows, peak, one


def test_parquet_is_read_a_row_group_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "base.parquet"
    pq.write_table(_table(ROWS), path, row_group_size=BATCH)
    rows, peak, one = _peak_while_reading(path, COLUMNS)
    assert rows == ROWS
    # the batch being handed over and the row group being read; the whole file is 20 batches
    assert peak <= 4 * one, f"{peak / 2**20:.1f} MiB of Arrow memory for {one / 2**20:.1f} MiB batches"


def test_csv_read_ahead_is_a_few_small_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Arrow's CSV reader reads ahead a few dozen blocks whatever the consumer does, so the blocks are
    small: 64 KiB here (2 MiB in use), where 1.28 MiB blocks (64 bytes a row) read this whole file ahead."""
    path = tmp_path / "base.csv"
    pacsv.write_csv(_table(3 * ROWS), path)
    monkeypatch.setattr(bulk, "CSV_BLOCK", 1 << 16)
    rows, peak, one = _peak_while_reading(path, COLUMNS)
    assert rows == 3 * ROWS
    # the file is 60 batches; a batch being joined, one handed over, and the blocks read ahead
    assert peak <= 10 * one, f"{peak / 2**20:.1f} MiB of Arrow memory for {one / 2**20:.1f} MiB batches"


def test_batches_keep_the_columns_order_whatever_the_file_order(tmp_path: Path) -> None:
    """Files are read one by one; a file with its columns in another order still joins the batches."""
    source = tmp_path / "base"
    source.mkdir()
    table = _table(30)
    pq.write_table(table, source / "part-0.parquet")
    pq.write_table(table.select(["contract_type", "customer_id", "tenure"]), source / "part-1.parquet")
    dataset, _ = bulk.open_table(str(source), COLUMNS, 1000)
    batches = list(bulk._batches(dataset, COLUMNS, 1000, str(source)))
    assert [b.num_rows for b in batches] == [60]
    assert batches[0].schema.names == COLUMNS


def test_a_file_missing_a_column_is_named_in_one_line(tmp_path: Path) -> None:
    source = tmp_path / "base"
    source.mkdir()
    pq.write_table(_table(30), source / "part-0.parquet")
    pq.write_table(_table(30).drop_columns(["tenure"]), source / "part-1.parquet")
    dataset, _ = bulk.open_table(str(source), COLUMNS, 1000)
    with pytest.raises(bulk.ChurnflowError, match=r"^data .*part-1\.parquet: required column\(s\) 'tenure' not in"):
        list(bulk._batches(dataset, COLUMNS, 1000, str(source)))


def test_the_merge_holds_a_row_group_per_run_not_the_runs(tmp_path: Path) -> None:
    runs = []
    for index in range(20):
        table = _table(BATCH, seed=index).append_column(
            "value_at_risk", pa.array(np.random.default_rng(index).random(BATCH))
        )
        runs.append(tmp_path / f"run-{index}.parquet")
        pq.write_table(sort_run(table), runs[-1], row_group_size=1_000)
    metadata = [pq.ParquetFile(run).metadata for run in runs]
    whole = sum(m.row_group(g).total_byte_size for m in metadata for g in range(m.num_row_groups))  # decoded size
    start = pa.total_allocated_bytes()
    peak = [0]

    def write(table: pa.Table) -> None:
        peak[0] = max(peak[0], pa.total_allocated_bytes() - start)

    assert merge_runs(runs, write, chunk_rows=BATCH) == 20 * BATCH
    assert peak[0] <= whole / 2, f"{peak[0] / 2**20:.1f} MiB of Arrow memory for {whole / 2**20:.1f} MiB of runs"


def test_the_evaluator_follows_the_family_and_the_table_size() -> None:
    """scikit-learn's forest is a few per cent faster per row but costs 0.8 CPU-seconds to import."""
    assert bulk.bulk_evaluator("random_forest", bulk.SKLEARN_MIN_ROWS) == "scikit-learn"
    assert bulk.bulk_evaluator("random_forest", bulk.SKLEARN_MIN_ROWS - 1) == "onnxruntime"
    assert bulk.bulk_evaluator("random_forest", None) == "onnxruntime"  # CSV: no row count up front
    assert bulk.bulk_evaluator("hist_gradient_boosting", 10**9) == "onnxruntime"
    assert bulk.bulk_evaluator(None, 10**9) == "onnxruntime"


def test_a_large_forest_table_is_scored_by_scikit_learn(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(tests/test_bulk_threads.py checks those probabilities against serving's.)"""
    source = tmp_path / "base.parquet"
    synthetic_customers(2_000, 4).to_parquet(source)
    assert bulk.score_table(str(model_dir), str(source), str(tmp_path / "a.parquet")).evaluator.startswith(
        "onnxruntime"
    )
    monkeypatch.setattr(bulk, "SKLEARN_MIN_ROWS", 2_000)
    summary = bulk.score_table(str(model_dir), str(source), str(tmp_path / "b.parquet"), threads=2)
    assert summary.evaluator == "scikit-learn on 2 thread(s)"
    assert ReleasedModel.load(model_dir).scorer.backend == "onnxruntime"  # serving keeps the compiled model


def test_loading_a_compiled_model_imports_neither_scikit_learn_nor_scipy(model_dir: Path) -> None:
    """A second of imports per `churnflow score` run (and serving start) went to scikit-learn and scipy,
    pulled in by the calibration, threshold and explanation modules though only training uses them."""
    code = (
        "import sys; from churnflow.core.released_model import ReleasedModel; import churnflow.scoring.bulk; "
        f"m = ReleasedModel.load({str(model_dir)!r}); assert m.scorer.backend == 'onnxruntime'; "
        "print(sorted({n.split('.')[0] for n in sys.modules} & {'sklearn', 'scipy'}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
