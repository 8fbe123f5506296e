"""Issue 22, items 4-5: the CLI holds no logic and no default of its own.

- `churnflow deploy` and the pipeline's deploy step take their canary, timeout and target defaults from
  one place (components/deploy/canary.py `DEFAULT_CANARY`, kubernetes.py, inferenceservice.py), and
  `churnflow drift` and the drift pipeline from churnflow/monitoring/thresholds.py;
- both roll out through the step's own `roll_out`: a canary judged worse is reported by the step (which
  succeeds) and is one `churnflow: error:` line with exit status 2 from the command;
- a parameter renamed (`deploy_mode` → `deploy_action`) still works under its old name in `--set`.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from churnflow.cli import build_parser, main
from churnflow.components.deploy import canary as canary_module
from churnflow.components.deploy.canary import DEFAULT_CANARY, NO_CANARY
from churnflow.components.deploy.kubernetes import READY_TIMEOUT_SECONDS
from churnflow.components.deploy.logic import deploy
from churnflow.monitoring.thresholds import DEFAULT_THRESHOLDS, DEFAULT_WINDOW

from .kube_api_double import KubeAPIDouble

# CLI option (dest) → training-pipeline parameter → the one declaration
CANARY_SETTINGS = {
    "canary_percent": ("canary_percent", NO_CANARY),
    "prometheus_url": ("prometheus_url", DEFAULT_CANARY.prometheus_url),
    "canary_bake_seconds": ("canary_bake_seconds", DEFAULT_CANARY.bake_seconds),
    "canary_max_error_ratio_increase": ("canary_max_error_ratio_increase", DEFAULT_CANARY.max_error_ratio_increase),
    "canary_max_p99_ratio": ("canary_max_p99_ratio", DEFAULT_CANARY.max_p99_ratio),
    "canary_min_requests": ("canary_min_requests", DEFAULT_CANARY.min_requests),
    "timeout": ("ready_timeout_seconds", READY_TIMEOUT_SECONDS),
    "namespace": ("namespace", None),
    "name": ("model_name", None),
    "deployment_mode": ("deployment_mode", None),
    "service_account": ("storage_service_account", None),
    "store_secret": ("store_secret", None),
}


def cli_defaults(*argv: str) -> dict:
    return vars(build_parser().parse_args(list(argv)))


def test_the_cli_the_pipeline_and_the_step_share_the_deploy_defaults() -> None:
    from churnflow.pipelines.churn_pipeline import churn_training_pipeline

    cli = cli_defaults("deploy", "--model-uri", "s3://m")
    pipeline = {name: spec.default for name, spec in churn_training_pipeline.component_spec.inputs.items()}
    for option, (parameter, declared) in CANARY_SETTINGS.items():
        assert cli[option] == pipeline[parameter], f"--{option.replace('_', '-')} vs pipeline parameter {parameter}"
        if declared is not None:
            assert cli[option] == declared, option
    step = inspect.signature(deploy).parameters
    assert step["canary"].default == DEFAULT_CANARY
    assert step["canary_percent"].default == NO_CANARY
    assert step["ready_timeout_seconds"].default == READY_TIMEOUT_SECONDS
    # `--canary` stays an alias of `--canary-percent`
    assert cli_defaults("deploy", "--model-uri", "s3://m", "--canary", "15")["canary_percent"] == 15


def test_the_cli_and_the_drift_pipeline_share_the_drift_defaults() -> None:
    from churnflow.pipelines.drift_pipeline import drift_check_pipeline

    cli = cli_defaults("drift", "--model-dir", "m")
    pipeline = {name: spec.default for name, spec in drift_check_pipeline.component_spec.inputs.items()}
    for name in ("psi_watch", "psi_act", "alpha", "precision_drop", "min_rows", "min_labelled"):
        assert cli[name] == pipeline[name] == getattr(DEFAULT_THRESHOLDS, name), name
    assert cli["model_name"] == pipeline["model_name"]
    assert pipeline["window"] == DEFAULT_WINDOW and cli["window"] is None  # None: the default window, or --since


def test_the_evaluation_gate_defaults_are_the_gates() -> None:
    from churnflow.components.evaluate.logic import Gate
    from churnflow.pipelines.churn_pipeline import churn_training_pipeline

    inputs = churn_training_pipeline.component_spec.inputs
    for name in ("min_roc_auc", "min_f1", "min_precision", "max_regression"):
        assert inputs[name].default == getattr(Gate(), name), name


def test_the_old_parameter_name_deploy_mode_still_sets_deploy_action() -> None:
    from churnflow.pipelines.churn_pipeline import churn_training_pipeline
    from churnflow.pipelines.parameters import parse_assignments

    assert parse_assignments(["deploy_mode=apply"], churn_training_pipeline) == {"deploy_action": "apply"}


@pytest.fixture
def rejecting_judge(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The canary's figures as Prometheus would give them for a canary twice as slow (p99): judged by the
    real `decide` with the policy the caller built, so the CLI's and the step's policies are what is tested."""
    policies: list = []

    def judge(*, policy, namespace, stable_version, canary_version):
        policies.append(policy)
        stable = {"model_version": stable_version, "requests": 100.0, "error_ratio": 0.0, "p99_seconds": 0.010}
        canary = {"model_version": canary_version, "requests": 30.0, "error_ratio": 0.0, "p99_seconds": 0.020}
        decision, reason = canary_module.decide(stable, canary, policy)
        return {"stable": stable, "canary": canary, "decision": decision, "reason": reason}

    monkeypatch.setattr(canary_module, "judge_from_prometheus", judge)
    return policies


def test_a_canary_judged_worse_fails_the_command_and_is_reported_by_the_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, model_dir: Path, rejecting_judge
) -> None:
    from churnflow.components.deploy.logic import roll_out

    # The command polls every 5 s, as on a cluster; the double's revisions get ready within a few polls.
    monkeypatch.setitem(roll_out.__kwdefaults__, "poll_seconds", 0.01)
    kube = KubeAPIDouble(namespace="ml")
    try:
        kubeconfig = str(kube.kubeconfig(tmp_path / "config"))
        args = ["deploy", "--namespace", "ml", "--kubeconfig", kubeconfig, "--timeout", "5"]
        args += ["--prometheus-url", "http://127.0.0.1:9", "--canary-bake-seconds", "0"]
        assert main([*args, "--model-uri", "s3://models/v1", "--model-version", "v1"]) == 0
        capsys.readouterr()

        code = main([*args, "--model-uri", "s3://models/v2", "--model-version", "v2", "--canary-percent", "10"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, err
        assert err.startswith("churnflow: error: deploy: inferenceservice ml/churn: canary v2 rolled back: p99 latency")
        assert "(allowed x1.5); rolled back to the previous model" in err
        assert kube.served_version("ml", "churn") == "v1"

        # The step, same rollout code: reported, not raised; the command's bound (x1.5) was the default.
        monkeypatch.setenv("KUBECONFIG", kubeconfig)
        report_path = tmp_path / "rollout.json"
        deploy(
            model_dir,
            "s3://models/v3",
            {},
            tmp_path / "isvc.yaml",
            name="churn",
            namespace="ml",
            image="serve:1",
            model_version="v3",
            action="apply",
            canary_percent=10,
            canary=canary_module.CanaryPolicy(prometheus_url="http://127.0.0.1:9", bake_seconds=0),
            ready_timeout_seconds=5,
            poll_seconds=0.01,
            rollout_report_path=report_path,
        )
        report = json.loads(report_path.read_text())
        assert report["action"] == "canary rolled back" and report["canary"]["decision"] == "rollback"
        assert "canary v3 rolled back: p99 latency" in report["message"]
        assert kube.served_version("ml", "churn") == "v1"
        assert [p.max_p99_ratio for p in rejecting_judge] == [DEFAULT_CANARY.max_p99_ratio] * 2
    finally:
        kube.close()
