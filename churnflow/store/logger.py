"""PredictionLogger: the predictor's prediction log, kept off the request path.

The request path calls `submit` once per scored batch. It appends a reference to what was already
computed (the aligned inputs, probabilities, labels) to an in-memory buffer under a lock, and
returns: no serialisation, no I/O, no waiting. A background thread drains the buffer every
`flush_seconds` (or sooner when `batch_rows` are waiting), turns entries into rows and writes them
with one executemany per batch.

The buffer is bounded in rows (`capacity`). When the store is away (PostgreSQL restarting, a
locked or read-only SQLite file) the writer keeps the rows it could not write and retries with
exponential backoff; the buffer fills up to the bound, and beyond it new batches are dropped and
counted (`churnflow_prediction_log_dropped_total`), never blocking a request. Once the store is
back everything buffered is written. `close()` (also run at interpreter exit) flushes what it can
within its timeout and counts the rest as dropped.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import itertools
import json
import logging
import threading
import time
import uuid
from typing import Any, NamedTuple

from prometheus_client import Counter, Gauge

from churnflow.core.errors import ChurnflowError

log = logging.getLogger("churnflow.store")

DEFAULT_CAPACITY = 100_000
DEFAULT_BATCH_ROWS = 1_000
DEFAULT_FLUSH_SECONDS = 0.5
RETRY_INITIAL_SECONDS = 0.2
RETRY_MAX_SECONDS = 10.0
ERROR_LOG_EVERY_SECONDS = 60.0
DEFAULT_ID_FIELD = "customer_id"

WRITTEN = Counter("churnflow_prediction_log_written", "Prediction records written to the store.", ["model_name"])
DROPPED = Counter(
    "churnflow_prediction_log_dropped",
    "Prediction records dropped: the buffer was full (store slow or away), or still unwritten at shutdown.",
    ["model_name"],
)
PENDING = Gauge(
    "churnflow_prediction_log_pending",
    "Prediction records buffered in memory, not yet written to the store.",
    ["model_name"],
    multiprocess_mode="livesum",
)
WRITE_ERRORS = Counter(
    "churnflow_prediction_log_write_errors", "Failed store writes (each retried with backoff).", ["model_name"]
)


class _Entry(NamedTuple):
    """One scored batch, exactly as the request path had it (references, not copies; a tuple is the
    cheapest thing to build on the request path)."""

    request_id: str
    model_version: str
    ts: float
    contract: Any  # FeatureContract: column names to read `aligned` with
    aligned: Any  # predictor.alignment.Aligned: features matrix and categorical levels
    probability: Any  # numpy array
    churn: Any  # numpy array
    payload: Any  # the decoded request, read for customer ids in the background
    rows: int


class PredictionLogger:
    """Asynchronous, batched, bounded prediction logging to a PredictionStore URL."""

    def __init__(
        self,
        url: str,
        model_name: str = "churn",
        *,
        capacity: int = DEFAULT_CAPACITY,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        flush_seconds: float = DEFAULT_FLUSH_SECONDS,
        retry_max_seconds: float = RETRY_MAX_SECONDS,
        store_timeout: float = 5.0,
    ) -> None:
        from churnflow.store.database import normalize_url, redact

        if capacity < 1 or batch_rows < 1:
            raise ChurnflowError("prediction log: capacity and batch_rows must be at least 1")
        self.url = normalize_url(url)  # a bad URL fails here, at start-up, not in the background
        self.display_url = redact(self.url)
        self.model_name = model_name
        self.capacity = capacity
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.retry_max_seconds = retry_max_seconds
        self.store_timeout = store_timeout
        self._setup()

    def _setup(self) -> None:
        self._lock = threading.Lock()
        self._entries: collections.deque[_Entry] = collections.deque()
        self._pending = 0  # rows buffered or being written
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._store: Any = None
        self._written = WRITTEN.labels(self.model_name)
        self._dropped = DROPPED.labels(self.model_name)
        self._pending_gauge = PENDING.labels(self.model_name)
        self._errors = WRITE_ERRORS.labels(self.model_name)
        self._failing_since: float | None = None
        self._last_error_log = 0.0
        self._id_prefix = uuid.uuid4().hex[:16] + "-"  # per process: counter-based ids stay unique
        self._id_counter = itertools.count(1)
        self._deadline = float("inf")  # set by close(): when to stop retrying
        self._give_up = threading.Event()  # set by close() once it stops waiting for the writer

    # Pickled with the model into each KServe worker process: the buffer, thread and connections
    # are per process, so only the settings travel.
    def __getstate__(self) -> dict[str, Any]:
        keep = ("url", "display_url", "model_name", "capacity", "batch_rows", "flush_seconds")
        return {k: self.__dict__[k] for k in (*keep, "retry_max_seconds", "store_timeout")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._setup()

    # -- the request path ----------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        return self._pending

    def submit(
        self,
        request_id: str,
        model_version: str,
        contract: Any,
        aligned: Any,
        probability: Any,
        churn: Any,
        payload: Any = None,
    ) -> bool:
        """Hands one scored batch to the writer; False (and counted) when the buffer is full.

        Costs a lock and an append: everything else happens on the writer thread.
        """
        rows = len(probability)
        entry = _Entry(request_id, model_version, time.time(), contract, aligned, probability, churn, payload, rows)
        with self._lock:
            if self._pending + rows > self.capacity or self._closing.is_set():
                accepted = False
            else:
                self._pending += rows
                self._entries.append(entry)
                accepted = True
        if not accepted:
            self._dropped.inc(rows)
            return False
        if self._thread is None:
            self._start()
        elif self._pending >= self.batch_rows:
            self._wake.set()
        return True

    def next_request_id(self) -> str:
        """A unique id for a request that came without one (a tenth of uuid4's cost)."""
        return f"{self._id_prefix}{next(self._id_counter):x}"

    # -- the writer ----------------------------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="churnflow-prediction-log", daemon=True)
            self._thread.start()
        atexit.register(self.close)

    def _open_store(self) -> Any:
        if self._store is None:
            from churnflow.store.database import PredictionStore

            self._store = PredictionStore(self.url, timeout=self.store_timeout)
        return self._store

    def _reset_store(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            with contextlib.suppress(Exception):  # disposing a pool whose server is gone may fail too
                store.close()

    def _take(self) -> tuple[list[dict[str, Any]], int]:
        """Pops entries worth up to `batch_rows` rows and turns them into table rows."""
        entries = []
        rows = 0
        with self._lock:
            while self._entries and (not entries or rows + self._entries[0].rows <= self.batch_rows):
                entry = self._entries.popleft()
                entries.append(entry)
                rows += entry.rows
        records: list[dict[str, Any]] = []
        for entry in entries:
            try:
                records.extend(_records(entry, self.model_name))
            except Exception as error:  # a batch we cannot even describe is dropped, never retried forever
                log.error("prediction log: dropping %d rows of request %s: %s", entry.rows, entry.request_id, error)
                self._settle(entry.rows, written=False)
        return records, len(records)

    def _settle(self, rows: int, written: bool) -> None:
        with self._lock:
            self._pending -= rows
            pending = self._pending
        (self._written if written else self._dropped).inc(rows)
        self._pending_gauge.set(pending)

    def _run(self) -> None:
        backoff = RETRY_INITIAL_SECONDS
        records: list[dict[str, Any]] = []
        while True:
            if not records:
                if not self._closing.is_set():
                    self._wake.wait(self.flush_seconds)
                    self._wake.clear()
                records, _ = self._take()
                self._pending_gauge.set(self._pending)
                if not records:
                    if self._closing.is_set():
                        return
                    continue
            try:
                self._open_store().insert_predictions(records)
            except Exception as error:  # the store is away or refusing: keep the rows, retry later
                self._errors.inc()
                self._note_failure(error)
                self._reset_store()  # reconnect next time: a pooled connection may be the broken part
                remaining = self._deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._give_up.wait(min(backoff, remaining))  # the backoff, cut short when close() gives up
                backoff = min(backoff * 2, self.retry_max_seconds)
                continue
            self._settle(len(records), written=True)
            records = []
            backoff = RETRY_INITIAL_SECONDS
            if self._failing_since is not None:
                log.warning(
                    "prediction log: store %s is back after %.1f s; writing the buffered predictions",
                    self.display_url,
                    time.monotonic() - self._failing_since,
                )
                self._failing_since = None

    def _note_failure(self, error: Exception) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._last_error_log >= ERROR_LOG_EVERY_SECONDS:
            self._last_error_log = now
            reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0][:300]
            log.warning(
                "prediction log: cannot write to %s (%s); buffering up to %d rows (%d now), retrying",
                self.display_url,
                reason,
                self.capacity,
                self._pending,
            )

    # -- shutdown and tests ------------------------------------------------------------------------------

    def flush(self, timeout: float = 10.0) -> bool:
        """Waits until everything submitted so far is written; True if it was within `timeout`."""
        if self._thread is None:
            return self._pending == 0
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.01)
        return self._pending == 0

    def close(self, timeout: float = 10.0) -> None:
        """Stops accepting, writes what is buffered within `timeout`, counts the rest as dropped."""
        thread = self._thread
        if thread is None or self._closing.is_set():
            return
        self._deadline = time.monotonic() + timeout
        self._closing.set()
        self._wake.set()
        thread.join(timeout + 1.0)
        self._give_up.set()
        thread.join(1.0)
        with self._lock:
            lost = self._pending
            self._entries.clear()
        if lost and not thread.is_alive():
            self._settle(lost, written=False)
            log.error("prediction log: %d predictions not written to %s before shutdown", lost, self.display_url)
        if self._store is not None and not thread.is_alive():
            self._store.close()
        atexit.unregister(self.close)


def _records(entry: _Entry, model_name: str) -> list[dict[str, Any]]:
    """Table rows for one scored batch: the inputs as the model read them, one JSON object per row."""
    contract, aligned = entry.contract, entry.aligned
    numeric = list(contract.numeric)
    categorical = list(contract.categorical)
    values = aligned.features[:, : len(numeric)].tolist()
    levels = [aligned.levels.get(column) or [None] * entry.rows for column in categorical]
    probability = entry.probability.tolist()
    churn = entry.churn.tolist()
    ids = request_ids(entry.payload, contract.id or DEFAULT_ID_FIELD, entry.rows)
    ts = _utc_naive(entry.ts)
    records = []
    for row in range(entry.rows):
        features: dict[str, Any] = dict(zip(numeric, values[row], strict=True))
        for column, column_levels in zip(categorical, levels, strict=True):
            features[column] = column_levels[row]
        records.append(
            {
                "request_id": entry.request_id,
                "row_index": row,
                "customer_id": ids[row],
                "model_name": model_name,
                "model_version": entry.model_version,
                "ts": ts,
                "features": features,
                "probability": probability[row],
                "churn": churn[row],
            }
        )
    return records


def _utc_naive(epoch: float) -> Any:
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch, dt.UTC).replace(tzinfo=None)


def request_ids(payload: Any, field: str, rows: int) -> list[str | None]:
    """The customer id of each row when the request carried one (v1 instances as objects, the bare
    original body, or a v2 input tensor named like the id column); None where it did not."""
    ids: list[Any] = [None] * rows
    try:
        if isinstance(payload, bytes | bytearray):
            payload = json.loads(payload)
        if isinstance(payload, dict):
            records = payload.get("instances", payload.get("inputs", [payload]))
            if isinstance(records, list):
                ids = [r.get(field) if isinstance(r, dict) else None for r in records[:rows]]
        elif hasattr(payload, "inputs"):
            for tensor in payload.inputs or ():
                if tensor.name == field:
                    data = tensor.data if getattr(tensor, "_raw_data", None) is None else tensor.as_numpy().tolist()
                    flat = data.reshape(-1).tolist() if hasattr(data, "reshape") else list(data)
                    ids = flat[:rows]
    except Exception:  # ids are a convenience for joining ground truth: never fail the log for them
        ids = [None] * rows
    ids += [None] * (rows - len(ids))
    return [_id_text(v) for v in ids]


def _id_text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bytes | bytearray):
        value = value.decode("utf-8", "replace")
    text = str(value).strip()
    return text[:128] or None
