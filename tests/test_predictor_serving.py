"""Issue 17 (serving correctness) and issue 12 item 9 (the predictor's security): what a server does
across workers, releases, readiness, blank numbers and requests without a Content-Type."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from pathlib import Path

import grpc
import httpx
import numpy as np

from churnflow.core.artifact import publish_directory, read_metadata, write_metadata
from churnflow.core.contract import FeatureContract

from .conftest import free_port

ROW = {"tenure": 12, "usage": 50, "age": 30, "monthly_charges": 70, "contract_type": "Month-to-month"}
TYPES = {"tenure": "INT64", "usage": "FP64", "age": "INT64", "monthly_charges": "FP64", "contract_type": "BYTES"}


def v2_body(row: dict, types: dict | None = None) -> dict:
    types = types or TYPES
    return {"inputs": [{"name": n, "shape": [1], "datatype": types[n], "data": [row[n]]} for n in row]}


def versioned_copy(model_dir: Path, target: Path, version: str) -> Path:
    """The shared model under another model_version (metadata rewritten, SHA-256s recomputed)."""
    shutil.copytree(model_dir, target)
    metadata = read_metadata(target)
    metadata.pop("files")
    write_metadata(target, {**metadata, "model_version": version})
    return target


# -- item 4: a blank number is the training median on every route ---------------------------------------


def test_blank_numbers_read_as_the_training_median_on_every_route(server, model_dir):
    median = FeatureContract.load(model_dir).numeric_fill["tenure"]
    url = server.url
    expected = httpx.post(f"{url}/v1/models/churn:predict", json={"instances": [{**ROW, "tenure": median}]}).json()
    expected = expected["predictions"][0]["probability"]
    for blank in ("", "   ", None):
        row = {**ROW, "tenure": blank}
        v1 = httpx.post(f"{url}/v1/models/churn:predict", json={"instances": [row]})
        assert v1.status_code == 200, (blank, v1.text)
        assert v1.json()["predictions"][0]["probability"] == expected
        compat = httpx.post(f"{url}/predict", json=row)
        assert compat.status_code == 200, (blank, compat.text)
        assert compat.json()["probability"] == expected
        listed = httpx.post(f"{url}/v1/models/churn:predict", json={"instances": [list(row.values())]})
        assert listed.json()["predictions"][0]["probability"] == expected
        v2 = httpx.post(f"{url}/v2/models/churn/infer", json=v2_body(row, {**TYPES, "tenure": "FP64"}))
        assert v2.status_code == 200, (blank, v2.text)
        assert v2.json()["outputs"][1]["data"] == [expected]
        single = {"inputs": [{"name": "x", "shape": [1, 5], "datatype": "BYTES", "data": [list(row.values())]}]}
        one_tensor = httpx.post(f"{url}/v2/models/churn/infer", json=single)
        assert one_tensor.status_code == 200, (blank, one_tensor.text)
        assert one_tensor.json()["outputs"][1]["data"] == [expected]
    # not blank, not a number: still a 400 naming the field
    bad = httpx.post(f"{url}/v1/models/churn:predict", json={"instances": [{**ROW, "tenure": "twelve"}]})
    assert bad.status_code == 400 and "tenure" in bad.json()["error"]


# -- item 11: a v2 request without Content-Type -------------------------------------------------------


def test_v2_request_without_content_type_is_a_400_saying_what_to_send(server):
    body = json.dumps(v2_body(ROW)).encode()
    answer = httpx.post(f"{server.url}/v2/models/churn/infer", content=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert "Content-Type" in error and "application/json" in error and "inference-header" not in error
    sent = httpx.post(f"{server.url}/v2/models/churn/infer", content=body, headers={"Content-Type": "application/json"})
    assert sent.status_code == 200, sent.text


# -- item 3: server readiness is the model's ----------------------------------------------------------


def test_server_readiness_says_whether_the_model_can_answer(start_server, server, model_dir, tmp_path):
    broken = tmp_path / "model"
    shutil.copytree(model_dir, broken)
    (broken / "contract.json").write_text("{}")
    not_loaded = start_server(broken, ready=False)
    assert httpx.get(f"{not_loaded.url}/v2/health/live").status_code == 200
    answer = httpx.get(f"{not_loaded.url}/v2/health/ready")
    assert answer.status_code == 503, answer.text
    assert "Traceback" not in not_loaded.log()
    ready = httpx.get(f"{server.url}/v2/health/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True}


# -- items 1 and 2: several workers follow a release; gRPC beside them --------------------------------


async def grpc_version(port: int) -> str:
    from kserve import InferenceGRPCClient
    from kserve.protocol.infer_type import InferInput, InferRequest

    client = InferenceGRPCClient(f"127.0.0.1:{port}", timeout=5)
    try:
        inputs = []
        for name, datatype in TYPES.items():
            tensor = InferInput(name, [1], datatype)
            dtype = {"BYTES": object, "INT64": np.int64, "FP64": np.float64}[datatype]
            tensor.set_data_from_numpy(np.array([ROW[name]], dtype=dtype))
            inputs.append(tensor)
        answer = await client.infer(InferRequest(model_name="churn", infer_inputs=inputs))
        return answer.model_version
    finally:
        await client.close()


async def grpc_repository_load(port: int) -> grpc.StatusCode:
    from kserve import InferenceGRPCClient
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    client = InferenceGRPCClient(f"127.0.0.1:{port}", timeout=5)
    try:
        await client._client_stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="churn"))
        return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as error:
        return error.code()
    finally:
        await client.close()


def test_every_worker_serves_a_release_within_one_watch_interval(start_server, model_dir, tmp_path):
    """Two HTTP workers and gRPC, under load: after a release every answer carries the new model_version
    within one watch interval (plus the time to load it), and no request fails during the switch."""
    interval, load_allowance = 1.0, 1.5
    served = tmp_path / "served" / "model"
    served.parent.mkdir()
    publish_directory(versioned_copy(model_dir, tmp_path / "one", "v-one"), served)
    grpc_port = free_port()
    server = start_server(
        served, "--workers", "2", "--watch", str(interval), "--grpc-port", str(grpc_port), "--enable-repository-api"
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            assert asyncio.run(grpc_version(grpc_port)) == "v-one"
            break
        except grpc.RpcError:
            time.sleep(0.5)  # the gRPC listener opens once every worker has started
    assert asyncio.run(grpc_version(grpc_port)) == "v-one"

    answers: list[tuple[float, int, str | None]] = []
    stop = threading.Event()

    def drive() -> None:
        while not stop.is_set():
            try:  # a new connection each time: the kernel spreads them over both workers
                response = httpx.post(f"{server.url}/v2/models/churn/infer", json=v2_body(ROW), timeout=10)
                version = response.json().get("model_version") if response.status_code == 200 else None
                answers.append((time.monotonic(), response.status_code, version))
            except httpx.HTTPError as error:
                answers.append((time.monotonic(), 0, repr(error)))

    drivers = [threading.Thread(target=drive) for _ in range(3)]
    for thread in drivers:
        thread.start()
    try:
        time.sleep(1.0)
        next_version = versioned_copy(model_dir, tmp_path / "two", "v-two")
        released = time.monotonic()
        publish_directory(next_version, served)
        time.sleep(interval + load_allowance + 2.0)
    finally:
        stop.set()
        for thread in drivers:
            thread.join()
    failed = [a for a in answers if a[1] != 200]
    assert not failed, failed[:5]
    settled = released + interval + load_allowance
    after = [version for at, _, version in answers if at > settled]
    assert len(after) > 10 and set(after) == {"v-two"}, sorted(set(after))
    assert {version for at, _, version in answers if at < released} == {"v-one"}
    assert asyncio.run(grpc_version(grpc_port)) == "v-two"  # the gRPC server (in the server process) too
    # a repository load would reach only one of the two workers: refused, saying why
    load = httpx.post(f"{server.url}/v2/repository/models/churn/load")
    assert load.status_code == 409 and "2 worker processes" in load.json()["error"], load.text
    unload = httpx.post(f"{server.url}/v2/repository/models/churn/unload")
    assert unload.status_code == 409, unload.text
    assert asyncio.run(grpc_repository_load(grpc_port)) == grpc.StatusCode.FAILED_PRECONDITION
    assert httpx.post(f"{server.url}/v2/models/churn/infer", json=v2_body(ROW)).status_code == 200


# -- issue 12 item 9: no unpickling to serve, a pinned metadata digest, repository API off --------------


class WritesMarker:
    """A pickle that runs code when loaded: it creates a file (what an attacker's pickle would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def tampered(model_dir: Path, target: Path, marker: Path, onnx: bool = True) -> Path:
    """The shared model with model.joblib replaced by a code-running pickle and metadata.json rewritten
    to match, as whoever can write the model bucket could do."""
    import pickle

    shutil.copytree(model_dir, target)
    if not onnx:
        (target / "model.onnx").unlink()
    (target / "model.joblib").write_bytes(pickle.dumps(WritesMarker(marker)))
    metadata = read_metadata(target)
    metadata.pop("files")
    write_metadata(target, metadata)
    return target


def test_a_compiled_model_serves_without_unpickling_the_pickle(model_dir, tmp_path):
    from churnflow.predictor.model import ChurnModel

    marker = tmp_path / "pickle-ran"
    model = ChurnModel("churn", str(tampered(model_dir, tmp_path / "model", marker)))
    assert model.load(), model.load_error
    assert model.loaded.released.scorer.backend == "onnxruntime"
    batch = model.predict(model.preprocess({"instances": [ROW]}))
    assert 0.0 <= float(batch.probability[0]) <= 1.0
    assert not marker.exists()


def test_a_pinned_metadata_digest_refuses_a_rewritten_artifact(start_server, model_dir, tmp_path):
    from churnflow.core.artifact import sha256_file
    from churnflow.predictor.model import ChurnModel

    pinned = sha256_file(model_dir / "metadata.json")
    assert ChurnModel("churn", str(model_dir), metadata_sha256=f"sha256:{pinned.upper()}").load()
    marker = tmp_path / "pickle-ran"
    rewritten = tampered(model_dir, tmp_path / "model", marker, onnx=False)  # no ONNX: the pickle would load
    server = start_server(rewritten, ready=False, env={"CHURNFLOW_METADATA_SHA256": pinned})
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 503
    assert httpx.get(f"{server.url}/v2/models/churn/ready").status_code == 503
    assert httpx.post(f"{server.url}/v1/models/churn:predict", json={"instances": [ROW]}).status_code == 503
    refusals = [line for line in server.log().splitlines() if "not loaded from" in line]
    assert len(refusals) == 1 and "metadata.json: SHA-256" in refusals[0] and pinned in refusals[0], server.log()
    assert "Traceback" not in server.log()
    assert not marker.exists()


def test_a_malformed_pinned_digest_is_one_line(tmp_path, model_dir):
    import subprocess

    from .conftest import CHURNFLOW

    done = subprocess.run(
        [CHURNFLOW, "serve", "--model-dir", str(model_dir), "--metadata-sha256", "abc"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "churnflow: error: --metadata-sha256: expected a SHA-256 (64 hex digits), got 'abc'"
    ]


def test_repository_routes_are_off_unless_enabled(server, start_server, model_dir):
    for action in ("load", "unload"):
        answer = httpx.post(f"{server.url}/v2/repository/models/churn/{action}")
        assert answer.status_code == 403 and "--enable-repository-api" in answer.json()["error"], answer.text
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200  # nothing was unloaded

    enabled = start_server(model_dir, env={"CHURNFLOW_REPOSITORY_API": "true"})
    assert httpx.post(f"{enabled.url}/v2/repository/models/other/load").status_code == 404
    assert httpx.post(f"{enabled.url}/v2/repository/models/churn/unload").status_code == 200
    assert httpx.get(f"{enabled.url}/v2/health/ready").status_code == 503  # readiness follows the unload
    assert httpx.post(f"{enabled.url}/v1/models/churn:predict", json={"instances": [ROW]}).status_code == 503
    loaded = httpx.post(f"{enabled.url}/v2/repository/models/churn/load")
    assert loaded.status_code == 200 and loaded.json()["model_version"], loaded.text
    assert httpx.get(f"{enabled.url}/v2/health/ready").status_code == 200


# -- issue 14: python -m churnflow.predictor on KServe's own argument parser ---------------------------


def test_python_m_takes_kserve_flags_and_refuses_unknown_ones(model_dir, tmp_path):
    """KServe's flags mean what they mean for any KServe predictor (here --enable_docs_url, which the
    old parser dropped silently); an unknown flag is an error, not ignored."""
    import os
    import signal
    import subprocess
    import sys

    from .conftest import free_port

    unknown = subprocess.run(
        [sys.executable, "-m", "churnflow.predictor", "--model_dir", str(model_dir), "--no_such_flag", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unknown.returncode == 2 and "unrecognized arguments: --no_such_flag" in unknown.stderr
    port = free_port()
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "churnflow.predictor", f"--model_dir={model_dir}", "--model_name=churn"]
        + [f"--http_port={port}", "--enable_docs_url", "true", "--max_threads", "2", "--timeout-keep-alive", "30"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            time.sleep(0.2)
        assert httpx.get(f"http://127.0.0.1:{port}/docs").status_code == 200
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/models/churn:predict", json={"instances": [ROW]})
        assert answer.status_code == 200, answer.text
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
        log.close()
