"""Drift: known answers on synthetic streams, the report, the CLI, and the KFP drift-check pipeline.

Streams come from the same seeded generator the model was trained on (churnflow.synthetic), scored
through the real ChurnModel request path into a real SQLite store; shifted streams move tenure and
the contract mix. Outcomes are the generator's own churn draws (no accuracy drift) or draws from a
changed churn behaviour (accuracy drift without any data drift).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from churnflow.cli import main
from churnflow.components.drift_check.logic import pipeline_parameters, retraining_arguments, start_retraining
from churnflow.components.evaluate.logic import Gate, evaluate
from churnflow.drift import DRIFT, INSUFFICIENT, OK, Thresholds, accuracy_drift, psi, run_check
from churnflow.drift_report import write_report
from churnflow.errors import ChurnflowError
from churnflow.predictor.model import ChurnModel
from churnflow.store.logger import PredictionLogger
from churnflow.store.outcomes import record_outcomes
from churnflow.synthetic import CONTRACT_TYPES, synthetic_customers

from .fake_kfp_api import FakeKfpApi

ROWS = 2000


@pytest.fixture(scope="module")
def released(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared model plus its evaluation.json, as deploy releases it (a copy: the fixture stays clean)."""
    target = tmp_path_factory.mktemp("released") / "model"
    shutil.copytree(model_dir, target)
    report = evaluate(model_dir, model_dir.parent / "test", Gate(min_roc_auc=0.5))
    (target / "evaluation.json").write_text(json.dumps(report))
    return target


def shifted(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Newer customers (tenure drawn from 1-24 months instead of 1-72) and far more month-to-month contracts."""
    rng = np.random.default_rng(seed)
    return frame.assign(
        tenure=rng.integers(1, 25, len(frame)),
        contract_type=rng.choice(np.array(CONTRACT_TYPES, dtype=object), len(frame), p=[0.85, 0.10, 0.05]),
    )


def changed_behaviour(frame: pd.DataFrame, seed: int) -> np.ndarray:
    """Churn outcomes from a changed world: contract and tenure no longer matter, only charges do a little."""
    rng = np.random.default_rng(seed)
    logit = -0.8 + 0.01 * (frame["monthly_charges"].to_numpy() - 85)
    return (rng.random(len(frame)) < 1 / (1 + np.exp(-logit))).astype(int)


def log_stream(released: Path, url: str, frame: pd.DataFrame, batch: int = 50) -> str:
    """Scores `frame` through ChurnModel into the store; returns the model name used."""
    model = ChurnModel(f"churn-drift-{uuid.uuid4().hex[:8]}", str(released))
    assert model.load()
    model.prediction_log = PredictionLogger(url, model.name)
    records = frame.drop(columns=["churn"]).to_dict("records")
    for start in range(0, len(records), batch):
        model.predict(model.preprocess({"instances": records[start : start + batch]}))
    assert model.prediction_log.flush(30)
    model.prediction_log.close()
    return model.name


def outcomes_for(frame: pd.DataFrame, churned: np.ndarray) -> list[dict]:
    return [{"customer_id": c, "churned": int(y)} for c, y in zip(frame["customer_id"], churned, strict=True)]


def test_the_evaluation_carries_the_probability_baseline(released: Path) -> None:
    evaluation = json.loads((released / "evaluation.json").read_text())
    baseline = evaluation["probability_reference"]
    assert baseline["rows"] == evaluation["metrics"]["rows"] == 400
    assert len(baseline["fractions"]) == len(baseline["edges"]) + 1
    assert sum(baseline["fractions"]) == pytest.approx(1.0)
    assert len(baseline["sample"]) == 400 and all(0 <= p <= 1 for p in baseline["sample"])


def test_psi_known_values() -> None:
    assert psi([0.25] * 4, [0.25] * 4) == 0.0
    # hand computed: (0.4-0.25)ln(0.4/0.25) + (0.1-0.25)ln(0.1/0.25) twice
    expected = 2 * (0.15 * np.log(0.4 / 0.25) + (-0.15) * np.log(0.1 / 0.25))
    assert psi([0.25] * 4, [0.4, 0.1, 0.4, 0.1]) == pytest.approx(expected)
    assert psi([0.5, 0.5, 0.0], [0.5, 0.4, 0.1]) > 0.25  # a bin training never saw weighs heavily


@pytest.mark.parametrize("seed", [101, 202])
def test_an_unshifted_stream_is_not_flagged(released: Path, tmp_path: Path, seed: int) -> None:
    url = f"sqlite:///{tmp_path / 'unshifted.db'}"
    frame = synthetic_customers(ROWS, seed=seed)
    name = log_stream(released, url, frame)
    record_outcomes(url, outcomes_for(frame, frame["churn"].to_numpy()))
    report = run_check(url, released, model_name=name)
    assert report["window"]["rows"] == ROWS and report["accuracy"]["labelled"] == ROWS
    assert report["drift"] is False, report["reasons"]
    features = report["data_drift"]["features"]
    assert set(features) == {"tenure", "usage", "age", "monthly_charges", "contract_type"}
    assert all(f["psi"] < 0.1 for f in features.values()), {n: f["psi"] for n, f in features.items()}
    assert report["prediction_drift"]["status"] != DRIFT and report["prediction_drift"]["psi"] < 0.1
    assert report["accuracy"]["status"] == OK
    assert abs(report["accuracy"]["precision_drop"]) < 0.10


def test_a_shifted_stream_is_flagged_on_the_shifted_features(released: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shifted.db'}"
    frame = shifted(synthetic_customers(ROWS, seed=303), seed=304)
    name = log_stream(released, url, frame)
    report = run_check(url, released, model_name=name)
    assert report["drift"] is True
    assert sorted(report["data_drift"]["drifted"]) == ["contract_type", "tenure"]
    features = report["data_drift"]["features"]
    for feature in ("tenure", "contract_type"):
        assert features[feature]["psi"] >= 0.25
        assert features[feature]["p_value"] < report["data_drift"]["p_threshold"]
    assert report["data_drift"]["p_threshold"] == pytest.approx(0.05 / 5)  # Bonferroni over five features
    assert features["tenure"]["test"] == "ks" and features["contract_type"]["test"] == "chi-square"
    for feature in ("usage", "age", "monthly_charges"):
        assert features[feature]["status"] != DRIFT and features[feature]["psi"] < 0.1
    assert report["prediction_drift"]["status"] == DRIFT  # short tenure, monthly contracts: more churn predicted
    assert any(reason.startswith("feature tenure: PSI") for reason in report["reasons"])
    assert report["accuracy"]["status"] == INSUFFICIENT  # no ground truth yet


def test_a_precision_drop_is_flagged_without_any_data_drift(released: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'concept.db'}"
    frame = synthetic_customers(ROWS, seed=404)
    name = log_stream(released, url, frame)
    record_outcomes(url, outcomes_for(frame, changed_behaviour(frame, seed=405)))
    report = run_check(url, released, model_name=name)
    assert report["data_drift"]["drifted"] == [] and report["prediction_drift"]["status"] != DRIFT
    accuracy = report["accuracy"]
    assert accuracy["status"] == DRIFT and accuracy["precision_drop"] > 0.10
    assert accuracy["live"]["precision"] < accuracy["reference"]["precision"]
    assert report["drift"] is True
    assert report["reasons"] == [
        f"precision {accuracy['live']['precision']:.3f} is {accuracy['precision_drop']:.1%} below the "
        f"evaluation's {accuracy['reference']['precision']:.3f} (limit 10%)"
    ]


def _labelled(true_positives: int, false_positives: int) -> pd.DataFrame:
    rows = [(1, 0.9, 1)] * true_positives + [(1, 0.8, 0)] * false_positives + [(0, 0.2, 0)] * 50 + [(0, 0.3, 1)] * 10
    return pd.DataFrame(rows, columns=["churn", "probability", "churned"])


def test_the_precision_rule_is_a_relative_drop_and_configurable() -> None:
    evaluation = {"precision": 0.70, "recall": 0.8, "roc_auc": 0.85}
    strict, loose = Thresholds(min_labelled=10), Thresholds(min_labelled=10, precision_drop=0.2)
    result = accuracy_drift(evaluation, _labelled(60, 40), strict)  # precision 0.60: 14.3% below 0.70
    assert result["live"]["precision"] == pytest.approx(0.60)
    assert result["precision_drop"] == pytest.approx(1 / 7)
    assert result["status"] == DRIFT
    assert accuracy_drift(evaluation, _labelled(60, 40), loose)["status"] == OK
    assert accuracy_drift(evaluation, _labelled(65, 35), strict)["status"] == OK  # 0.65: 7.1% below
    assert accuracy_drift(evaluation, _labelled(5, 5), Thresholds())["status"] == INSUFFICIENT
    with pytest.raises(ChurnflowError, match="precision_drop must be between 0 and 1"):
        Thresholds(precision_drop=1.5)


def test_too_few_predictions_are_not_judged(released: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'few.db'}"
    name = log_stream(released, url, shifted(synthetic_customers(50, seed=5), seed=6))
    report = run_check(url, released, model_name=name)
    assert report["drift"] is False
    assert report["data_drift"]["status"] == INSUFFICIENT
    assert "50 predictions in the window; at least 100 are needed" in report["notes"][0]


def test_cli_exit_codes_and_report_files(
    released: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    calm, drifted = tmp_path / "calm.db", tmp_path / "drifted.db"
    # the default model name, so the CLI's default --model-name finds them
    model = ChurnModel("churn", str(released))
    assert model.load()
    for path, frame in (
        (calm, synthetic_customers(1000, seed=506)),
        (drifted, shifted(synthetic_customers(1000, 7), 8)),
    ):
        model.prediction_log = PredictionLogger(f"sqlite:///{path}", "churn")
        model.predict(model.preprocess({"instances": frame.drop(columns=["churn"]).to_dict("records")}))
        model.prediction_log.close()
    reports = tmp_path / "reports"
    code = main(["drift", "--store", f"sqlite:///{calm}", "--model-dir", str(released), "--report", str(reports / "a")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "→ no drift" in out and "over 1000 predictions" in out

    monkeypatch.setenv("CHURNFLOW_STORE_URL", f"sqlite:///{drifted}")
    code = main(["drift", "--model-dir", str(released), "--window", "800", "--report", str(reports / "b")])
    out = capsys.readouterr().out
    assert code == 3
    assert "DRIFT: feature tenure" in out and "over 800 predictions" in out
    report = json.loads((reports / "b" / "drift.json").read_text())
    assert report["drift"] is True and report["window"]["rows"] == 800

    page = (reports / "b" / "drift.html").read_text()
    assert page.startswith("<!doctype html>") and page.count("<svg") == 6  # five features and the probabilities
    assert "Drift: feature tenure" in page and "contract_type" in page

    prom = (reports / "b" / "drift.prom").read_text()
    families = {f.name: f for f in text_string_to_metric_families(prom)}
    psi_samples = {s.labels["feature"]: s.value for s in families["churnflow_feature_drift_psi"].samples}
    assert psi_samples["tenure"] == pytest.approx(report["data_drift"]["features"]["tenure"]["psi"])
    assert families["churnflow_drift_detected"].samples[0].value == 1.0
    assert families["churnflow_drift_window_predictions"].samples[0].value == 800
    if shutil.which("promtool"):
        lint = subprocess.run(["promtool", "check", "metrics"], input=prom, capture_output=True, text=True)
        assert lint.returncode == 0, lint.stdout + lint.stderr

    code = main(["drift", "--model-dir", str(released), "--since", "2000-01-01T00:00:00Z"])
    assert code == 3 and "over 1000 predictions" in capsys.readouterr().out
    code = main(["drift", "--model-dir", str(released), "--since", "last tuesday"])
    assert code == 2 and "--since: expected an ISO 8601 time" in capsys.readouterr().err
    code = main(["drift", "--model-dir", str(tmp_path)])
    assert code == 2 and "no reference.json" in capsys.readouterr().err
    code = main(["drift", "--model-dir", str(released), "--psi-watch", "0.3"])
    assert code == 2 and "need 0 < psi_watch <= psi_act" in capsys.readouterr().err


def test_report_html_escapes_what_it_shows(released: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    frame = synthetic_customers(200, seed=9).assign(contract_type="<script>alert(1)</script>")
    name = log_stream(released, url, frame)
    paths = write_report(run_check(url, released, model_name=name), tmp_path / "r")
    page = paths["html"].read_text()
    assert "<script>" not in page and "&lt;script&gt;" not in page  # unseen levels are counted, never named
    assert "contract_type" in page


# -- the KFP drift-check pipeline ------------------------------------------------------------------------


def test_the_drift_pipeline_compiles(tmp_path: Path) -> None:
    from churnflow.pipelines.drift_pipeline import compile_drift_pipeline

    path = tmp_path / "drift.yaml"
    compile_drift_pipeline(str(path), image="registry.example/churnflow-train:test")
    documents = list(yaml.safe_load_all(path.read_text()))
    spec, platform = documents[0], documents[1]
    assert spec["pipelineInfo"]["name"] == "churnflow-drift-check"
    executors = spec["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values() if "container" in e} == {
        "registry.example/churnflow-train:test"
    }
    assert sum("importer" in e for e in executors.values()) == 2
    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["drift-check-op"]["cachingOptions"] == {}  # caching off: a schedule re-checks the same inputs
    condition = tasks["condition-1"]["triggerPolicy"]["condition"]
    assert condition == "inputs.parameter_values['pipelinechannel--drift-check-op-Output'] == true"
    inner = spec["components"]["comp-condition-1"]["dag"]["tasks"]["condition-2"]["triggerPolicy"]["condition"]
    assert inner == "inputs.parameter_values['pipelinechannel--retrain'] == true"
    assert "retrain-op" in spec["components"]["comp-condition-2"]["dag"]["tasks"]
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {"model_uri", "evaluation_uri", "store_secret", "pushgateway", "kfp_host", "data_uri"} <= set(params)
    assert "store_url" not in params  # the URL holds a password: a Secret's name is the parameter
    secret = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-drift-check-op"]
    assert secret["secretAsEnv"][0]["keyToEnv"] == [{"envVar": "CHURNFLOW_STORE_URL", "secretKey": "url"}]
    assert secret["secretAsEnv"][0]["secretNameParameter"] == {"componentInputParameter": "store_secret"}
    assert secret["secretAsEnv"][0].get("optional") is not True  # backends before KFP 2.14 reject optional


def test_retraining_starts_the_training_pipeline_through_kfp_client(kfp_api: str) -> None:
    run_id, arguments = start_retraining(
        kfp_api, "s3://bucket/customers/latest.csv", '{"min_roc_auc": 0.75}', name="retrain on drift"
    )
    assert run_id == "run-42"
    assert arguments == {"data_uri": "s3://bucket/customers/latest.csv", "min_roc_auc": 0.75}
    runs = [body for method, path, body in FakeKfpApi.calls if (method, path) == ("POST", "/apis/v2beta1/runs")]
    assert len(runs) == 1
    run = runs[0]
    assert run["display_name"] == "retrain on drift" and run["experiment_id"] == "exp-1"
    spec = run["pipeline_spec"].get("pipeline_spec", run["pipeline_spec"])  # beside its platform spec (Secrets)
    assert spec["pipelineInfo"]["name"] == "churnflow-training"
    assert run["runtime_config"]["parameters"] == arguments
    with pytest.raises(ChurnflowError, match="'learning_rate' is not a training pipeline parameter"):
        retraining_arguments("", '{"learning_rate": 0.1}', {"data_uri": "STRING"})


@pytest.mark.slow
def test_the_drift_pipeline_runs_locally_and_retrains_on_drift(
    released: Path, tmp_path: Path, kfp_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kfp.local runs the check in a task process; on drift the retrain task submits the training run.
    The store URL reaches the task as the store Secret's env does on a cluster (kfp.local ignores Secrets)."""
    from kfp import local

    from churnflow.pipelines.drift_pipeline import drift_check_pipeline

    url = f"sqlite:///{tmp_path / 'stream.db'}"
    model = ChurnModel("churn", str(released))
    assert model.load()
    model.prediction_log = PredictionLogger(url, "churn")
    frame = shifted(synthetic_customers(500, seed=11), seed=12)
    model.predict(model.preprocess({"instances": frame.drop(columns=["churn"]).to_dict("records")}))
    model.prediction_log.close()
    monkeypatch.setenv("CHURNFLOW_STORE_URL", url)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"), raise_on_error=True)
    task = drift_check_pipeline(
        model_uri=str(released),
        evaluation_uri=str(released / "evaluation.json"),
        pushgateway="",
        kfp_host=kfp_api,
        data_uri="/data/customers-latest.csv",
    )
    assert task.output is True
    runs = [body for method, path, body in FakeKfpApi.calls if (method, path) == ("POST", "/apis/v2beta1/runs")]
    assert len(runs) == 1
    assert runs[0]["runtime_config"]["parameters"] == {"data_uri": "/data/customers-latest.csv"}
    assert runs[0]["display_name"].startswith("retrain churn on drift")


def test_compiled_training_parameters_are_read_from_the_package(tmp_path: Path) -> None:
    from churnflow.pipelines.kubeflow import compile_pipeline

    parameters = pipeline_parameters(compile_pipeline(tmp_path / "train.yaml"))
    assert parameters["data_uri"] == "STRING" and parameters["min_roc_auc"] == "NUMBER_DOUBLE"
