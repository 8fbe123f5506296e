"""Issue 6: overload shedding, hot reload of good and bad models, interrupted pipelines, hostile tables."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from churnflow.artifact import publish_directory, read_metadata, verify_files
from churnflow.config import load_config
from churnflow.data import read_table, validate_table
from churnflow.errors import ChurnflowError

from .conftest import CHURNFLOW, build_model

ROW = {"tenure": 5, "usage": 40.0, "age": 33, "monthly_charges": 99.0, "contract_type": "Month-to-month"}


def version_of(server) -> str:
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith("churnflow_model_info{"):
            return line.split('model_version="')[1].split('"')[0]
    raise AssertionError("no churnflow_model_info")


def test_overload_is_shed_with_503_and_the_server_recovers(start_server, model_dir):
    server = start_server(model_dir, env={"CHURNFLOW_MAX_INFLIGHT": "2"})
    heavy = {"instances": [ROW] * 5000}  # tens of milliseconds each: requests overlap

    def post(_: int) -> httpx.Response:
        return httpx.post(f"{server.url}/v1/models/churn:predict", json=heavy, timeout=30)

    with ThreadPoolExecutor(max_workers=12) as pool:
        responses = list(pool.map(post, range(36)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(503) > 0 and statuses.count(200) > 0
    shed = next(r for r in responses if r.status_code == 503)
    assert shed.headers["retry-after"] == "1" and "overloaded" in shed.json()["error"]
    started = time.monotonic()  # recovery: healthy and answering normally right away
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
    assert httpx.post(f"{server.url}/v1/models/churn:predict", json={"instances": [ROW]}).status_code == 200
    assert time.monotonic() - started < 2.0
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'churnflow_requests_total{protocol="v1",status="503"}' in metrics


def test_hot_reload_swaps_good_models_and_refuses_bad_ones(start_server, model_dir, tmp_path):
    releases = tmp_path / "serving"
    publish_directory(model_dir, releases / "model")
    server = start_server(releases / "model", "--watch", "0.2")
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
