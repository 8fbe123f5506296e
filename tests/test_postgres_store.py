"""The prediction store on a real PostgreSQL server, started by these tests on loopback.

A private cluster (initdb into a temporary directory, run as the `postgres` user when we are root)
on a free port, with its socket in that directory. The tests log predictions through the real
ChurnModel request path, stop the server mid-run and start it again: the predictions made while it
was down are buffered and written once it is back.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY

from churnflow.core.synthetic import synthetic_customers
from churnflow.monitoring.drift import run_check
from churnflow.predictor.model import ChurnModel
from churnflow.store.database import PredictionStore
from churnflow.store.logger import PredictionLogger
from churnflow.store.outcomes import record_outcomes
from tests.conftest import free_port


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


class PostgresServer:
    """One private PostgreSQL cluster: initdb once, then start/stop as often as a test likes."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="churnflow-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/churnflow"

    def _run(self, *command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_root else []
        return subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=timeout, check=True)

    def init(self) -> None:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()
        admin = sa.create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres")
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(sa.text("CREATE DATABASE churnflow"))
        admin.dispose()

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.root / "postgres.log")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", log, "-o", options, "-w", "start")

    def stop(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def cleanup(self) -> None:
        if self.running():
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip(
            "PostgreSQL is not installed (scripts/system-deps.sh installs it as root: apt-get install postgresql)"
        )
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL as the postgres user")
    server = PostgresServer(bindir)
    try:
        server.init()
    except subprocess.CalledProcessError as error:
        server.cleanup()
        pytest.fail(f"could not start PostgreSQL: {error.stderr or error.stdout}")
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def model(model_dir: Path) -> ChurnModel:
    churn_model = ChurnModel(f"churn-pg-{uuid.uuid4().hex[:8]}", str(model_dir))
    assert churn_model.load()
    return churn_model


def metric(name: str, model_name: str) -> float:
    return REGISTRY.get_sample_value(name, {"model_name": model_name}) or 0.0


def score_rows(model: ChurnModel, rows: list[dict]) -> float:
    """Scores each row as its own request; returns the slowest request's seconds."""
    slowest = 0.0
    for row in rows:
        started = time.perf_counter()
        batch = model.predict(model.preprocess({"instances": [row]}))
        model.postprocess(batch)
        slowest = max(slowest, time.perf_counter() - started)
    return slowest


def test_predictions_outcomes_and_the_drift_check_on_postgres(postgres: PostgresServer, model: ChurnModel) -> None:
    logger = PredictionLogger(postgres.url, model.name)
    model.prediction_log = logger
    customers = synthetic_customers(300, seed=11)
    score_rows(model, customers.drop(columns=["churn"]).to_dict("records"))
    assert logger.flush(20)
    store = PredictionStore(postgres.url)
    frame = store.read_predictions(model_name=model.name)
    assert len(frame) == 300
    assert frame["customer_id"].tolist() == customers["customer_id"].tolist()
    assert frame["features"][0] == {
        "tenure": float(customers["tenure"][0]),
        "usage": float(customers["usage"][0]),
        "age": float(customers["age"][0]),
        "monthly_charges": float(customers["monthly_charges"][0]),
        "contract_type": customers["contract_type"][0],
    }
    with store.engine.connect() as connection:  # PostgreSQL's own types, not text
        types = dict(
            connection.execute(
                sa.text("SELECT column_name, data_type FROM information_schema.columns WHERE table_name='predictions'")
            ).all()
        )
    assert types["features"] == "json" and types["probability"] == "double precision"
    recorded = record_outcomes(
        store,
        [{"customer_id": c, "churned": y} for c, y in zip(customers["customer_id"], customers["churn"], strict=True)],
    )
    assert recorded == 300
    labelled = store.labelled(frame)
    assert len(labelled) == 300
    assert labelled["churned"].tolist() == customers["churn"].tolist()
    report = run_check(postgres.url, model.model_dir, model_name=model.name, window=1000)
    assert report["window"]["rows"] == 300 and report["accuracy"]["labelled"] == 300
    assert report["data_drift"]["drifted"] == []
    assert report["store"].startswith("postgresql+psycopg://postgres@127.0.0.1")
    logger.close()


def test_stopping_postgres_mid_run_buffers_and_writes_once_it_is_back(
    postgres: PostgresServer, model: ChurnModel
) -> None:
    logger = PredictionLogger(postgres.url, model.name, flush_seconds=0.05, retry_max_seconds=0.5, store_timeout=2)
    model.prediction_log = logger
    rows = synthetic_customers(100, seed=12).drop(columns=["churn"]).to_dict("records")
    score_rows(model, rows[:30])
    assert logger.flush(20)
    postgres.stop()
    try:
        slowest = score_rows(model, rows[30:])
        assert slowest < 0.05, f"a request took {slowest * 1000:.1f} ms while PostgreSQL was down"
        deadline = time.monotonic() + 15
        while metric("churnflow_prediction_log_write_errors_total", model.name) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert metric("churnflow_prediction_log_write_errors_total", model.name) >= 2
        assert logger.pending == 70
        assert metric("churnflow_prediction_log_pending", model.name) == 70
        assert PredictionStore(postgres.url).engine.dialect.name == "postgresql"
    finally:
        postgres.start()
    assert logger.flush(30), f"still pending after PostgreSQL came back: {logger.pending}"
    frame = PredictionStore(postgres.url).read_predictions(model_name=model.name)
    assert frame["customer_id"].tolist() == [r["customer_id"] for r in rows]
    assert metric("churnflow_prediction_log_written_total", model.name) == 100
    assert metric("churnflow_prediction_log_dropped_total", model.name) == 0
    logger.close()
