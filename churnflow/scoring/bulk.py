"""`churnflow score`: the whole customer base through the released model, in bounded memory.

    dataset (CSV blocks or Parquet row groups, pyarrow streaming)
      → BatchEncoder (the one encoding; unreadable rows → rejects file with field and reason)
      → ReleasedModel (serving's scorer, calibrator and threshold rule) → probability, churn, value at risk
      → a sorted run per batch on local disk → k-way merge → output with rank (1 = most value at risk)

Probabilities equal what `churnflow serve` answers for the same row: the same ReleasedModel
(churnflow/core/released_model.py) with its contract, compiled forest and calibrator.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from queue import Empty, Full, Queue
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from churnflow.core.artifact import MODEL_FILE
from churnflow.core.config import DatasetConfig
from churnflow.core.data import columns_hint
from churnflow.core.errors import ChurnflowError
from churnflow.core.released_model import ReleasedModel
from churnflow.core.scorer import Scorer
from churnflow.core.storage import filesystem
from churnflow.scoring.arrow_encoding import BatchEncoder
from churnflow.scoring.ranking import merge_runs, sort_run

log = logging.getLogger("churnflow.scoring.bulk")

DEFAULT_BATCH_ROWS = 200_000
RUN_ROW_GROUP = 16_384
"""Row groups of the sorted runs: small, so the merge holds a few of them per run, not whole batches."""
CSV_BLOCK = 1 << 21
"""Bytes per CSV block (about 50,000 rows of the classic table): Arrow's CSV reader reads ahead several
blocks while a batch is scored, so bigger blocks hold more (12.8 MiB blocks: 400 MiB of read-ahead)."""
QUEUE_DEPTH = 2
"""Batches waiting between two stages (encoded → scoring, scored → run writer): what overlap costs in memory."""
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
FORMATS = ("parquet", "csv")
ROW_COLUMN = "row"
"""Position of the row in the input (0-based, files in name order), written when the config has no id."""
FASTEST_EXACT = {"random_forest": "scikit-learn", "hist_gradient_boosting": "onnxruntime"}
"""The quickest evaluator per model family among those equal to serving's within 1e-12 (the compile step
checks ONNX Runtime against scikit-learn; both are split by rows, see Scorer.probability). Measured by
bench/score_bench.py (its `families` figures): the fully grown forest runs 5-15% more rows per CPU-second
in scikit-learn's predict_proba than in ONNX Runtime's TreeEnsemble; ONNX Runtime runs gradient boosting
about 6x faster than scikit-learn. Any other family: the compiled model."""
SKLEARN_MIN_ROWS = 2_000_000
"""Rows from which scikit-learn's few per cent pay for importing it (0.8 CPU-seconds: sklearn.ensemble
and scipy) and unpickling the forest; below, or when the row count is not known up front (CSV), the
compiled model that is already loaded scores."""
VALUE_NOTE_NONE = "no value configured: value_at_risk = probability × 1 (set `value` in the dataset config)"


@dataclass
class ScoreSummary:
    """What one scoring run did; printed by the CLI and logged as metrics by the pipeline."""

    rows_read: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    reject_reasons: Counter = field(default_factory=Counter)
    unseen: Counter = field(default_factory=Counter)
    missing: Counter = field(default_factory=Counter)
    filled: Counter = field(default_factory=Counter)
    """blank numeric cells per column, scored as the training median"""
    total_value_at_risk: float = 0.0
    predicted_churners: int = 0
    seconds: float = 0.0
    value_note: str = ""
    output: str = ""
    rejects: str = ""
    evaluator: str = ""
    """what scored: "onnxruntime" or "scikit-learn", and on how many threads"""

    def to_json(self) -> dict[str, Any]:
        return {
            "rows_read": self.rows_read,
            "rows_scored": self.rows_scored,
            "rows_rejected": self.rows_rejected,
            "reject_reasons": dict(self.reject_reasons),
            "unseen_levels": dict(self.unseen),
            "missing_levels": dict(self.missing),
            "filled_blanks": dict(self.filled),
            "total_value_at_risk": self.total_value_at_risk,
            "predicted_churners": self.predicted_churners,
            "seconds": self.seconds,
            "value_note": self.value_note,
            "output": self.output,
            "rejects": self.rejects,
            "evaluator": self.evaluator,
        }


# -- input ----------------------------------------------------------------------------------------


def _format_of(names: list[str], uri: str) -> str:
    kinds = set()
    for name in names:
        lower = name.lower()
        if lower.endswith((".parquet", ".pq", ".parq")):
            kinds.add("parquet")
        elif lower.endswith((".csv", ".csv.gz", ".csv.bz2", ".csv.zst")):
            kinds.add("csv")
    if len(kinds) != 1:
        found = "no .csv or .parquet files" if not kinds else "both CSV and Parquet files"
        raise ChurnflowError(f"data {uri}: expected CSV (.csv) or Parquet (.parquet) files, found {found}")
    return kinds.pop()


def open_table(uri: str, columns: list[str], batch_rows: int, fmt: str | None = None) -> tuple[ds.Dataset, str]:
    """A pyarrow dataset over one file, a directory or a prefix; checks the required columns exist.

    The format comes from the file names (.csv, .parquet) unless `fmt` says it."""
    fs, path = filesystem(uri)
    try:
        if fs.isdir(path):
            names = sorted(
                name for name in fs.find(path) if not Path(name).name.startswith(("_", ".")) and not name.endswith("/")
            )
        elif fs.isfile(path):
            names = [path]
        else:
            raise ChurnflowError(f"data {uri}: no such file or directory")
    except OSError as error:
        raise ChurnflowError(f"data {uri}: cannot read it ({error})") from None
    kind = fmt or _format_of(names, uri)
    if fmt is None:
        names = [n for n in names if _format_of([n], uri) == kind]
    if kind == "csv":
        file_format: Any = ds.CsvFileFormat(
            read_options=pacsv.ReadOptions(block_size=max(1 << 20, batch_rows * 64)),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in columns},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    else:
        file_format = ds.ParquetFileFormat()
    try:
        dataset = ds.dataset(names, filesystem=fs, format=file_format)
    except (pa.ArrowInvalid, OSError) as error:
        raise ChurnflowError(f"data {uri}: not a readable {kind} table ({_first_line(error)})") from None
    missing = [c for c in columns if c not in dataset.schema.names]
    if missing:
        raise ChurnflowError(
            f"data {uri}: required column(s) {', '.join(map(repr, missing))} not in the table "
            f"({columns_hint(missing, list(dataset.schema.names))})"
        )
    return dataset, kind


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


# -- output ---------------------------------------------------------------------------------------


class TableSink:
    """Streams tables to a Parquet or CSV file at a path or URI."""

    def __init__(self, uri: str, fmt: str, what: str = "output") -> None:
        self.uri, self.fmt, self.what = uri, fmt, what
        fs, path = filesystem(uri, what)
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        if parent:
            fs.makedirs(parent, exist_ok=True)
        self._file = fs.open(path, "wb")
        self._writer: Any = None

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            if self.fmt == "parquet":
                self._writer = pq.ParquetWriter(self._file, table.schema)
            else:
                self._writer = pacsv.CSVWriter(self._file, table.schema)
        self._writer.write_table(table)

    def close(self, schema: pa.Schema | None = None) -> None:
        if self._writer is None and schema is not None:  # nothing written: still a valid empty table
            self.write(schema.empty_table())
        if self._writer is not None:
            self._writer.close()
        self._file.close()


def rejects_uri(output: str) -> str:
    """Where the rejects go: beside the output, `<name>.rejects.csv`."""
    stem = output
    for suffix in (".parquet", ".csv", ".pq"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return stem + ".rejects.csv"


# -- scoring --------------------------------------------------------------------------------------


class Progress:
    """A progress bar on a terminal (rows, rows/s, time left), log lines every few seconds otherwise."""

    def __init__(self, total: int | None, enabled: bool | None = None) -> None:
        self.total = total
        self.bar = None
        self.started = self.last = time.monotonic()
        self.done = 0
        interactive = sys.stderr.isatty() if enabled is None else enabled
        if interactive:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit=" rows", unit_scale=True, dynamic_ncols=True, file=sys.stderr)

    def update(self, rows: int, rejected: int) -> None:
        self.done += rows
        if self.bar is not None:
            self.bar.update(rows)
            self.bar.set_postfix(rejected=rejected, refresh=False)
            return
        now = time.monotonic()
        if now - self.last >= 5.0:
            self.last = now
            rate = self.done / max(now - self.started, 1e-9)
            left = f", about {(self.total - self.done) / rate:.0f} s left" if self.total else ""
            of = f" of {self.total}" if self.total else ""
            log.info("scored %d%s rows (%.0f rows/s%s), %d rejected", self.done, of, rate, left, rejected)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def value_settings(config: DatasetConfig | None) -> tuple[str | None, float, str]:
    """(value column, multiplier, note): value_at_risk = probability × (column value or 1) × multiplier."""
    value = config.value if config is not None else None
    if value is None:
        return None, 1.0, VALUE_NOTE_NONE
    if value.column is not None:
        return (
            value.column,
            value.horizon_months,
            f"value_at_risk = probability × {value.column} × {value.horizon_months:g} months",
        )
    multiplier = float(value.constant) * value.horizon_months
    return None, multiplier, f"value_at_risk = probability × {multiplier:g} (constant value per customer)"


def default_threads(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """Every core this process may run on: its CPU affinity (taskset, cpusets), and no more than the
    cgroup's CPU quota rounded up, since a pod with `limits.cpu: 2` on a 32-core node still sees 32 cores
    in its affinity and would be throttled with 32 threads."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, -(-int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cores)


class _Failed:
    """An error raised in a stage thread, carried to the scoring thread to be raised there."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()
"""The reader's last item: no more batches."""


def _put(queue: Queue, item: Any, stop: threading.Event) -> bool:
    """Puts an item, giving up when the run stops (so a stage blocked on a full queue still exits)."""
    while not stop.is_set():
        try:
            queue.put(item, timeout=0.05)
            return True
        except Full:
            continue
    return False


def _get(queue: Queue, stop: threading.Event) -> Any:
    while not stop.is_set():
        try:
            return queue.get(timeout=0.05)
        except Empty:
            continue
    return _END


class _Stages:
    """Read+encode in one thread and sort+write the runs in another, while the caller's thread scores.

    The queues are bounded (QUEUE_DEPTH batches each way), so memory holds a few batches whatever the
    table size. An error in either thread stops the run and is raised in the scoring thread as it was
    (the same one-line ChurnflowError); close() stops both threads and waits for them, also on Ctrl-C."""

    def __init__(self, batches: Iterator[pa.RecordBatch], encoder: BatchEncoder) -> None:
        self.stop = threading.Event()
        self.encoded: Queue = Queue(QUEUE_DEPTH)
        self.to_write: Queue = Queue(QUEUE_DEPTH)
        self.write_error: BaseException | None = None
        self._batches, self._encoder = batches, encoder
        self.threads = [
            threading.Thread(target=self._read, name="churnflow-score-read", daemon=True),
            threading.Thread(target=self._write, name="churnflow-score-write", daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def _read(self) -> None:
        try:
            for batch in self._batches:
                if self.stop.is_set() or not _put(self.encoded, (batch, self._encoder.encode(batch)), self.stop):
                    return
            _put(self.encoded, _END, self.stop)
        except BaseException as error:  # noqa: BLE001 - carried to the scoring thread and raised there
            _put(self.encoded, _Failed(error), self.stop)
        finally:
            close = getattr(self._batches, "close", None)
            if close is not None:
                close()

    def _write(self) -> None:
        while True:
            item = _get(self.to_write, self.stop)
            if item is _END:
                return
            table, path = item
            try:
                pq.write_table(sort_run(table), path, row_group_size=RUN_ROW_GROUP)
            except BaseException as error:  # noqa: BLE001 - raised in the scoring thread
                self.write_error = error
                self.stop.set()
                return

    def __iter__(self) -> Iterator[tuple[pa.RecordBatch, Any]]:
        while True:
            self._check_writer()
            item = _get(self.encoded, self.stop)
            if item is _END:
                self._check_writer()
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item

    def write(self, table: pa.Table, path: Path) -> None:
        self._check_writer()
        _put(self.to_write, (table, path), self.stop)

    def _check_writer(self) -> None:
        if self.write_error is not None:
            error = self.write_error
            if isinstance(error, OSError):
                raise ChurnflowError(f"sorted runs: cannot write them ({_first_line(error)})") from None
            raise error

    def finish(self) -> None:
        """Waits for every run to be written (before the merge reads them)."""
        _put(self.to_write, _END, self.stop)
        self.threads[1].join()
        self._check_writer()

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()


def score_table(
    model_uri: str,
    data_uri: str,
    output_uri: str,
    config: DatasetConfig | None = None,
    fmt: str = "parquet",
    batch_rows: int = DEFAULT_BATCH_ROWS,
    rejects: str | None = None,
    progress: bool | None = None,
    model: ReleasedModel | None = None,
    threads: int | None = None,
) -> ScoreSummary:
    """Scores every row of the table at `data_uri` and writes the ranked scores and the rejects.

    `threads` (default: every core) is what one scoring call uses; reading and encoding the next batch
    and writing the previous run go on in two more threads meanwhile (see _Stages)."""
    if fmt not in FORMATS:
        raise ChurnflowError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if batch_rows < 1:
        raise ChurnflowError(f"--batch-rows: expected a positive number, got {batch_rows}")
    if threads is not None and threads < 1:
        raise ChurnflowError(f"--threads: expected a positive number, got {threads}")
    started = time.monotonic()
    given = model is not None  # a caller's model scores as it is
    model = model or ReleasedModel.open(model_uri, threads=threads or default_threads())
    contract = model.contract
    id_column = (config.id if config is not None else None) or contract.id
    value_column, multiplier, note = value_settings(config)
    columns = list(dict.fromkeys([*([id_column] if id_column else []), *contract.input_columns]))
    if value_column:
        columns = list(dict.fromkeys([*columns, value_column]))
    dataset, _ = open_table(data_uri, columns, batch_rows)
    encoder = BatchEncoder(contract, value_column)
    summary = ScoreSummary(value_note=note, output=output_uri, rejects=rejects or rejects_uri(output_uri))
    total = _count_rows(dataset)
    if not given:
        model = fastest_exact(model, total)
    summary.evaluator = f"{model.scorer.backend} on {model.scorer.threads} thread(s)"
    meter = Progress(total, progress)
    run_dir = Path(tempfile.mkdtemp(prefix="churnflow-score-"))
    reject_sink = TableSink(summary.rejects, "csv", "rejects")
    runs: list[Path] = []
    out_schema = None
    stages = _Stages(_batches(dataset, columns, batch_rows, data_uri), encoder)
    try:
        for batch, encoded in stages:
            start = summary.rows_read
            summary.rows_read += batch.num_rows
            ids = batch.column(id_column) if id_column else pa.array(np.arange(start, start + batch.num_rows))
            if encoded.rejects:
                reject_sink.write(_rejects_table(encoded.rejects, ids, id_column, start))
                summary.rows_rejected += len(encoded.rejects)
                summary.reject_reasons.update(f for f, _ in encoded.rejects.values())
            summary.unseen.update(encoded.unseen)
            summary.missing.update(encoded.missing)
            summary.filled.update(encoded.filled or {})
            if len(encoded.features):
                probability = model.probability(encoded.features)
                churn = model.churn(probability)
                value = encoded.value if encoded.value is not None else 1.0
                at_risk = probability * value * multiplier
                keep = pa.array(np.flatnonzero(encoded.good))
                table = pa.table(
                    {
                        (id_column or ROW_COLUMN): ids.take(keep) if not encoded.good.all() else ids,
                        "probability": probability,
                        "churn": churn,
                        "value_at_risk": at_risk,
                    }
                )
                summary.rows_scored += table.num_rows
                summary.total_value_at_risk += float(at_risk.sum())
                summary.predicted_churners += int(churn.sum())
                run = run_dir / f"run-{len(runs):06d}.parquet"
                stages.write(table, run)
                runs.append(run)
                out_schema = table.schema
            meter.update(batch.num_rows, summary.rows_rejected)
        stages.finish()
        meter.close()
        if out_schema is None:  # nothing scored: an empty output with the right columns
            out_schema = pa.schema(
                [(id_column or ROW_COLUMN, pa.string() if id_column else pa.int64())]
                + [("probability", pa.float64()), ("churn", pa.int64()), ("value_at_risk", pa.float64())]
            )
        sink = TableSink(output_uri, fmt)
        merge_runs(runs, sink.write, chunk_rows=batch_rows)
        sink.close(out_schema.append(pa.field("rank", pa.int64())))
        reject_sink.close(_rejects_schema(id_column, None))
    finally:
        stages.close()
        meter.close()
        shutil.rmtree(run_dir, ignore_errors=True)
    summary.seconds = time.monotonic() - started
    return summary


def bulk_evaluator(family: str | None, rows: int | None) -> str:
    """The evaluator `churnflow score` uses for a model family and a table of `rows` rows (None: unknown)."""
    fastest = FASTEST_EXACT.get(family or "", "onnxruntime")
    if fastest == "scikit-learn" and (rows is None or rows < SKLEARN_MIN_ROWS):
        return "onnxruntime"
    return fastest


def fastest_exact(model: ReleasedModel, rows: int | None) -> ReleasedModel:
    """The model with the evaluator bulk_evaluator picks; the pickle is read only after its SHA-256
    matches the one recorded in the verified metadata (Scorer does the check)."""
    if model.scorer.backend != "onnxruntime" or bulk_evaluator(model.metadata.get("family"), rows) == "onnxruntime":
        return model
    scorer = Scorer(
        model.directory,
        prefer_compiled=False,
        sklearn_sha256=model.metadata["files"][MODEL_FILE],
        threads=model.scorer.threads,
    )
    return replace(model, scorer=scorer)


def _count_rows(dataset: ds.Dataset) -> int | None:
    """Parquet knows its row count from each file's footer; CSV would need a read, so it has no total.

    Only the footers are read (Dataset.count_rows starts Arrow's scanner: 90 MiB more RSS for a count)."""
    if not isinstance(dataset.format, ds.ParquetFileFormat):
        return None
    try:
        return sum(pq.read_metadata(path, filesystem=dataset.filesystem).num_rows for path in dataset.files)
    except (pa.ArrowInvalid, OSError):  # an unreadable file: said in one line when the batch is read
        return None


def _file_batches(dataset: ds.Dataset, columns: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Each file of the dataset in turn, read by the format's own streaming reader, columns in `columns` order.

    Not Dataset.to_batches: its scanner reads ahead whatever batch_readahead says (a whole 5M-row
    Parquet file, 650 MiB of Arrow memory, at the start of a 10M-row run). ParquetFile.iter_batches
    reads one row group at a time; the CSV reader reads ahead a few blocks, so blocks stay small
    (CSV_BLOCK bytes) and are joined into whole batches afterwards (_batches)."""
    fs = dataset.filesystem
    for path in dataset.files:
        if isinstance(dataset.format, ds.ParquetFileFormat):
            with fs.open_input_file(path) as handle:
                parquet = pq.ParquetFile(handle, pre_buffer=False)
                _check_columns(path, columns, parquet.schema_arrow.names)
                for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns, use_threads=False):
                    yield batch.select(columns)
        else:
            with fs.open_input_stream(path, compression="detect") as handle:
                reader = pacsv.open_csv(
                    handle,
                    read_options=pacsv.ReadOptions(block_size=CSV_BLOCK),
                    convert_options=pacsv.ConvertOptions(
                        column_types={c: pa.string() for c in columns},
                        strings_can_be_null=False,
                        quoted_strings_can_be_null=False,
                        include_columns=columns,
                        include_missing_columns=False,
                    ),
                )
                _check_columns(path, columns, reader.schema.names)
                for batch in reader:
                    yield batch.select(columns)


def _check_columns(path: str, columns: list[str], names: list[str]) -> None:
    missing = [c for c in columns if c not in names]
    if missing:
        raise ChurnflowError(
            f"data {path}: required column(s) {', '.join(map(repr, missing))} not in this file "
            f"({columns_hint(missing, names)})"
        )


def _batches(dataset: ds.Dataset, columns: list[str], batch_rows: int, uri: str):
    """The table in batches of `batch_rows` rows (the last one shorter).

    Parquet yields at most a row group per batch and CSV a block, and tables written in small row
    groups (25,000 rows is common) would otherwise make one sorted run per row group: 10M rows gave
    400 runs, a merge holding a row group of each (1.3 GiB) and four times the CPU. So small batches
    are joined first (those of one schema: files may differ in column types)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    try:
        for batch in _file_batches(dataset, columns, batch_rows):
            if not batch.num_rows:
                continue
            if pending and batch.schema != pending[0].schema:
                yield _joined(pending)
                pending, count = [], 0
            pending.append(batch)
            count += batch.num_rows
            while count >= batch_rows:
                whole = _joined(pending)
                yield whole.slice(0, batch_rows)
                rest = whole.slice(batch_rows)
                pending, count = ([rest] if rest.num_rows else []), rest.num_rows
        if pending:
            yield _joined(pending)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as error:
        raise ChurnflowError(f"data {uri}: cannot read it ({_first_line(error)})") from None


def _joined(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


def _rejects_schema(id_column: str | None, id_type: pa.DataType | None) -> pa.Schema:
    fields = [(id_column, id_type or pa.string())] if id_column else []
    return pa.schema([*fields, (ROW_COLUMN, pa.int64()), ("field", pa.string()), ("reason", pa.string())])


def _rejects_table(rejects: dict[int, tuple[str, str]], ids: pa.Array, id_column: str | None, start: int) -> pa.Table:
    rows = sorted(rejects)
    data: dict[str, Any] = {}
    if id_column:
        data[id_column] = ids.take(pa.array(rows)).cast(pa.string())
    data[ROW_COLUMN] = pa.array([start + r for r in rows], pa.int64())
    data["field"] = pa.array([rejects[r][0] for r in rows], pa.string())
    data["reason"] = pa.array([rejects[r][1] for r in rows], pa.string())
    return pa.table(data)
