"""scripts/cluster-e2e.sh: shellcheck-clean, and its --dry-run walks every step without a cluster,
compiling the pipeline, building manifests/ and rendering the canaries' InferenceServices, which are
validated here offline (kubernetes-validate --strict in the script, KServe's CRD schema below)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .test_cluster_rendering import is_label_value
from .test_manifests import ROOT, assert_valid_isvc, isvc_validator  # noqa: F401 - fixture by name

SCRIPT = ROOT / "scripts" / "cluster-e2e.sh"
BIN = Path(sys.executable).parent
STEPS = [
    "preflight",
    "render offline",
    "apply: namespace, manifests/",
    "storage credentials",
    "data credentials",
    "submit",
    "wait: the run succeeds",
    "score: the classic churn request over v1 and v2",
    "served version",
    "canary that passes",
    "canary that fails",
]


def dry_run(workdir: Path, *arguments: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "CHURNFLOW": str(BIN / "churnflow"),
        "PYTHON": sys.executable,
        "KUBECONFIG": str(workdir / "no-such-kubeconfig"),  # any cluster call would fail
    }
    return subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", "--workdir", str(workdir), *arguments],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_the_script_passes_shellcheck():
    assert shutil.which("shellcheck"), "shellcheck is missing: bash scripts/system-deps.sh installs it"
    result = subprocess.run(["shellcheck", "--severity=style", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("mode", ["Serverless", "RawDeployment"])
def test_dry_run_walks_every_step_and_renders_valid_manifests(tmp_path, isvc_validator, mode):  # noqa: F811
    result = dry_run(tmp_path, "--mode", mode, "--namespace", "churn-e2e", "--serve-image", "r.example/serve:9")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout + result.stderr  # commands are shown on stderr, as set -x does
    headers = [line for line in out.splitlines() if line.startswith("[step ")]
    assert len(headers) == len(STEPS), headers
    for header, expected in zip(headers, STEPS, strict=True):
        assert expected in header, (header, expected)
    assert f"dry run complete ({len(STEPS)} steps)" in out
    assert "manifests/ built and valid (kubernetes-validate --strict)" in out
    # the cluster commands are shown, not run
    for command in (
        f"+ kubectl apply -f {tmp_path}/manifests.yaml",
        "upload --host http://localhost:8888",
        "submit --host http://localhost:8888",
        f"--set deployment_mode={mode}",
        "kubectl wait --for=condition=Ready inferenceservice/churn -n churn-e2e",
        "/v1/models/churn:predict",
        "/v2/models/churn/infer",
        "s3://mlpipeline/churnflow-e2e/no-such-model",
    ):
        assert command in out, command
    assert ("--canary-percent 20" in out) == (mode == "Serverless")

    pipeline, _platform = yaml.safe_load_all((tmp_path / "churn_pipeline.yaml").read_text())  # spec, Secrets
    assert pipeline["pipelineInfo"]["name"] == "churnflow-training"
    built = [d for d in yaml.safe_load_all((tmp_path / "manifests.yaml").read_text()) if d]
    assert {d["metadata"].get("namespace") for d in built} == {"churn-e2e"}
    assert {"Role", "RoleBinding", "ServiceAccount", "Secret", "NetworkPolicy"} <= {d["kind"] for d in built}
    # KFP standalone: no profile, so neither the PodDefault (no CRD) nor the Istio policy (issue 21)
    assert not {"PodDefault", "AuthorizationPolicy"} & {d["kind"] for d in built}
    for canary in ("pass", "fail"):
        manifest = yaml.safe_load((tmp_path / f"isvc-canary-{canary}.yaml").read_text())
        assert_valid_isvc(isvc_validator, manifest)
        assert manifest["metadata"]["namespace"] == "churn-e2e"
        assert manifest["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == mode
        assert manifest["spec"]["predictor"]["containers"][0]["image"] == "r.example/serve:9"
        assert all(is_label_value(v) for v in manifest["metadata"]["labels"].values())
    access = [d for d in yaml.safe_load_all((tmp_path / "access.yaml").read_text()) if d]
    assert [d["kind"] for d in access] == ["Namespace", "RoleBinding"]


def test_a_bad_mode_is_one_line(tmp_path):
    result = dry_run(tmp_path, "--mode", "Knative")
    assert result.returncode == 2
    assert result.stderr == "cluster-e2e: error: --mode: expected Serverless or RawDeployment, got 'Knative'\n"
