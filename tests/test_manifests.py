"""Issue 4: every Kubernetes YAML validated with real tools and schemas, no cluster needed.

- standard kinds: kubernetes-validate --strict (offline schemas);
- the kustomization: kubectl kustomize (no server needed);
- every InferenceService (manifests/, what render_inferenceservice() produces, and what a local run
  leaves): KServe's CRD openAPIV3Schema (tests/schemas.py: ../shared/kserve/, else downloaded and cached),
  unknown fields treated as errors — kubernetes-validate passes unknown kinds silently, so this check is ours;
- the Prometheus Operator kinds: the models of cloudcoil-models-prometheus-operator, also strict.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from churnflow.components.deploy.inferenceservice import render_inferenceservice

from . import schemas
from .conftest import KUBECTL

ROOT = Path(__file__).resolve().parents[1]
CRD = schemas.need(schemas.KSERVE_INFERENCESERVICE_CRD)  # ../shared/kserve/, else cached or downloaded
VALIDATE = str(Path(sys.executable).with_name("kubernetes-validate"))
STANDARD_KINDS = {
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "ConfigMap",
    "Service",
    "Deployment",
    "ClusterRole",
    "ClusterRoleBinding",
    "Secret",
    "NetworkPolicy",
}


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def manifest_files() -> list[Path]:
    return sorted(p for p in (ROOT / "manifests").rglob("*.yaml") if p.name != "kustomization.yaml")


@pytest.fixture(scope="module")
def isvc_validator() -> jsonschema.Draft7Validator:
    """Strict: unknown fields are errors; metadata is validated by the API server, not the CRD."""
    return schemas.crd_validator(CRD, "v1beta1")


def assert_valid_isvc(validator: jsonschema.Draft7Validator, manifest: dict[str, Any]) -> None:
    errors = sorted(validator.iter_errors(manifest), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:10])


def test_standard_kinds_pass_kubernetes_validate_strict():
    files = [p for p in manifest_files() if any(d["kind"] in STANDARD_KINDS for d in documents(p))]
    assert files, "no standard-kind manifests found"
    result = subprocess.run([VALIDATE, "--strict", *map(str, files)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout


def test_every_kind_is_known():
    for path in manifest_files():
        for document in documents(path):
            assert document["kind"] in STANDARD_KINDS | {
                "InferenceService",
                "PodMonitor",
                "ServiceMonitor",
                "PrometheusRule",
                "AuthorizationPolicy",  # Istio (issue 21, 2e)
                "PodDefault",  # Kubeflow's admission webhook (issue 21, 2g)
            }, (path, document["kind"])


def test_monitoring_resources_validate_against_the_prometheus_operator_models():
    """PodMonitor, ServiceMonitor and PrometheusRule: the operator's own schema, unknown fields refused."""
    checked = set()
    for path in manifest_files():
        for document in documents(path):
            if document["apiVersion"] == "monitoring.coreos.com/v1":
                assert schemas.validate_custom(document) == [], path
                checked.add(document["kind"])
    assert checked == {"PodMonitor", "ServiceMonitor", "PrometheusRule"}


def test_kustomization_builds():
    result = subprocess.run([KUBECTL, "kustomize", str(ROOT / "manifests")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    built = [d for d in yaml.safe_load_all(result.stdout) if d]
    kinds = {d["kind"] for d in built}
    assert {"ServiceAccount", "Role", "RoleBinding", "Secret", "NetworkPolicy"} <= kinds
    assert "InferenceService" not in kinds  # the deploy step creates it; a placeholder would be "previous"
    assert all(d["metadata"].get("namespace") for d in built if d["kind"] != "ClusterRole")


def test_rbac_grants_exactly_the_deploy_verbs():
    (role,) = [d for d in documents(ROOT / "manifests" / "rbac.yaml") if d["kind"] == "Role"]
    assert role["rules"] == [
        {
            "apiGroups": ["serving.kserve.io"],
            "resources": ["inferenceservices"],
            "verbs": ["get", "create", "patch"],
        },
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},
    ]  # sufficient and minimal: tests/test_deploy_kubernetes.py drives the rollout against it


def test_example_inferenceservice_is_what_deploy_renders(isvc_validator):
    (example,) = documents(ROOT / "manifests" / "inferenceservice.yaml")
    assert_valid_isvc(isvc_validator, example)
    rendered = render_inferenceservice(
        name="churn",
        namespace="kubeflow-user-example-com",
        storage_uri="s3://mlpipeline/churnflow/model",
        model_version="example",
        store_secret="churnflow-store",
    )
    assert example == rendered


@pytest.mark.parametrize("mode", ["Serverless", "RawDeployment"])
@pytest.mark.parametrize(
    "uri",
    [
        "s3://mlpipeline/v2/artifacts/run/model",
        "minio://mlpipeline/x/model",
        "pvc://models/churn",
        "file:///srv/models/churn",
    ],
)
def test_rendered_inferenceservices_validate_against_the_crd(isvc_validator, uri, mode):
    manifest = render_inferenceservice(
        name="churn",
        namespace="ns",
        storage_uri=uri,
        image="r.example/serve:2",
        model_version="20260101-abc",
        pipeline_run="Run of churnflow-training 2026-11-27 03:00:00",
        service_account="sa",
        deployment_mode=mode,
        metadata_sha256="0" * 64,
    )
    assert_valid_isvc(isvc_validator, manifest)
    container = manifest["spec"]["predictor"]["containers"][0]
    assert container["securityContext"]["runAsNonRoot"] and container["securityContext"]["readOnlyRootFilesystem"]
    # KServe's mutator would point prometheus.io/port at 9091 with its scraping flag on (see test_cluster_monitoring)
    assert manifest["spec"]["predictor"]["annotations"]["serving.kserve.io/enable-prometheus-scraping"] == "false"
    assert not {e.get("value") for e in container["env"]}.intersection({"minio://mlpipeline/x/model"})


def test_the_crd_check_catches_unknown_fields(isvc_validator):
    manifest = render_inferenceservice(name="churn", namespace="ns", storage_uri="s3://b/m")
    manifest["spec"]["predictor"]["replicas"] = 3  # not a field of the predictor spec
    manifest["spec"]["predictor"]["containers"][0]["imagePullPolice"] = "Always"  # typo
    messages = " ".join(e.message for e in isvc_validator.iter_errors(manifest))
    assert "replicas" in messages and "imagePullPolice" in messages


def test_the_inferenceservice_a_local_run_leaves_is_valid(isvc_validator, tmp_path, model_dir):
    from churnflow.components.deploy.logic import deploy

    evaluation = {"deploy": True, "metrics": {"roc_auc": 0.8}}
    deploy(
        model_dir,
        "s3://b/m",
        evaluation,
        tmp_path / "a.yaml",
        name="churn",
        namespace="ns",
        image="serve:1",
        model_version="v",
        local_release_dir=str(tmp_path / "out" / "model"),
    )
    (left,) = documents(tmp_path / "out" / "inferenceservice.yaml")
    assert_valid_isvc(isvc_validator, left)


def test_the_run_service_account_can_run_the_pipeline_pods():
    """Runs are created as churnflow-pipeline (submit/schedule's default), which replaces the profile's
    default-editor: its pods must still be able to do what Argo's executor and KFP's launcher do, and the
    retrain must be able to create a run in multi-user Kubeflow."""
    from churnflow.pipelines.kubeflow import DEFAULT_SERVICE_ACCOUNT

    docs = documents(ROOT / "manifests" / "pipeline-runner.yaml")
    (role,) = [d for d in docs if d["kind"] == "Role"]
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": DEFAULT_SERVICE_ACCOUNT}]
    granted = {
        (g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
    }
    for needed in [
        ("argoproj.io", "workflowtaskresults", "create"),
        ("", "pods", "patch"),
        ("", "secrets", "get"),
        ("pipelines.kubeflow.org", "runs", "create"),
        ("pipelines.kubeflow.org", "experiments", "create"),
    ]:
        assert needed in granted, needed
    assert not any(v in ("*", "delete", "deletecollection") for _, _, v in granted)
    assert "pipeline-runner.yaml" in (ROOT / "manifests" / "kustomization.yaml").read_text()
