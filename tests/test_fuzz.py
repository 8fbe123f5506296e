"""Issue 6: hostile input against the real server. Every answer to a bad request is a 4xx with an
{"error": ...} message; nothing answers 5xx; the process stays up and ready.

Two fuzzers: schemathesis, driven by the server's own OpenAPI document, and hypothesis payloads aimed
at our decoding (wrong types, NaN/Infinity, huge numbers, deep nesting, big batches, invalid UTF-8,
duplicate keys). Case counts are printed (pytest -s) for the README's reliability section.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

COLUMNS = ("tenure", "usage", "age", "monthly_charges", "contract_type")
SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
CASES = {"count": 0}

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=25,
)
instances = st.dictionaries(st.sampled_from(COLUMNS) | st.text(max_size=10), json_values, max_size=8)
v1_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({"instances": st.lists(instances | st.lists(scalars, max_size=7), max_size=6)}),
    st.fixed_dictionaries({"instances": json_values}),
    instances,
)
datatypes = st.sampled_from(["INT64", "FP64", "FP32", "BYTES", "BOOL", "UINT8", "FP16", "STRING", ""])
tensors = st.fixed_dictionaries(
    {
        "name": st.sampled_from(COLUMNS) | st.text(max_size=8),
        "shape": st.lists(st.integers(min_value=-2, max_value=4), max_size=3),
        "datatype": datatypes,
        "data": json_values,
    }
)
v2_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({"inputs": st.lists(tensors, max_size=6)}),
    st.fixed_dictionaries({"id": st.text(max_size=5), "inputs": json_values}),
)


def check(response: httpx.Response) -> None:
    CASES["count"] += 1
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body.get("error"), str) and body["error"], response.text[:300]
        assert "Traceback" not in body["error"]


def post(server, path: str, content: bytes) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", content=content, headers={"content-type": "application/json"}, timeout=30)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=v1_bodies)
def test_v1_payloads(server, body):
    text = json.dumps(body, allow_nan=True).encode()
    check(post(server, "/v1/models/churn:predict", text))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=v1_bodies)
def test_original_route_payloads(server, body):
    check(post(server, "/predict", json.dumps(body, allow_nan=True).encode()))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=v2_bodies)
def test_v2_payloads(server, body):
    check(post(server, "/v2/models/churn/infer", json.dumps(body, allow_nan=True).encode()))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.binary(max_size=200))
def test_arbitrary_bytes(server, raw):
    for path in ("/v1/models/churn:predict", "/v2/models/churn/infer", "/predict"):
        check(post(server, path, raw))


@pytest.mark.parametrize("path", ["/v1/models/churn:predict", "/v2/models/churn/infer", "/predict"])
def test_pathological_bodies(server, path):
    row = '{"tenure": 1, "usage": 2, "age": 3, "monthly_charges": 4, "contract_type": "One year"}'
    bodies = [
        b"[" * 100_000 + b"]" * 100_000,  # deep nesting
        ('{"instances": ' + "[" * 3000 + "1" + "]" * 3000 + "}").encode(),
        b'{"instances": [{"tenure": NaN, "usage": Infinity, "age": -Infinity, "monthly_charges": 1}]}',
        b'{"instances": [{"tenure": 1e999, "usage": 1, "age": 1, "monthly_charges": 1}]}',
        b'\xff\xfe{"instances": [\x81]}',  # invalid UTF-8
        b'{"instances": [{"tenure": 1, "tenure": "x", "usage": 1, "age": 1, "monthly_charges": 1}]}',  # duplicate
        ('{"instances": [' + ",".join([row] * 20_000) + "]}").encode(),  # over the batch limit
        b'{"inputs": [{"name": "tenure", "shape": [1000000000], "datatype": "FP64", "data": [1]}]}',
        b"",
    ]
    for body in bodies:
        response = post(server, path, body)
        check(response)
        if body and path != "/predict":
            assert 400 <= response.status_code < 500, (body[:60], response.status_code, response.text[:200])


def test_schemathesis_finds_no_server_error(server):
    result = subprocess.run(
        [
            SCHEMATHESIS,
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "40",
            "--seed",
            "1",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    generated = re.search(r"(\d+) generated", result.stdout)
    print(f"schemathesis: {generated.group(0) if generated else '?'}; hypothesis cases so far: {CASES['count']}")
    assert result.returncode == 0, result.stdout[-4000:]
    assert generated and int(generated.group(1)) > 100


def test_server_survived_everything(server):
    assert server.process.poll() is None
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
    ok = httpx.post(
        f"{server.url}/v1/models/churn:predict",
        json={"instances": [dict(zip(COLUMNS, (1, 2.0, 30, 50.0, "One year"), strict=True))]},
    )
    assert ok.status_code == 200
    print(f"hostile requests sent: {CASES['count']}")
