"""The prediction store on SQLite: the predictor's asynchronous log, ground truth, and failure modes.

Predictions go through the real ChurnModel request path (preprocess → predict → postprocess) into a
real SQLite file; failures are real too: a file locked by another connection, a file made read-only
(immutable) under the writer, and a full buffer.
"""

from __future__ import annotations

import datetime as dt
import pickle
import shutil
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
from kserve.protocol.infer_type import InferInput, InferRequest
from prometheus_client import REGISTRY

from churnflow.cli import main
from churnflow.core.errors import ChurnflowError
from churnflow.core.synthetic import synthetic_customers
from churnflow.predictor.model import ChurnModel
from churnflow.store.database import PredictionStore, normalize_url
from churnflow.store.logger import PredictionLogger, request_ids
from churnflow.store.outcomes import read_outcomes_csv, record_outcomes
from tests.conftest import CHURNFLOW

CUSTOMER = {"tenure": 12, "usage": 50, "age": 30, "monthly_charges": 70, "contract_type": "Month-to-month"}


def metric(name: str, model_name: str) -> float:
    return REGISTRY.get_sample_value(name, {"model_name": model_name}) or 0.0


@pytest.fixture
def model(model_dir: Path) -> ChurnModel:
    churn_model = ChurnModel(f"churn-{uuid.uuid4().hex[:8]}", str(model_dir))  # own metric labels per test
    assert churn_model.load()
    return churn_model


def attach(model: ChurnModel, url: str, **options) -> PredictionLogger:
    model.prediction_log = PredictionLogger(url, model.name, **options)
    return model.prediction_log


def score(model: ChurnModel, payload, headers: dict | None = None):
    batch = model.predict(model.preprocess(payload, headers), headers)
    return batch, model.postprocess(batch, headers)


def test_urls_are_checked_and_passwords_hidden(tmp_path: Path) -> None:
    assert normalize_url("postgresql://u:secret@db/x") == "postgresql+psycopg://u:secret@db/x"
    assert normalize_url("postgres://u@db/x") == "postgresql+psycopg://u@db/x"
    assert normalize_url(str(tmp_path / "p.db")) == f"sqlite:///{tmp_path / 'p.db'}"
    with pytest.raises(ChurnflowError, match="unsupported scheme 'mysql'") as error:
        PredictionLogger("mysql://u:secret@db/x")
    assert "secret" not in str(error.value)
    assert "***" in PredictionStore("postgresql://u:secret@db/x").display_url


def test_every_protocol_is_logged_with_ids_features_and_scores(model: ChurnModel, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'predictions.db'}"
    logger = attach(model, url)
    # v1 instances with customer ids and the caller's request id
    instances = [{**CUSTOMER, "customer_id": "C1"}, {**CUSTOMER, "tenure": 60, "customer_id": "C2"}]
    v1_batch, v1 = score(model, {"instances": instances}, {"x-request-id": "req-v1"})
    # a bare object body (the classic POST /predict request), no id anywhere
    bare_batch, _ = score(model, dict(CUSTOMER))
    # v2 named tensors, with an id column and the request id
    inputs = [
        InferInput(name, [2], "FP64", [float(CUSTOMER[name])] * 2)
        for name in ("tenure", "usage", "age", "monthly_charges")
    ]
    inputs.append(InferInput("contract_type", [2], "BYTES", ["Two year", "Lifetime"]))
    inputs.append(InferInput("customer_id", [2], "BYTES", ["C3", "C4"]))
    _, v2 = score(model, InferRequest(model.name, inputs, request_id="req-v2"))
    assert v2.id == "req-v2"
    assert logger.flush(10)

    store = PredictionStore(url)
    frame = store.read_predictions(model_name=model.name)
    assert len(frame) == 5
    assert metric("churnflow_prediction_log_written_total", model.name) == 5
    assert metric("churnflow_prediction_log_pending", model.name) == 0
    first = frame[frame["request_id"] == "req-v1"].sort_values("row_index")
    assert first["customer_id"].tolist() == ["C1", "C2"]
    assert first["features"].tolist()[1] == {**CUSTOMER, "tenure": 60.0}
    assert first["probability"].tolist() == [p["probability"] for p in v1["predictions"]]
    assert first["churn"].tolist() == [p["churn"] for p in v1["predictions"]]
    assert set(first["model_version"]) == {model.loaded.released.metadata["model_version"]}
    bare = frame[frame["request_id"] == bare_batch.request_id]
    assert len(bare) == 1 and bare["customer_id"].isna().all()
    second = frame[frame["request_id"] == "req-v2"].sort_values("row_index")
    assert second["customer_id"].tolist() == ["C3", "C4"]
    assert [f["contract_type"] for f in second["features"]] == ["Two year", "Lifetime"]  # unseen level kept
    assert second["probability"].tolist() == v2.outputs[1].data
    age = (dt.datetime.now(dt.UTC).replace(tzinfo=None) - frame["ts"].max()).total_seconds()
    assert 0 <= age < 60
    assert v1_batch.request_id == "req-v1"
    logger.close()


def test_request_ids_are_read_from_every_payload_shape() -> None:
    assert request_ids({"instances": [{"customer_id": 7}, [1, 2], {"customer_id": " "}]}, "customer_id", 3) == [
        "7",
        None,
        None,
    ]
    assert request_ids(b'{"customer_id": "A"}', "customer_id", 1) == ["A"]
    assert request_ids({"inputs": [{"id": "x"}]}, "id", 2) == ["x", None]
    assert request_ids("not json", "customer_id", 1) == [None]


def test_a_locked_file_never_blocks_requests_and_the_buffer_is_bounded(model: ChurnModel, tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    url = f"sqlite:///{path}"
    PredictionStore(url).ensure_schema()
    logger = attach(model, url, capacity=40, batch_rows=10, flush_seconds=0.05, store_timeout=0.2)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    try:
        slowest = 0.0
        for i in range(60):
            started = time.perf_counter()
            score(model, {"instances": [{**CUSTOMER, "tenure": i + 1}]})
            slowest = max(slowest, time.perf_counter() - started)
        # the writer waits on the lock (0.2 s busy timeout per attempt); requests never do
        assert slowest < 0.05, f"a request took {slowest * 1000:.1f} ms while the store was locked"
        deadline = time.monotonic() + 10
        while metric("churnflow_prediction_log_write_errors_total", model.name) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert metric("churnflow_prediction_log_write_errors_total", model.name) >= 2
        assert logger.pending == 40
        assert metric("churnflow_prediction_log_dropped_total", model.name) == 20
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert logger.flush(20), f"still pending: {logger.pending}"
    frame = PredictionStore(url).read_predictions(model_name=model.name)
    assert sorted(f["tenure"] for f in frame["features"]) == [float(i) for i in range(1, 41)]
    assert metric("churnflow_prediction_log_written_total", model.name) == 40
    logger.close()


@pytest.fixture
def immutable(tmp_path: Path):
    """Makes a file read-only even for root (chattr +i), and writable again afterwards."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed: cannot make a file read-only for root")
    locked: list[Path] = []

    def lock(path: Path) -> None:
        result = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot make {path} immutable here: {result.stderr.strip()}")
        locked.append(path)

    def unlock(path: Path) -> None:
        subprocess.run(["chattr", "-i", str(path)], check=True)
        locked.remove(path)

    yield lock, unlock
    for path in locked:
        subprocess.run(["chattr", "-i", str(path)], check=False)


def test_a_read_only_file_buffers_drops_and_counts_then_recovers(model: ChurnModel, tmp_path: Path, immutable) -> None:
    lock, unlock = immutable
    path = tmp_path / "readonly.db"
    url = f"sqlite:///{path}"
    PredictionStore(url).ensure_schema()
    lock(path)
    logger = attach(model, url, capacity=25, batch_rows=5, flush_seconds=0.05, store_timeout=0.2)
    for i in range(30):
        score(model, {"instances": [{**CUSTOMER, "age": 20 + i}]})
    deadline = time.monotonic() + 10
    while metric("churnflow_prediction_log_write_errors_total", model.name) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric("churnflow_prediction_log_write_errors_total", model.name) >= 1
    assert logger.pending == 25
    assert metric("churnflow_prediction_log_dropped_total", model.name) == 5
    assert metric("churnflow_prediction_log_written_total", model.name) == 0
    unlock(path)
    assert logger.flush(20), f"still pending: {logger.pending}"
    ages = sorted(f["age"] for f in PredictionStore(url).read_predictions(model_name=model.name)["features"])
    assert ages == [float(20 + i) for i in range(25)]
    logger.close()


def test_close_flushes_and_counts_what_it_could_not_write(model: ChurnModel, tmp_path: Path, immutable) -> None:
    url = f"sqlite:///{tmp_path / 'flush.db'}"
    logger = attach(model, url, flush_seconds=30)  # the writer would sleep: close() must not wait for it
    for _ in range(7):
        score(model, {"instances": [CUSTOMER]})
    started = time.monotonic()
    logger.close(timeout=5)
    assert time.monotonic() - started < 5
    assert PredictionStore(url).count() == 7
    assert logger.submit("late", "v", None, None, [0.1], [0]) is False  # closed: refused and counted

    lock, _ = immutable
    path = tmp_path / "gone.db"
    PredictionStore(f"sqlite:///{path}").ensure_schema()
    lock(path)
    other = ChurnModel(f"churn-{uuid.uuid4().hex[:8]}", model.model_dir)
    assert other.load()
    broken = attach(other, f"sqlite:///{path}", store_timeout=0.1)
    for _ in range(3):
        score(other, {"instances": [CUSTOMER]})
    broken.close(timeout=1)
    assert metric("churnflow_prediction_log_dropped_total", other.name) == 3
    assert metric("churnflow_prediction_log_pending", other.name) == 0


def test_the_logger_travels_to_worker_processes_as_settings(model: ChurnModel, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    attach(model, url, capacity=123)
    score(model, {"instances": [CUSTOMER]})  # starts the writer thread: nothing of it may be pickled
    clone = pickle.loads(pickle.dumps(model))
    assert clone.prediction_log is not model.prediction_log
    assert (clone.prediction_log.url, clone.prediction_log.capacity) == (url, 123)
    assert clone.prediction_log.pending == 0
    score(clone, {"instances": [CUSTOMER]})
    assert clone.prediction_log.flush(10) and model.prediction_log.flush(10)
    assert PredictionStore(url).count() == 2
    clone.prediction_log.close()
    model.prediction_log.close()


def _prediction(request_id: str, row: int, customer: str | None, ts: dt.datetime, churn: int = 1) -> dict:
    return {
        "request_id": request_id,
        "row_index": row,
        "customer_id": customer,
        "model_name": "churn",
        "model_version": "v1",
        "ts": ts,
        "features": dict(CUSTOMER),
        "probability": 0.8 if churn else 0.2,
        "churn": churn,
    }


def test_outcomes_label_requests_rows_and_customers(tmp_path: Path) -> None:
    store = PredictionStore(f"sqlite:///{tmp_path / 'o.db'}")
    t0 = dt.datetime(2026, 5, 1, 12, 0)
    hour = dt.timedelta(hours=1)
    store.insert_predictions(
        [
            _prediction("r1", 0, None, t0),
            _prediction("r1", 1, None, t0),
            _prediction("r2", 0, None, t0),
            _prediction("r2", 1, None, t0),
            _prediction("r3", 0, "C9", t0),  # C9 scored twice; the later one was acted on
            _prediction("r4", 0, "C9", t0 + hour),
            _prediction("r5", 0, "C7", t0 + 5 * hour),  # scored after the outcome was recorded: not labelled
            _prediction("r6", 0, None, t0),  # no outcome
        ]
    )
    count = record_outcomes(
        store,
        [
            {"request_id": "r1", "churned": "yes"},  # every row of r1
            {"request_id": "r2", "row_index": "1", "churned": 0},  # only row 1 of r2
            {"customer_id": "C9", "churned": "1", "ts": "2026-05-01T13:30:00+00:00"},
            {"customer_id": "C9", "churned": "0", "ts": "2026-05-01T16:30:00+02:00"},  # 14:30 UTC: the latest wins
            {"customer_id": "C7", "churned": True, "ts": t0 + 2 * hour},
        ],
    )
    assert count == 5
    labelled = store.labelled(store.read_predictions())
    got = {(r.request_id, r.row_index): r.churned for r in labelled.itertuples()}
    assert got == {("r1", 0): 1, ("r1", 1): 1, ("r2", 1): 0, ("r4", 0): 0}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"churned": 1}, "outcome 1: needs a request_id or a customer_id"),
        ({"request_id": "r", "churned": "maybe"}, "outcome 1: churned must be 1/0, true/false or yes/no, got 'maybe'"),
        ({"request_id": "r"}, "outcome 1: missing churned"),
        ({"customer_id": "c", "row_index": 1, "churned": 1}, "outcome 1: row_index needs a request_id"),
        ({"request_id": "r", "row_index": "x", "churned": 1}, "outcome 1: row_index must be a whole number"),
        ({"request_id": "r", "churned": 1, "ts": "yesterday"}, "outcome 1: ts must be an ISO 8601 time"),
        ({"request_id": "r" * 200, "churned": 1}, "outcome 1: request_id is longer than 128 characters"),
    ],
)
def test_bad_outcomes_are_one_line_errors_and_nothing_is_written(tmp_path: Path, row: dict, message: str) -> None:
    store = PredictionStore(f"sqlite:///{tmp_path / 'bad.db'}")
    with pytest.raises(ChurnflowError) as error:
        record_outcomes(store, [{"request_id": "ok", "churned": 1}, row][::-1])
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)
    assert store.count("outcomes") == 0


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """`churnflow ...` in this process (the same main() the console script runs)."""
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_records_outcomes_from_csv_and_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    csv = tmp_path / "outcomes.csv"
    csv.write_text("customer_id,churned\nC1,1\nC2,no\n")
    code, out, err = run_cli(capsys, "outcomes", "--store", url, "--csv", str(csv))
    assert code == 0, err
    assert "recorded 2 outcomes" in out
    monkeypatch.setenv("CHURNFLOW_STORE_URL", url)
    code, out, err = run_cli(capsys, "outcomes", "--request-id", "abc", "--row-index", "2", "--churned", "true")
    assert code == 0, err
    frame = PredictionStore(url).read_outcomes(["abc"], ["C1", "C2"])
    assert sorted(zip(frame["customer_id"].fillna(""), frame["churned"], strict=True)) == [
        ("", 1),
        ("C1", 1),
        ("C2", 0),
    ]
    assert frame.loc[frame["request_id"] == "abc", "row_index"].tolist() == [2]

    bad = tmp_path / "bad.csv"
    bad.write_text("customer_id,churned\nC1,1\nC2,perhaps\n")
    code, _, err = run_cli(capsys, "outcomes", "--csv", str(bad))
    assert code == 2
    assert err.strip() == f"churnflow: error: {bad} row 2: churned must be 1/0, true/false or yes/no, got 'perhaps'"
    nokey = tmp_path / "nokey.csv"
    nokey.write_text("id,churned\n1,1\n")
    code, _, err = run_cli(capsys, "outcomes", "--csv", str(nokey))
    assert code == 2
    assert err.strip() == f"churnflow: error: {nokey}: needs a request_id or customer_id column (columns: id, churned)"
    code, _, err = run_cli(capsys, "outcomes", "--store", url, "--churned", "1")
    assert code == 2 and "give --csv FILE, or --request-id" in err
    code, _, err = run_cli(capsys, "outcomes", "--store", "mysql://x/y", "--csv", str(csv))
    assert code == 2 and "unsupported scheme 'mysql'" in err
    monkeypatch.delenv("CHURNFLOW_STORE_URL")
    assert PredictionStore(url).count("outcomes") == 3
    # the installed command itself: no store anywhere is a one-line error, exit 2
    done = subprocess.run(
        [CHURNFLOW, "outcomes", "--csv", str(csv)], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}
    )
    assert done.returncode == 2
    assert done.stderr.strip().startswith("churnflow: error: --store: no store given")


def test_read_outcomes_csv_errors(tmp_path: Path) -> None:
    with pytest.raises(ChurnflowError, match="no such file"):
        read_outcomes_csv(tmp_path / "missing.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ChurnflowError, match="empty; expected a header"):
        read_outcomes_csv(empty)
    nochurn = tmp_path / "nochurn.csv"
    nochurn.write_text("request_id\nr1\n")
    with pytest.raises(ChurnflowError, match="no churned column"):
        read_outcomes_csv(nochurn)


@pytest.mark.slow
def test_the_server_logs_every_prediction_and_flushes_on_shutdown(
    model_dir: Path, tmp_path: Path, start_server
) -> None:
    url = f"sqlite:///{tmp_path / 'served.db'}"
    server = start_server(model_dir, "--store", url)
    customers = synthetic_customers(20, seed=3).drop(columns=["churn"]).to_dict("records")
    with httpx.Client(base_url=server.url, timeout=10) as client:
        v1 = client.post("/v1/models/churn:predict", json={"instances": customers}, headers={"X-Request-Id": "batch-1"})
        assert v1.status_code == 200
        compat = client.post("/predict", json=CUSTOMER)
        assert compat.status_code == 200
        v2 = client.post(
            "/v2/models/churn/infer",
            json={
                "id": "v2-request",
                "inputs": [
                    {"name": "row", "shape": [1, 5], "datatype": "BYTES", "data": ["3", "20", "40", "120", "One year"]}
                ],
            },
        )
        assert v2.status_code == 200 and v2.json()["id"] == "v2-request"
        metrics = client.get("/metrics").text
        assert 'churnflow_prediction_log_dropped_total{model_name="churn"} 0.0' in metrics
        assert "churnflow_prediction_log_pending" in metrics
    server.stop()  # SIGTERM: the buffer is flushed at exit, whatever the flush interval left
    frame = PredictionStore(url).read_predictions()
    assert len(frame) == 22
    batch = frame[frame["request_id"] == "batch-1"].sort_values("row_index")
    assert batch["customer_id"].tolist() == [c["customer_id"] for c in customers]
    assert batch["probability"].tolist() == [p["probability"] for p in v1.json()["predictions"]]
    assert frame.loc[frame["request_id"] == "v2-request", "probability"].tolist() == v2.json()["outputs"][1]["data"]
