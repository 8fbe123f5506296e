"""Issue 4: from a laptop — submit a run, schedule retraining, print or apply the InferenceService.

The real kfp.Client talks to a KFP API stand-in on loopback, the real kubernetes client to a Kubernetes
API stand-in; what arrives there is checked."""

from __future__ import annotations

import json
import subprocess

import yaml

from churnflow.cli import main
from churnflow.config import load_config, parse_config

from .conftest import CHURNFLOW
from .fake_kfp_api import FakeKfpApi
from .fake_kube_api import FakeKubeAPI

ROOT_CONFIG = "examples/telco/config.yaml"


def posted(path: str) -> list[dict]:
    return [body for method, p, body in FakeKfpApi.calls if (method, p) == ("POST", path)]


def test_submit_sends_the_compiled_pipeline_and_parameters(kfp_api, capsys):
    assert (
        main(
            [
                "submit",
                "--host",
                kfp_api,
                "--experiment",
                "churn",
                "--run-name",
                "nightly",
                "--image",
                "registry.example/train:3",
                "--data",
                "s3://data/customers.csv",
                "--config",
                ROOT_CONFIG,
                "--set",
                "min_roc_auc=0.8",
                "--set",
                "tune=false",
            ]
        )
        == 0
    )
    assert "started run run-42" in capsys.readouterr().out
    (run,) = posted("/apis/v2beta1/runs")
    assert run["display_name"] == "nightly" and run["experiment_id"] == "exp-1"
    assert run["pipeline_spec"]["pipelineInfo"]["name"] == "churnflow-training"
    images = {e["container"]["image"] for e in run["pipeline_spec"]["deploymentSpec"]["executors"].values()}
    assert images == {"registry.example/train:3"}
    parameters = run["runtime_config"]["parameters"]
    assert parameters["data_uri"] == "s3://data/customers.csv" and parameters["min_roc_auc"] == 0.8
    assert parameters["tune"] is False
    assert parse_config(json.loads(parameters["dataset_config"])) == load_config(ROOT_CONFIG)
    assert posted("/apis/v2beta1/experiments")[0]["display_name"] == "churn"


def test_schedule_creates_a_recurring_run(kfp_api, capsys):
    assert main(["schedule", "--host", kfp_api, "--cron", "0 0 3 * * *", "--data", "s3://data/latest.csv"]) == 0
    assert "recurring run job-7" in capsys.readouterr().out
    (job,) = posted("/apis/v2beta1/recurringruns")
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    assert job["max_concurrency"] == "1" or job["max_concurrency"] == 1
    assert job["runtime_config"]["parameters"]["data_uri"] == "s3://data/latest.csv"
    assert job["pipeline_spec"]["pipelineInfo"]["name"] == "churnflow-training"


def test_upload_sends_the_compiled_pipeline(kfp_api, capsys):
    assert main(["upload", "--host", kfp_api, "--name", "churnflow-training", "--image", "r.example/train:5"]) == 0
    assert "as pipeline-5" in capsys.readouterr().out
    (upload,) = posted("/apis/v2beta1/pipelines/upload")
    assert "pipelineInfo" in upload["multipart"] and "r.example/train:5" in upload["multipart"]


def test_kubeflow_errors_are_one_line(tmp_path):
    for args, message in (
        (["submit", "--host", "http://127.0.0.1:9"], "cannot reach the Kubeflow Pipelines API"),
        (["schedule", "--host", "http://127.0.0.1:9", "--cron", "0 3 * * *"], "expected KFP's six fields"),
        (["submit", "--host", "http://127.0.0.1:9", "--set", "nope=1"], "not a pipeline parameter"),
    ):
        result = subprocess.run([CHURNFLOW, *args], capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1


def test_deploy_dry_run_prints_and_touches_nothing(capsys):
    assert (
        main(
            ["deploy", "--model-uri", "s3://models/run-1/model", "--namespace", "ml", "--image", "serve:9", "--dry-run"]
        )
        == 0
    )
    manifest = yaml.safe_load(capsys.readouterr().out)
    assert manifest["kind"] == "InferenceService" and manifest["metadata"]["namespace"] == "ml"
    container = manifest["spec"]["predictor"]["containers"][0]
    assert container["image"] == "serve:9" and container["env"][0]["value"] == "s3://models/run-1/model"


def test_deploy_applies_through_a_kubeconfig(tmp_path, capsys):
    kube = FakeKubeAPI()
    try:
        kubeconfig = tmp_path / "config"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "test",
                    "clusters": [{"name": "test", "cluster": {"server": kube.url}}],
                    "contexts": [{"name": "test", "context": {"cluster": "test", "user": "u"}}],
                    "users": [{"name": "u", "user": {"token": "t"}}],
                }
            )
        )
        assert (
            main(
                [
                    "deploy",
                    "--model-uri",
                    "s3://models/v1",
                    "--namespace",
                    "ml",
                    "--kubeconfig",
                    str(kubeconfig),
                    "--timeout",
                    "5",
                ]
            )
            == 0
        )
        assert "created inferenceservice ml/churn" in capsys.readouterr().out
        assert ("ml", "churn") in kube.objects
    finally:
        kube.close()
