"""Drift: known answers on synthetic streams, the report, the CLI, and the KFP drift-check pipeline.

Streams come from the same seeded generator the model was trained on (churnflow.core.synthetic), scored
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
from churnflow.components.evaluate.logic import Gate, evaluate
from churnflow.core.errors import ChurnflowError
from churnflow.core.synthetic import CONTRACT_TYPES, synthetic_customers
from churnflow.monitoring.drift import DRIFT, INSUFFICIENT, OK, Thresholds, accuracy_drift, psi, run_check
from churnflow.monitoring.drift_report import write_report
from churnflow.pipelines.retraining import pipeline_parameters, retraining_arguments, start_retraining
from churnflow.predictor.model import ChurnModel
from churnflow.store.logger import PredictionLogger
from churnflow.store.outcomes import record_outcomes

from .kfp_api import KfpApi

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


def test_report_html_escapes_what_it_shows(tmp_path: Path) -> None:
    """Training levels are the caller's text and the page names them: markup in a level must come out
    escaped. Levels unseen in training are counted in the "unseen" bin and never named at all."""
    import html

    from churnflow.components.preprocess.logic import preprocess
    from churnflow.components.train.logic import train
    from churnflow.core.config import load_config
    from churnflow.core.hyperparameters import ForestParams

    marked = {level: f'<b onclick="x()">{level}</b> & co' for level in CONTRACT_TYPES}
    table = synthetic_customers(600, seed=5)
    table["contract_type"] = table["contract_type"].map(marked)
    table.to_csv(tmp_path / "table.csv", index=False)
    root = tmp_path / "run"
    preprocess(str(tmp_path / "table.csv"), load_config(None), root / "train", root / "test", root / "contract")
    train(root / "train", root / "contract", root / "model", ForestParams(n_estimators=10))
    (root / "model" / "evaluation.json").write_text(
        json.dumps(evaluate(root / "model", root / "test", Gate(min_roc_auc=0.0)))
    )
    live = synthetic_customers(200, seed=9)
    live["contract_type"] = live["contract_type"].map(marked)
    live.loc[::4, "contract_type"] = "<script>alert(1)</script>"  # unseen in training
    url = f"sqlite:///{tmp_path / 'x.db'}"
    name = log_stream(root / "model", url, live)
    page = write_report(run_check(url, root / "model", model_name=name), tmp_path / "r")["html"].read_text()
    for level in marked.values():
        assert html.escape(level[:18], quote=True) in page  # the bar label: the level, escaped
        assert html.escape(level, quote=True) in page  # the bar's tooltip: the whole level, escaped
    assert "<b " not in page and 'onclick="' not in page and " & co" not in page
    assert "alert(1)" not in page  # an unseen level is never shown, escaped or not
    assert "contract_type" in page and "unseen" in page


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


def run_spec(body: dict) -> dict:
    spec = body["pipeline_spec"]
    return spec.get("pipeline_spec", spec)


def multi_user(kfp_api: KfpApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The double as multi-user Kubeflow: the projected token is required, profile team-a allowed."""
    kfp_api.multi_user, kfp_api.token, kfp_api.namespaces = True, "projected-sa-token", {"team-a"}
    (tmp_path / "token").write_text("projected-sa-token")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "token"))


def test_retraining_starts_the_training_pipeline_through_kfp_client(
    kfp_api: KfpApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13 item 6: the token, the profile, the running pipeline's image, deploy action, data, config."""
    multi_user(kfp_api, tmp_path, monkeypatch)
    kfp_api.version = "2.5.0"
    config = '{"target": "churn"}'
    run_id, arguments = start_retraining(
        kfp_api.url,
        "s3://bucket/customers/latest.csv",
        '{"min_roc_auc": 0.75}',
        name="retrain on drift",
        namespace="team-a",
        image="registry.example/churnflow-train:7",
        deploy_action="apply",
        dataset_config=config,
    )
    assert arguments == {
        "data_uri": "s3://bucket/customers/latest.csv",
        "min_roc_auc": 0.75,
        "deploy_action": "apply",
        "dataset_config": config,
        "namespace": "team-a",
    }
    (run,) = kfp_api.posted("/apis/v2beta1/runs")
    assert run_id in kfp_api.runs
    (experiment,) = kfp_api.experiments.values()
    assert experiment["namespace"] == "team-a" and run["experiment_id"] == experiment["experiment_id"]
    assert run["display_name"] == "retrain on drift" and run["service_account"] == "churnflow-pipeline"
    spec = run_spec(run)
    assert spec["pipelineInfo"]["name"] == "churnflow-training"
    assert {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()} == {
        "registry.example/churnflow-train:7"
    }
    assert "tune-op" in spec["root"]["dag"]["tasks"]  # compiled for the 2.5 backend the API reports
    assert run["runtime_config"]["parameters"] == arguments
    with pytest.raises(ChurnflowError, match="'learning_rate' is not a training pipeline parameter"):
        retraining_arguments("", '{"learning_rate": 0.1}', {"data_uri": "STRING"})


def test_retraining_without_the_token_or_in_another_profile_fails_in_one_line(
    kfp_api: KfpApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    multi_user(kfp_api, tmp_path, monkeypatch)
    with pytest.raises(ChurnflowError, match="answered 403 Forbidden: .* namespace 'team-b'"):
        start_retraining(kfp_api.url, namespace="team-b")
    monkeypatch.delenv("KF_PIPELINES_SA_TOKEN_PATH")
    with pytest.raises(ChurnflowError, match="answered 401 Unauthorized"):
        start_retraining(kfp_api.url, namespace="team-a")
    assert kfp_api.runs == {}


def test_retraining_defaults_to_the_pods_own_profile(
    kfp_api: KfpApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from churnflow.pipelines import retraining

    multi_user(kfp_api, tmp_path, monkeypatch)
    (tmp_path / "namespace").write_text("team-a")
    monkeypatch.setattr(retraining, "POD_NAMESPACE_FILE", tmp_path / "namespace")
    start_retraining(kfp_api.url)
    (experiment,) = kfp_api.experiments.values()
    assert experiment["namespace"] == "team-a"


def test_the_drift_pipeline_retrains_on_its_own_image(tmp_path: Path) -> None:
    from churnflow.pipelines.drift_pipeline import compile_drift_pipeline

    path = tmp_path / "drift.yaml"
    compile_drift_pipeline(str(path), image="registry.example/churnflow-train:9")
    spec = yaml.safe_load_all(path.read_text()).__next__()
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["train_image"]["defaultValue"] == "registry.example/churnflow-train:9"
    assert parameters["deploy_action"]["defaultValue"] == "apply"
    retrain = spec["components"]["comp-condition-2"]["dag"]["tasks"]["retrain-op"]["inputs"]["parameters"]
    for name in ("train_image", "deploy_action", "dataset_config", "data_uri", "namespace", "service_account"):
        assert retrain[name]["componentInputParameter"] == f"pipelinechannel--{name}"
    platform = list(yaml.safe_load_all(path.read_text()))[1]["platforms"]["kubernetes"]["deploymentSpec"]
    labels = platform["executors"]["exec-retrain-op"]["podMetadata"]["labels"]
    assert labels == {"access-ml-pipeline": "true"}  # Kubeflow's PodDefault mounts the KFP token


@pytest.mark.slow
def test_the_drift_pipeline_runs_locally_and_retrains_on_drift(
    released: Path, tmp_path: Path, kfp_api: KfpApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kfp.local runs the check in a task process; on drift the retrain task submits the training run
    with the token, into the profile, on the pipeline's image. The store URL reaches the task as the
    store Secret's env does on a cluster (kfp.local ignores Secrets)."""
    from kfp import local

    from churnflow.pipelines.drift_pipeline import drift_check_pipeline

    url = f"sqlite:///{tmp_path / 'stream.db'}"
    model = ChurnModel("churn", str(released))
    assert model.load()
    model.prediction_log = PredictionLogger(url, "churn")
    frame = shifted(synthetic_customers(500, seed=11), seed=12)
    model.predict(model.preprocess({"instances": frame.drop(columns=["churn"]).to_dict("records")}))
    model.prediction_log.close()
    multi_user(kfp_api, tmp_path, monkeypatch)
    monkeypatch.setenv("CHURNFLOW_STORE_URL", url)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"), raise_on_error=True)
    task = drift_check_pipeline(
        model_uri=str(released),
        evaluation_uri=str(released / "evaluation.json"),
        pushgateway="",
        kfp_host=kfp_api.url,
        namespace="team-a",
        data_uri="/data/customers-latest.csv",
        train_image="registry.example/churnflow-train:5",
    )
    assert task.output is True
    (run,) = kfp_api.posted("/apis/v2beta1/runs")
    assert run["runtime_config"]["parameters"] == {
        "data_uri": "/data/customers-latest.csv",
        "deploy_action": "apply",
        "namespace": "team-a",
    }
    assert run["display_name"].startswith("retrain churn on drift")
    images = {e["container"]["image"] for e in run_spec(run)["deploymentSpec"]["executors"].values()}
    assert images == {"registry.example/churnflow-train:5"}
    assert [e["namespace"] for e in kfp_api.experiments.values()] == ["team-a"]


def test_compiled_training_parameters_are_read_from_the_package(tmp_path: Path) -> None:
    from churnflow.pipelines.kubeflow import compile_pipeline

    parameters = pipeline_parameters(compile_pipeline(tmp_path / "train.yaml"))
    assert parameters["data_uri"] == "STRING" and parameters["min_roc_auc"] == "NUMBER_DOUBLE"
