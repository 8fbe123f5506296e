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

from churnflow.artifact import publish_directory, read_metadata, write_metadata
from churnflow.contract import FeatureContract

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


def test_every_worker_serves_a_release_within_one_watch_interval(start_server, model_dir, tmp_path):
    """Two HTTP workers and gRPC, under load: after a release every answer carries the new model_version
    within one watch interval (plus the time to load it), and no request fails during the switch."""
    interval, load_allowance = 1.0, 1.5
    served = tmp_path / "served" / "model"
    served.parent.mkdir()
    publish_directory(versioned_copy(model_dir, tmp_path / "one", "v-one"), served)
    grpc_port = free_port()
    server = start_server(served, "--workers", "2", "--watch", str(interval), "--grpc-port", str(grpc_port))
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
    assert httpx.post(f"{server.url}/v2/models/churn/infer", json=v2_body(ROW)).status_code == 200
