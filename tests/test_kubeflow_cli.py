"""Issue 4: from a laptop — submit a run, schedule retraining, print or apply the InferenceService.

The real kfp.Client talks to the KFP API double (tests/kfp_api.py) on loopback, the real kubernetes
client to a Kubernetes API stand-in; what arrives there is checked."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import yaml

from churnflow.cli import main
from churnflow.core.config import config_to_json, load_config

from .conftest import CHURNFLOW
from .kfp_api import KfpApi
from .kube_api_double import KubeAPIDouble

ROOT_CONFIG = "examples/telco/config.yaml"


def pipeline_spec(body: dict) -> dict:
    """The pipeline spec of a run body (kfp.Client nests it beside the platform spec when there is one)."""
    spec = body["pipeline_spec"]
    return spec.get("pipeline_spec", spec)


def test_submit_sends_the_compiled_pipeline_and_parameters(kfp_api: KfpApi, capsys):
    assert (
        main(
            [
                "submit",
                "--host",
                kfp_api.url,
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
    (run,) = kfp_api.posted("/apis/v2beta1/runs")
    assert f"started run {next(iter(kfp_api.runs))}" in capsys.readouterr().out
    (experiment,) = kfp_api.experiments.values()
    assert run["display_name"] == "nightly" and run["experiment_id"] == experiment["experiment_id"]
    assert pipeline_spec(run)["pipelineInfo"]["name"] == "churnflow-training"
    images = {e["container"]["image"] for e in pipeline_spec(run)["deploymentSpec"]["executors"].values()}
    # the pipeline spec travels beside its platform spec (the Secrets the tasks read)
    platform = run["pipeline_spec"]["platform_spec"]
    assert "exec-preprocess-op" in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert images == {"registry.example/train:3"}
    parameters = run["runtime_config"]["parameters"]
    assert parameters["data_uri"] == "s3://data/customers.csv" and parameters["min_roc_auc"] == 0.8
    assert parameters["tune"] is False
    assert parameters["dataset_config"] == config_to_json(load_config(ROOT_CONFIG))
    assert experiment["display_name"] == "churn"


def test_schedule_creates_a_recurring_run(kfp_api: KfpApi, capsys):
    assert main(["schedule", "--host", kfp_api.url, "--cron", "0 0 3 * * *", "--data", "s3://data/latest.csv"]) == 0
    (job,) = kfp_api.posted("/apis/v2beta1/recurringruns")
    assert f"recurring run {next(iter(kfp_api.recurring_runs))}" in capsys.readouterr().out
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    assert job["max_concurrency"] == "1" or job["max_concurrency"] == 1
    assert job["runtime_config"]["parameters"]["data_uri"] == "s3://data/latest.csv"
    assert pipeline_spec(job)["pipelineInfo"]["name"] == "churnflow-training"


def test_upload_sends_the_compiled_pipeline(kfp_api: KfpApi, capsys):
    assert main(["upload", "--host", kfp_api.url, "--name", "churnflow-training", "--image", "r.example/train:5"]) == 0
    (pipeline_id,) = kfp_api.pipelines
    assert f"as {pipeline_id}" in capsys.readouterr().out
    (upload,) = kfp_api.posted("/apis/v2beta1/pipelines/upload")
    assert "pipelineInfo" in upload["files"]["uploadfile"] and "r.example/train:5" in upload["files"]["uploadfile"]
    # a second upload under the same name is refused by the API (409), in one line
    assert main(["upload", "--host", kfp_api.url, "--name", "churnflow-training"]) == 2
    assert "answered 409" in capsys.readouterr().err


def test_runs_use_the_pipeline_service_account(kfp_api: KfpApi):
    """Issue 12 item 6: runs and recurring runs are created with churnflow-pipeline (manifests/rbac.yaml)."""
    rbac = list(yaml.safe_load_all(Path("manifests/rbac.yaml").read_text()))
    assert {"kind": "ServiceAccount", "name": "churnflow-pipeline"} in [
        {"kind": d["kind"], "name": d["metadata"]["name"]} for d in rbac if d
    ]
    assert main(["submit", "--host", kfp_api.url]) == 0
    assert main(["schedule", "--host", kfp_api.url, "--cron", "0 0 3 * * *"]) == 0
    assert main(["submit", "--host", kfp_api.url, "--service-account", "trainer"]) == 0
    first, second = kfp_api.posted("/apis/v2beta1/runs")
    (job,) = kfp_api.posted("/apis/v2beta1/recurringruns")
    assert first["service_account"] == job["service_account"] == "churnflow-pipeline"
    assert second["service_account"] == "trainer"


def test_multi_user_runs_go_to_the_profile_with_the_token(kfp_api: KfpApi, tmp_path, monkeypatch, capsys):
    kfp_api.multi_user, kfp_api.token, kfp_api.namespaces = True, "sa-token-1", {"team-a"}
    token = tmp_path / "token"
    token.write_text("sa-token-1\n")
    # no token: 401 from the API, in one line
    assert main(["submit", "--host", kfp_api.url, "--namespace", "team-a"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "answered 401 Unauthorized: Unauthenticated" in err
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token))
    assert main(["submit", "--host", kfp_api.url, "--namespace", "team-a"]) == 0
    (experiment,) = kfp_api.experiments.values()
    (run,) = kfp_api.posted("/apis/v2beta1/runs")
    assert experiment["namespace"] == "team-a" and run["experiment_id"] == experiment["experiment_id"]
    capsys.readouterr()
    # a profile the token may not use, and no profile at all, are refused by the API in one line
    assert main(["submit", "--host", kfp_api.url, "--namespace", "team-b"]) == 2
    assert "answered 403 Forbidden: PermissionDenied: not allowed to list experiments in namespace 'team-b'" in (
        capsys.readouterr().err
    )
    assert main(["schedule", "--host", kfp_api.url, "--cron", "0 0 3 * * *"]) == 2
    assert "ListExperiments needs a namespace" in capsys.readouterr().err
    token.write_text("stolen")
    assert main(["upload", "--host", kfp_api.url, "--namespace", "team-a"]) == 2
    assert "answered 403" in capsys.readouterr().err


def test_api_failures_are_one_readable_line_with_the_cause(kfp_api: KfpApi, capsys):
    """Issue 17 item 10: the cause, whole, and no URL-encoded filter."""
    from .conftest import free_port

    closed = f"http://127.0.0.1:{free_port()}"
    for args in (["submit", "--host", closed], ["upload", "--host", closed]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err == (
            f"churnflow: error: kubeflow: cannot reach the Kubeflow Pipelines API at {closed}: Connection refused\n"
        )
    kfp_api.fail_with = 500
    for backend in ("auto", "2.4"):  # a named backend too: no 25 s of kfp.Client's healthz retries
        started = time.monotonic()
        assert main(["submit", "--host", kfp_api.url, "--kfp-backend", backend]) == 2
        assert time.monotonic() - started < 10
        assert capsys.readouterr().err == (
            f"churnflow: error: kubeflow: the Kubeflow Pipelines API at {kfp_api.url} answered 500 Internal Server "
            "Error: internal error: the database is unavailable (GET /apis/v2beta1/healthz)\n"
        )
    kfp_api.fail_with = None
    kfp_api.token = "secret"
    assert main(["submit", "--host", kfp_api.url, "--namespace", "team-a"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "churnflow: error: kubeflow: the run was not created: answered 401 Unauthorized: "
        "Unauthenticated: no bearer token in the Authorization header\n"
    )
    assert "%7B" not in err and "filter" not in err


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


def test_deploy_dry_run_shows_the_canary_and_the_mode_as_applied(capsys):
    args = ["deploy", "--model-uri", "s3://m/v2", "--dry-run", "--canary", "10", "--deployment-mode", "Serverless"]
    assert main(args) == 0
    manifest = yaml.safe_load(capsys.readouterr().out)
    assert manifest["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert manifest["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"


def test_deploy_names_a_missing_kubeconfig_in_one_line(tmp_path):
    result = subprocess.run(
        [CHURNFLOW, "deploy", "--model-uri", "s3://m/v1", "--kubeconfig", "/missing/kubeconfig"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("churnflow: error:") and "/missing/kubeconfig" in result.stderr


def test_deploy_applies_through_a_kubeconfig(tmp_path, capsys):
    kube = KubeAPIDouble(namespace="ml")
    try:
        kubeconfig = kube.kubeconfig(tmp_path / "config")
        args = ["deploy", "--model-uri", "s3://models/v1", "--namespace", "ml", "--kubeconfig", str(kubeconfig)]
        assert main([*args, "--model-version", "v1", "--timeout", "5", "--deployment-mode", "RawDeployment"]) == 0
        assert "created inferenceservice ml/churn" in capsys.readouterr().out
        isvc = kube.isvc()
        assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
        assert kube.served_version("ml", "churn") == "v1" and kube.denied == []
    finally:
        kube.close()


def test_submit_deploys_into_the_profile_namespace_it_runs_in(kfp_api: KfpApi, capsys):
    """Issue 21, 2h: `--namespace NS` is the profile the run's pods run in, with the deploy step's Role and
    the predictor's Istio policy; the deploy step deploys there too, unless `--set namespace=` says the
    same, and a contradiction is refused in one line before KFP is contacted."""

    def namespace_argument(body: dict) -> object:
        return body["runtime_config"]["parameters"].get("namespace")

    assert main(["submit", "--host", kfp_api.url, "--namespace", "team-a"]) == 0
    assert main(["schedule", "--host", kfp_api.url, "--namespace", "team-a", "--cron", "0 0 3 * * *"]) == 0
    assert main(["submit", "--host", kfp_api.url, "--namespace", "team-a", "--set", "namespace=team-a"]) == 0
    assert main(["submit", "--host", kfp_api.url, "--set", "namespace=serving"]) == 0  # single-user: no profile
    runs = kfp_api.posted("/apis/v2beta1/runs")
    (job,) = kfp_api.posted("/apis/v2beta1/recurringruns")
    assert [namespace_argument(r) for r in runs] == ["team-a", "team-a", "serving"]
    assert namespace_argument(job) == "team-a"
    capsys.readouterr()
    calls = len(kfp_api.calls)
    assert main(["submit", "--host", kfp_api.url, "--namespace", "team-a", "--set", "namespace=team-b"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("churnflow: error: --set namespace=team-b contradicts --namespace team-a:")
    assert len(kfp_api.calls) == calls  # refused before contacting KFP


def test_scoring_pipeline_is_submitted_uploaded_and_scheduled(kfp_api: KfpApi, capsys):
    """Issue 23: `--pipeline scoring` on submit, upload and schedule sends the scoring pipeline, whose
    required model_uri and data_uri the API double checks are given (as KFP's run validation does)."""
    from churnflow.pipelines.scoring_pipeline import PIPELINE_NAME

    scoring = ["--pipeline", "scoring", "--model-uri", "s3://models/churn/current", "--data", "s3://data/base/"]
    assert main(["submit", "--host", kfp_api.url, *scoring, "--set", "batch_rows=50000", "--parallelism", "3"]) == 0
    (run,) = kfp_api.posted("/apis/v2beta1/runs")
    assert pipeline_spec(run)["pipelineInfo"]["name"] == PIPELINE_NAME
    parameters = run["runtime_config"]["parameters"]
    assert parameters["model_uri"] == "s3://models/churn/current" and parameters["data_uri"] == "s3://data/base/"
    assert parameters["batch_rows"] == 50000
    assert "parallelismLimit: 3" in yaml.safe_dump(pipeline_spec(run))  # --parallelism compiled in

    assert main(["schedule", "--host", kfp_api.url, "--cron", "0 0 4 * * *", *scoring]) == 0
    (job,) = kfp_api.posted("/apis/v2beta1/recurringruns")
    assert pipeline_spec(job)["pipelineInfo"]["name"] == PIPELINE_NAME
    assert job["display_name"] == "churnflow-scoring"

    assert main(["upload", "--host", kfp_api.url, "--pipeline", "scoring"]) == 0
    (upload,) = kfp_api.posted("/apis/v2beta1/pipelines/upload")
    assert yaml.safe_load(upload["files"]["uploadfile"])["pipelineInfo"]["name"] == PIPELINE_NAME
    assert "uploaded pipeline 'churnflow-scoring'" in capsys.readouterr().out

    # without the model or the base: one line, before anything is sent
    assert main(["submit", "--host", kfp_api.url, "--pipeline", "scoring", "--data", "s3://data/base/"]) == 2
    assert capsys.readouterr().err.strip() == (
        "churnflow: error: --pipeline scoring: give --model-uri (the released model and the base to score)"
    )
    assert main(["submit", "--host", kfp_api.url, "--model-uri", "s3://models/churn/current"]) == 2
    assert "only the scoring pipeline takes it" in capsys.readouterr().err
    assert len(kfp_api.posted("/apis/v2beta1/runs")) == 1
