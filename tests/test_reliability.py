"""Issue 6: overload shedding, hot reload of good and bad models, interrupted pipelines, hostile tables."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from churnflow.core.artifact import publish_directory, read_metadata, verify_files
from churnflow.core.config import load_config
from churnflow.core.data import read_table, validate_table
from churnflow.core.errors import ChurnflowError
from churnflow.predictor.guard import is_inference

from .conftest import CHURNFLOW, build_model

ROW = {"tenure": 5, "usage": 40.0, "age": 33, "monthly_charges": 99.0, "contract_type": "Month-to-month"}


def version_of(server) -> str:
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith("churnflow_model_info{"):
            return line.split('model_version="')[1].split('"')[0]
    raise AssertionError("no churnflow_model_info")


@pytest.mark.parametrize(
    ("path", "sheddable"),
    [
        ("/v1/models/churn:predict", True),
        ("/v1/models/churn:explain", True),
        ("/v2/models/churn/infer", True),
        ("/predict", True),
        ("/v2/health/ready", False),
        ("/v2/health/live", False),
        ("/v2/models/churn/ready", False),
        ("/v2/models/churn", False),
        ("/v1/models/churn", False),
        ("/metrics", False),
    ],
)
def test_only_routes_that_run_the_model_are_shed(path: str, sheddable: bool) -> None:
    assert is_inference(path) is sheddable


def _open_slow_request(url: str, body: bytes) -> socket.socket:
    """Send a predict request's headers and half its body, then stall: the server holds it in flight."""
    parsed = httpx.URL(url)
    client = socket.create_connection((parsed.host, parsed.port), timeout=30)
    head = (
        f"POST /v1/models/churn:predict HTTP/1.1\r\nHost: {parsed.host}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    client.sendall(head.encode() + body[: len(body) // 2])
    return client


def _finish_slow_request(client: socket.socket, body: bytes) -> int:
    """Send the rest of the body and return the response's status code."""
    client.sendall(body[len(body) // 2 :])
    answer = b""
    while b"\r\n" not in answer:
        chunk = client.recv(4096)
        if not chunk:
            break
        answer += chunk
    client.close()
    return int(answer.split(b" ", 2)[1])


def test_overload_is_shed_with_503_and_the_server_recovers(start_server, model_dir):
    """Two slow clients fill CHURNFLOW_MAX_INFLIGHT=2: the next request is shed at once, not queued.

    The overlap is held open by the clients themselves (a request is in flight from its headers on),
    so the test does not depend on how fast this machine runs a prediction.
    """
    server = start_server(model_dir, env={"CHURNFLOW_MAX_INFLIGHT": "2"})
    body = json.dumps({"instances": [ROW] * 50}).encode()
    slow = [_open_slow_request(server.url, body) for _ in range(2)]
    deadline = time.monotonic() + 10
    shed = httpx.post(f"{server.url}/v1/models/churn:predict", json={"instances": [ROW]})
    while shed.status_code == 200 and time.monotonic() < deadline:  # until the server has read both heads
        time.sleep(0.05)
        shed = httpx.post(f"{server.url}/v1/models/churn:predict", json={"instances": [ROW]})
    assert shed.status_code == 503, shed.text
    assert shed.headers["retry-after"] == "1" and "overloaded: 2 requests in flight" in shed.json()["error"]
    for probe in ("/v2/health/ready", "/v1/models/churn"):  # health and the InferenceService's readiness path
        assert httpx.get(f"{server.url}{probe}").status_code == 200  # are never shed
    assert "churnflow_requests_total" in httpx.get(f"{server.url}/metrics").text  # nor are metrics

    assert [_finish_slow_request(client, body) for client in slow] == [200, 200]  # held requests complete
    started = time.monotonic()  # recovery: answering normally as soon as the slots are free
    assert httpx.post(f"{server.url}/v1/models/churn:predict", json={"instances": [ROW]}).status_code == 200
    assert time.monotonic() - started < 2.0

    heavy = {"instances": [ROW] * 2000}  # a burst: every answer is a prediction or a clean 503, never an error

    def post(_: int) -> httpx.Response:
        return httpx.post(f"{server.url}/v1/models/churn:predict", json=heavy, timeout=30)

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = [r.status_code for r in pool.map(post, range(16))]
    assert set(statuses) <= {200, 503} and 200 in statuses, statuses
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'churnflow_requests_total{protocol="v1",status="503"}' in metrics


def test_hot_reload_swaps_good_models_and_refuses_bad_ones(start_server, model_dir, tmp_path):
    releases = tmp_path / "serving"
    publish_directory(model_dir, releases / "model")
    server = start_server(releases / "model", "--watch", "0.2", "--enable-repository-api")
    first = version_of(server)

    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    metadata = json.loads((bad / "metadata.json").read_text())
    metadata["model_version"] = "tampered"
    (bad / "metadata.json").write_text(json.dumps(metadata))
    with open(bad / "model.joblib", "ab") as handle:
        handle.write(b"tampered")
    publish_directory(bad, releases / "model")
    deadline = time.monotonic() + 10
    while "refusing to load" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "SHA-256" in server.log() and "keeps serving the previous model" in server.log()
    assert version_of(server) == first
    answer = httpx.post(f"{server.url}/v1/models/churn:predict", json={"instances": [ROW]})
    assert answer.status_code == 200

    refused = httpx.post(f"{server.url}/v2/repository/models/churn/load")
    assert refused.status_code == 409 and "previous one keeps serving" in refused.json()["error"]

    good = build_model(tmp_path / "second", rows=600, trees=5)
    publish_directory(good, releases / "model")
    deadline = time.monotonic() + 10
    while version_of(server) == first and time.monotonic() < deadline:
        time.sleep(0.1)
    assert version_of(server) == read_metadata(good)["model_version"]


def test_killed_pipeline_leaves_the_released_model_untouched(tmp_path):
    output = tmp_path / "run"
    first = subprocess.run(
        [CHURNFLOW, "run", "--output", str(output), "--set", "tune=false"], capture_output=True, text=True, timeout=300
    )
    assert first.returncode == 0, first.stderr
    released = os.readlink(output / "model")
    before = read_metadata(output / "model")["model_version"]

    run = subprocess.Popen(
        [CHURNFLOW, "run", "--output", str(output), "--rows", "20000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    log = output / "pipeline.log"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and "cv-score-op" not in (log.read_text() if log.exists() else ""):
        time.sleep(0.2)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait(timeout=30)
    assert os.readlink(output / "model") == released
    verify_files(output / "model")
    assert read_metadata(output / "model")["model_version"] == before


PADDING = "padding.bin"  # stands in for a large forest (an unpruned 1M-row forest pickles to 3.5 GB)
PADDING_BYTES = 256 << 20


def _copying(root) -> bool:
    """Seen from outside: is a release of the padded model being written somewhere under `root`?"""
    for path in root.rglob(PADDING):
        try:
            if 0 < path.stat().st_size < PADDING_BYTES:
                return True
        except FileNotFoundError:
            pass
    return False


def test_release_killed_between_writing_and_swapping_keeps_the_previous_model_serving(
    start_server, model_dir, tmp_path
):
    """SIGKILL the deploy step's release of a large model while its files are being written (observed
    from outside, not by a hook in the code): the previous model keeps serving, and the next release works."""
    from churnflow.core.artifact import write_metadata

    serving = tmp_path / "serving"
    publish_directory(model_dir, serving / "model")
    previous = (serving / "model").resolve()
    server = start_server(serving / "model", "--watch", "0.2")
    first = version_of(server)

    large = tmp_path / "large"
    shutil.copytree(model_dir, large)
    with open(large / PADDING, "wb") as padding:
        padding.truncate(PADDING_BYTES)
    metadata = read_metadata(large)
    metadata.pop("files")
    write_metadata(large, {**metadata, "model_version": "large"})
    release = subprocess.Popen(
        [
            str(Path(CHURNFLOW).with_name("python")),
            "-c",
            "import sys; from churnflow.components.deploy.logic import release_locally; "
            "release_locally(sys.argv[1], {'deploy': True}, sys.argv[2])",
            str(large),
            str(serving / "model"),
        ],
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not _copying(serving) and release.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    assert release.poll() is None, "the release finished before it could be interrupted"
    os.killpg(release.pid, signal.SIGKILL)
    release.wait(timeout=30)
    assert any(True for _ in serving.rglob(PADDING)), "killed before anything was written"

    assert (serving / "model").resolve() == previous
    assert verify_files(serving / "model")["model_version"] == first
    time.sleep(1.0)  # several --watch periods: the server saw whatever there was to see
    assert version_of(server) == first
    answer = httpx.post(f"{server.url}/v1/models/churn:predict", json={"instances": [ROW]})
    assert answer.status_code == 200, answer.text

    from churnflow.components.deploy.logic import release_locally

    next_model = build_model(tmp_path / "next", rows=600, trees=5)
    release_locally(next_model, {"deploy": True}, serving / "model")
    assert verify_files(serving / "model")["model_version"] == read_metadata(next_model)["model_version"]
    deadline = time.monotonic() + 15
    while version_of(server) == first and time.monotonic() < deadline:
        time.sleep(0.1)
    assert version_of(server) == read_metadata(next_model)["model_version"]


def test_failing_step_fails_the_run_in_one_line_and_keeps_the_released_model(tmp_path):
    output = tmp_path / "run"
    ok = subprocess.run(
        [CHURNFLOW, "run", "--output", str(output), "--set", "tune=false"], capture_output=True, text=True, timeout=300
    )
    assert ok.returncode == 0, ok.stderr
    released = os.readlink(output / "model")
    failed = subprocess.run(
        [CHURNFLOW, "run", "--output", str(output), "--set", 'tuning_grid={"min_samples_leaf": [0]}'],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert failed.returncode == 2
    lines = failed.stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith("churnflow: error: hyperparameter min_samples_leaf")
    assert os.readlink(output / "model") == released


def test_formula_like_cells_are_refused(tmp_path):
    csv = tmp_path / "customers.csv"
    csv.write_text(
        "tenure,usage,age,monthly_charges,contract_type,churn\n"
        '1,2,30,40,Month-to-month,1\n2,3,31,41,=HYPERLINK("http://x"),0\n'
    )
    with pytest.raises(ChurnflowError, match="'contract_type': 1 value\\(s\\) look like spreadsheet formulas"):
        validate_table(read_table(str(csv)), load_config(None))


def test_oversized_tables_are_refused_before_reading(tmp_path, monkeypatch):
    csv = tmp_path / "big.csv"
    csv.write_text("tenure\n" + "1\n" * 1000)
    monkeypatch.setenv("CHURNFLOW_MAX_DATA_BYTES", "100")
    with pytest.raises(ChurnflowError, match="exceed the limit of 100"):
        read_table(str(csv))


def test_cli_reports_bad_csv_in_one_line(tmp_path):
    csv = tmp_path / "binary.csv"
    csv.write_bytes(b"\xff\xfe\x00garbage\x00\n\x81\x82")
    result = subprocess.run(
        [CHURNFLOW, "run", "--data", str(csv), "--output", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("churnflow: error: data ")
    assert "Traceback" not in result.stderr
