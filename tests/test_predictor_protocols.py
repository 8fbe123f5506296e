"""Issue 3: the predictor's alignment, scoring and both protocols against the real ModelServer.

Alignment (churnflow/core/encoding.py, every route) must equal a pandas get_dummies oracle exactly; the served
probabilities must equal the trained scikit-learn model's predict_proba (exactly on the sklearn path,
within 1e-15 on the compiled path, as the README claims); every bad request is a 400 naming the field.
"""

from __future__ import annotations

import asyncio
import pickle
import shutil

import httpx
import joblib
import numpy as np
import pandas as pd
import pytest
from kserve import InferenceRESTClient, RESTConfig
from kserve.protocol.infer_type import InferInput, InferRequest
from prometheus_client.parser import text_string_to_metric_families

from churnflow.core.calibration import load_calibrator
from churnflow.core.contract import FeatureContract, normalize_level
from churnflow.core.encoding import encode_contract_frame
from churnflow.core.errors import ChurnflowError
from churnflow.core.scorer import Scorer
from churnflow.predictor.request_decoding import Aligner

LEVELS = ["Month-to-month", "One year", "Two year", "Weekly", None, 3, "", "one year"]


def random_rows(count: int, seed: int = 0) -> list[dict]:
    """Rows a caller might send: shuffled keys, extra fields, null numerics, odd and absent levels."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(count):
        row = {
            "tenure": int(rng.integers(0, 80)) if rng.random() > 0.05 else None,
            "usage": float(rng.uniform(-5, 110)) if rng.random() > 0.05 else None,
            "age": int(rng.integers(15, 90)),
            "monthly_charges": float(np.round(rng.uniform(10, 160), int(rng.integers(0, 4)))),
        }
        choice = int(rng.integers(0, len(LEVELS) + 1))
        if choice < len(LEVELS):
            row["contract_type"] = LEVELS[choice]
        if rng.random() < 0.3:
            row["plan"] = "gold"  # extra field
        keys = list(row)
        rng.shuffle(keys)
        rows.append({k: row[k] for k in keys})
    return rows


def reference_matrix(contract: FeatureContract, rows: list[dict]) -> np.ndarray:
    """The oracle, independent of churnflow/core/encoding.py: pandas `get_dummies` keeping every level,
    reindexed to the training columns, blanks filled with the training medians."""
    frame = pd.DataFrame(rows)
    if "contract_type" not in frame:
        frame["contract_type"] = None
    numeric = frame[contract.numeric].astype("float64").fillna(contract.numeric_fill)
    levels = frame[list(contract.categorical)].astype(object).map(normalize_level)
    dummies = pd.get_dummies(levels, prefix_sep="_", dtype="float64")
    encoded = pd.concat([numeric, dummies], axis=1).reindex(columns=contract.feature_columns, fill_value=0.0)
    return encoded.to_numpy(dtype="float64")


def test_alignment_equals_pandas_semantics_on_thousands_of_rows(model_dir):
    contract = FeatureContract.load(model_dir)
    aligner = Aligner(contract)
    rows = random_rows(5000)
    aligned = aligner.encode_records(rows)
    assert np.array_equal(aligned.features, reference_matrix(contract, rows))
    assert aligned.extra_fields == sum("plan" in r for r in rows)
    assert aligned.unseen["contract_type"] == sum(r.get("contract_type") in ("Weekly", 3, "one year") for r in rows)
    as_lists = [[r.get(c) for c in contract.input_columns] for r in rows]
    assert np.array_equal(aligner.encode_records(as_lists).features, aligned.features)
    columns = {c: [r.get(c) for r in rows] for c in contract.input_columns}
    assert np.array_equal(aligner.encode_columns(columns, len(rows)).features, aligned.features)
    # training and evaluation read typed frames through the same encoder
    frame = pd.DataFrame(rows).astype({"contract_type": object})
    assert np.array_equal(encode_contract_frame(contract, frame), aligned.features)
    for row in rows[:300]:  # one-row requests take the encoder's one-level shortcut
        assert np.array_equal(aligner.encode_records([row]).features[0], aligned.features[rows.index(row)])


def test_strict_contract_rejects_unseen_and_missing_levels(model_dir):
    strict = Aligner(FeatureContract.load(model_dir).model_copy(update={"strict_categories": True}))
    good = {"tenure": 1, "usage": 2, "age": 3, "monthly_charges": 4}
    with pytest.raises(ChurnflowError, match=r"instances\[0\]: field 'contract_type': unseen category 'Weekly'"):
        strict.encode_records([{**good, "contract_type": "Weekly"}])
    with pytest.raises(ChurnflowError, match=r"instances\[1\]: missing required field 'contract_type'"):
        strict.encode_records([{**good, "contract_type": "One year"}, good])


def test_scoring_paths_agree_with_predict_proba(model_dir, tmp_path):
    contract = FeatureContract.load(model_dir)
    features = Aligner(contract).encode_records(random_rows(5000, seed=1)).features
    model = joblib.load(model_dir / "model.joblib")
    expected = model.predict_proba(features)[:, 1]
    compiled = Scorer(model_dir).probability(features)
    assert Scorer(model_dir).backend == "onnxruntime"
    differences = np.abs(compiled - expected)
    worst = np.argsort(differences)[::-1][:5]
    print(
        "compiled vs sklearn: max |diff| =",
        differences.max(),
        "rows over 1e-12:",
        [(int(i), float(differences[i])) for i in worst if differences[i] > 1e-12],
    )
    assert differences.max() <= 1e-15  # the README: equal to predict_proba to about 1e-16
    assert np.array_equal(Scorer(model_dir, prefer_compiled=False).probability(features), expected)
    without_onnx = tmp_path / "m"
    shutil.copytree(model_dir, without_onnx)
    (without_onnx / "model.onnx").unlink()
    assert Scorer(without_onnx).backend == "scikit-learn"
    copy = pickle.loads(pickle.dumps(Scorer(model_dir)))  # as KServe does to start extra workers
    assert np.array_equal(copy.probability(features), compiled)


@pytest.mark.parametrize("leaf", [1, 20])
def test_compiled_forest_equals_predict_proba_to_about_1e_16(tmp_path, leaf):
    """The README's claim, on a fully grown forest (pure 0/1 leaves) and on the tuned default's shape
    (min_samples_leaf=20: fractional leaves, where summation order and leaf precision show)."""
    from churnflow.components.preprocess.logic import preprocess
    from churnflow.components.train.logic import train
    from churnflow.core.config import load_config
    from churnflow.core.hyperparameters import ForestParams

    preprocess("", load_config(None), tmp_path / "train", tmp_path / "test", tmp_path / "contract", 2000, seed=11)
    train(
        tmp_path / "train", tmp_path / "contract", tmp_path / "m", ForestParams(n_estimators=60, min_samples_leaf=leaf)
    )
    contract = FeatureContract.load(tmp_path / "m")
    features = Aligner(contract).encode_records(random_rows(5000, seed=4)).features
    expected = joblib.load(tmp_path / "m" / "model.joblib").predict_proba(features)[:, 1]
    scorer = Scorer(tmp_path / "m")
    assert scorer.backend == "onnxruntime"
    assert np.abs(scorer.probability(features) - expected).max() <= 1e-15


ROW = {"tenure": 12, "usage": 50, "age": 30, "monthly_charges": 70, "contract_type": "Month-to-month"}


def expected_probability(model_dir, rows: list[dict]) -> np.ndarray:
    contract = FeatureContract.load(model_dir)
    raw = joblib.load(model_dir / "model.joblib").predict_proba(reference_matrix(contract, rows))[:, 1]
    return load_calibrator(model_dir).apply(raw)


def test_v1_forms_and_answers(server, model_dir):
    rows = random_rows(50, seed=2)
    answer = httpx.post(f"{server.url}/v1/models/churn:predict", json={"instances": rows})
    assert answer.status_code == 200, answer.text
    got = np.array([p["probability"] for p in answer.json()["predictions"]])
    assert np.allclose(got, expected_probability(model_dir, rows), rtol=0, atol=1e-6)
    assert all(set(p) == {"churn", "probability"} for p in answer.json()["predictions"])
    by_list = httpx.post(
        f"{server.url}/v1/models/churn:predict", json={"instances": [[12, 50, 30, 70, "Month-to-month"]]}
    )
    bare = httpx.post(f"{server.url}/v1/models/churn:predict", json=ROW)
    no_content_type = httpx.post(
        f"{server.url}/v1/models/churn:predict", content=f'{{"instances": [{pd.Series(ROW).to_json()}]}}'
    )
    original = httpx.post(f"{server.url}/predict", json=ROW)
    single = by_list.json()["predictions"][0]
    assert bare.json()["predictions"][0] == single == no_content_type.json()["predictions"][0]
    assert original.json() == single


def test_v2_forms_metadata_and_health(server, model_dir):
    rows = random_rows(20, seed=3)
    rows = [
        {
            **r,
            "contract_type": r.get("contract_type") if isinstance(r.get("contract_type"), str) else "One year",
            "tenure": r["tenure"] if r["tenure"] is not None else 5,
            "usage": r["usage"] or 1.0,
        }
        for r in rows
    ]
    types = {"tenure": "INT64", "usage": "FP64", "age": "INT64", "monthly_charges": "FP64", "contract_type": "BYTES"}
    body = {
        "id": "req-1",
        "inputs": [
            {"name": n, "shape": [len(rows)], "datatype": t, "data": [r[n] for r in rows]} for n, t in types.items()
        ],
    }
    answer = httpx.post(f"{server.url}/v2/models/churn/infer", json=body)
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    assert answer.json()["id"] == "req-1"
    assert outputs["churn"]["datatype"] == "INT64" and outputs["probability"]["datatype"] == "FP64"
    assert np.allclose(outputs["probability"]["data"], expected_probability(model_dir, rows), atol=1e-6)
    matrix = {
        "inputs": [
            {"name": "rows", "shape": [1, 5], "datatype": "BYTES", "data": ["12", "50", "30", "70", "Month-to-month"]}
        ]
    }
    one = httpx.post(f"{server.url}/v2/models/churn/infer", json=matrix).json()
    assert one["id"]  # KServe fails on a response without an id: one is always set
    v1 = httpx.post(f"{server.url}/v1/models/churn:predict", json={"instances": [ROW]}).json()["predictions"][0]
    assert one["outputs"][1]["data"][0] == v1["probability"]
    metadata = httpx.get(f"{server.url}/v2/models/churn").json()
    assert [(i["name"], i["datatype"]) for i in metadata["inputs"]] == list(types.items())
    for path in ("/v2/health/ready", "/v2/health/live", "/v2/models/churn/ready", "/v1/models/churn", "/v1/models"):
        assert httpx.get(f"{server.url}{path}").status_code == 200, path


def test_kserve_rest_client_v1_and_v2(server):
    async def call() -> tuple:
        v1 = InferenceRESTClient(RESTConfig(protocol="v1", retries=0))
        v2 = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
        try:
            first = await v1.infer(server.url, {"instances": [ROW]}, model_name="churn")
            inputs = []
            for name, datatype in (
                ("tenure", "INT64"),
                ("usage", "FP64"),
                ("age", "INT64"),
                ("monthly_charges", "FP64"),
                ("contract_type", "BYTES"),
            ):
                tensor = InferInput(name=name, shape=[1], datatype=datatype, data=[ROW[name]])
                inputs.append(tensor)
            second = await v2.infer(
                server.url, InferRequest(model_name="churn", infer_inputs=inputs), model_name="churn"
            )
            return first, second
        finally:
            await v1.close()
            await v2.close()

    first, second = asyncio.run(call())
    assert second.get_output_by_name("probability").data[0] == first["predictions"][0]["probability"]
    assert second.get_output_by_name("churn").data[0] == first["predictions"][0]["churn"]


BAD_V1 = [
    ({"instances": [{**ROW, "tenure": "twelve"}]}, "field 'tenure': expected a number"),
    ({"instances": [{**ROW, "age": True}]}, "field 'age': expected a number, got bool"),
    ({"instances": [{**ROW, "contract_type": {"a": 1}}]}, "field 'contract_type': expected a string category"),
    ({"instances": [{k: v for k, v in ROW.items() if k != "usage"}]}, "missing required field 'usage'"),
    ({"instances": []}, "instances: expected at least one row"),
    ({"instances": {"tenure": 1}}, "instances: expected a list of instances"),
    ({"instances": [[1, 2, 3]]}, "expected 5 values in column order"),
    ({"instances": ["row"]}, "expected an object keyed by column name"),
    ([ROW], "body: expected a JSON object"),
]


@pytest.mark.parametrize(("body", "message"), BAD_V1)
def test_bad_v1_requests_are_400_naming_the_field(server, body, message):
    answer = httpx.post(f"{server.url}/v1/models/churn:predict", json=body)
    assert answer.status_code == 400 and message in answer.json()["error"], answer.text


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"instances": [{"tenure": NaN}]}', "Unrecognized request format"),
        (b'{"instances": [{"tenure": 1e999}]}', "infinity"),
        (b'{"instances": [', "Unrecognized request format"),
    ],
)
def test_bad_json_is_400(server, raw, message):
    answer = httpx.post(
        f"{server.url}/v1/models/churn:predict", content=raw, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 400 and message in answer.json()["error"]


BAD_V2 = [
    ({"inputs": []}, "inputs: expected at least one input tensor"),
    ({"inputs": [{"name": "tenure", "shape": [2], "datatype": "INT64", "data": [1]}]}, "shape [2] needs 2 values"),
    ({"inputs": [{"name": "tenure", "shape": [1], "datatype": "BYTES", "data": ["1"]}]}, "expected a numeric datatype"),
    ({"inputs": [{"name": "tenure", "shape": [1], "datatype": "COMPLEX", "data": [1]}]}, "unsupported datatype"),
    ({"inputs": [{"name": "rows", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}, "shape [rows, 5]"),
    ({"inputs": [{"name": "tenure", "shape": [1], "datatype": "FP64", "data": [1]}]}, "missing required input 'usage'"),
    (
        {
            "inputs": [
                {"name": "tenure", "shape": [1], "datatype": "INT64", "data": [1]},
                {"name": "usage", "shape": [2], "datatype": "FP64", "data": [1, 2]},
            ]
        },
        "same number of rows",
    ),
    ({"inputs": [{"name": "tenure", "shape": [1], "datatype": "INT64"}]}, "inputs.0.data"),
]


@pytest.mark.parametrize(("body", "message"), BAD_V2)
def test_bad_v2_requests_are_400_naming_the_field(server, body, message):
    answer = httpx.post(f"{server.url}/v2/models/churn/infer", json=body)
    assert answer.status_code == 400 and message in answer.json()["error"], answer.text


HUGE = 1e39  # a finite JSON number no float32 can hold: the forest compares float32 values


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/models/churn:predict", {"instances": [{**ROW, "usage": HUGE}]}),
        ("/v1/models/churn:predict", {"instances": [[12, -HUGE, 30, 70, "One year"]]}),
        ("/v1/models/churn:explain", {"instances": [{**ROW, "usage": HUGE}]}),
        ("/predict", {**ROW, "usage": HUGE}),
        (
            "/v2/models/churn/infer",
            {
                "inputs": [
                    {"name": n, "shape": [1], "datatype": "FP64", "data": [HUGE if n == "usage" else ROW[n]]}
                    for n in ("tenure", "usage", "age", "monthly_charges")
                ]
                + [{"name": "contract_type", "shape": [1], "datatype": "BYTES", "data": ["One year"]}]
            },
        ),
        (
            "/v2/models/churn/infer",
            {"inputs": [{"name": "row", "shape": [1, 5], "datatype": "BYTES", "data": ["1", "1e39", "3", "4", "x"]}]},
        ),
    ],
)
def test_numbers_beyond_float32_are_400_naming_the_field_on_every_route(server, path, body):
    answer = httpx.post(f"{server.url}{path}", json=body)
    assert answer.status_code == 400, answer.text
    assert "usage" in answer.json()["error"] and "out of range" in answer.json()["error"], answer.text


def test_limits(start_server, model_dir):
    small = start_server(model_dir, "--max-batch", "5", env={"CHURNFLOW_MAX_BODY_BYTES": "2000"})
    too_many = httpx.post(f"{small.url}/v1/models/churn:predict", json={"instances": [ROW] * 6})
    assert too_many.status_code == 400 and "6 rows exceed the batch limit of 5" in too_many.json()["error"]
    too_big = httpx.post(f"{small.url}/v1/models/churn:predict", json={"instances": [ROW] * 30})
    assert too_big.status_code == 413 and "exceed the limit of 2000" in too_big.json()["error"]
    assert httpx.post(f"{small.url}/v1/models/churn:predict", json={"instances": [ROW] * 5}).status_code == 200


def test_metrics_are_exported_and_parse(server):
    httpx.post(
        f"{server.url}/v1/models/churn:predict",
        json={"instances": [{**ROW, "contract_type": "Weekly", "plan": "gold"}, ROW]},
    )
    httpx.post(f"{server.url}/v1/models/churn:predict", json={"instances": [{"tenure": "x"}]})
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}

    def value(name: str, **labels) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("churnflow_requests_total", protocol="v1", status="200") >= 1
    assert value("churnflow_requests_total", protocol="v1", status="400") >= 1
    assert value("churnflow_request_errors_total", protocol="v1", status="400") >= 1
    assert value("churnflow_predicted_rows_total", model_name="churn") >= 2
    churned = value("churnflow_predictions_total", model_name="churn", churn="1")
    retained = value("churnflow_predictions_total", model_name="churn", churn="0")
    assert churned + retained == value("churnflow_predicted_rows_total", model_name="churn")
    assert value("churnflow_unseen_category_total", model_name="churn", feature="contract_type") >= 1
    assert value("churnflow_extra_fields_total", model_name="churn") >= 1
    assert value("churnflow_churn_probability_count", model_name="churn") >= 2
    assert families["churnflow_request_duration_seconds"].type == "histogram"
    assert families["request_predict_seconds"].type == "histogram"  # KServe's own
    info = [s for s in families["churnflow_model_info"].samples]
    assert info and len(info[0].labels["sha256"]) == 64 and info[0].labels["model_version"]
    bins = [s for s in families["churnflow_feature_bin"].samples if s.name.endswith("_total")]
    assert {s.labels["feature"] for s in bins} == {"tenure", "usage", "age", "monthly_charges", "contract_type"}
    assert {s.labels["feature"] for s in families["churnflow_feature_reference_ratio"].samples} == {
        "tenure",
        "usage",
        "age",
        "monthly_charges",
        "contract_type",
    }
