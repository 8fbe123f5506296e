"""Issue 12: what the InferenceService and manifests/ must be for a real Kubeflow + KServe cluster.

Labels the API server accepts (with the run's full name kept in an annotation), the storage service
account and its KServe S3 Secret, the deployment mode annotation and autoscaling per mode, the
hardened pod (read-only root with a scratch emptyDir as TMPDIR, seccomp, no capabilities), the metadata digest, and the
NetworkPolicy. The rendered manifests are also checked against KServe's CRD in test_manifests.py.
"""

from __future__ import annotations

import hashlib
import re
import string

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from churnflow.cli import main
from churnflow.components.deploy.inferenceservice import (
    DEFAULT_STORAGE_SERVICE_ACCOUNT,
    render_inferenceservice,
)
from churnflow.components.deploy.labels import label_value

from .test_manifests import ROOT, assert_valid_isvc, documents, isvc_validator  # noqa: F401 - fixture by name

# Kubernetes' own label value syntax (k8s.io/apimachinery validation.IsValidLabelValue), written out
# here independently of the code under test.
K8S_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
DISPLAY_NAME = "Run of churnflow-training 2026-11-27 03:00:00"


def is_label_value(value: str) -> bool:
    return len(value) <= 63 and K8S_LABEL_VALUE.fullmatch(value) is not None


def all_labels(manifest: dict) -> dict[str, str]:
    return {**manifest["metadata"]["labels"], **manifest["spec"]["predictor"]["labels"]}


# --- item 2: labels -----------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=200))
def test_label_value_is_always_a_valid_kubernetes_label_value(text):
    value = label_value(text)
    assert is_label_value(value), (text, value)
    assert (value == "") == (text == "")  # something non-empty never vanishes


@settings(max_examples=200, deadline=None)
@given(st.from_regex(K8S_LABEL_VALUE, fullmatch=True).filter(lambda v: len(v) <= 63))
def test_a_valid_label_value_is_kept_as_it_is(value):
    assert label_value(value) == value


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=string.ascii_letters + " :/", min_size=1, max_size=40), st.text(min_size=1, max_size=20))
def test_long_names_sharing_a_prefix_get_different_labels(suffix_a, suffix_b):
    prefix = "Run of churnflow-training " + "x" * 60
    a, b = prefix + suffix_a, prefix + suffix_a + suffix_b
    assert label_value(a) != label_value(b)


@pytest.mark.parametrize("text", ["\n", "run-1\n", "a" * 63 + "\n", "-", "é", " "])
def test_edge_cases_found_by_the_property_test(text):
    assert is_label_value(label_value(text)) and label_value(text)


def test_a_display_name_becomes_a_readable_label_and_an_exact_annotation():
    manifest = render_inferenceservice(
        name="churn", namespace="ns", storage_uri="s3://b/m", pipeline_run=DISPLAY_NAME, model_version="v 1:2"
    )
    labels = all_labels(manifest)
    assert all(is_label_value(v) for v in labels.values()), labels
    assert labels["churnflow.io/pipeline-run"] == "Run-of-churnflow-training-2026-11-27-03-00-00"
    assert manifest["metadata"]["annotations"]["churnflow.io/pipeline-run-name"] == DISPLAY_NAME


def test_an_unresolved_run_placeholder_is_no_run_name(tmp_path, model_dir):
    """Issue 21, 2f: a spec compiled for 2.5 but run by an older driver hands the steps the literal
    `{{$.pipeline_job_name}}`; neither the InferenceService's labels and annotations nor the model's
    metadata may carry it (compile and submit already drop it for such backends)."""
    from churnflow.components.train.logic import train
    from churnflow.core.hyperparameters import ForestParams

    placeholder = "{{$.pipeline_job_name}}"
    manifest = render_inferenceservice(name="churn", namespace="ns", storage_uri="s3://b/m", pipeline_run=placeholder)
    assert "pipeline_job" not in yaml.safe_dump(manifest)
    assert "churnflow.io/pipeline-run" not in all_labels(manifest)
    root = model_dir.parent  # the fixture's prepared train split and contract
    train(root / "train", root / "contract", tmp_path / "model", ForestParams(n_estimators=5), pipeline_run=placeholder)
    metadata = (tmp_path / "model" / "metadata.json").read_text()
    assert "pipeline_job" not in metadata and '"pipeline_run": ""' in metadata


def test_churnflow_deploy_run_name_reaches_the_same_rendering(capsys):
    assert main(["deploy", "--model-uri", "s3://b/m", "--run-name", DISPLAY_NAME, "--dry-run"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    expected = render_inferenceservice(
        name="churn", namespace="kubeflow-user-example-com", storage_uri="s3://b/m", pipeline_run=DISPLAY_NAME
    )
    assert printed == expected


# --- item 3: model storage credentials ----------------------------------------------------------


def test_the_predictor_runs_as_the_storage_service_account_manifests_ship():
    manifest = render_inferenceservice(name="churn", namespace="ns", storage_uri="minio://mlpipeline/a/model")
    assert manifest["spec"]["predictor"]["serviceAccountName"] == DEFAULT_STORAGE_SERVICE_ACCOUNT
    shipped = {(d["kind"], d["metadata"]["name"]): d for d in documents(ROOT / "manifests" / "storage.yaml")}
    account = shipped[("ServiceAccount", DEFAULT_STORAGE_SERVICE_ACCOUNT)]
    # KServe's credential builder reads the Secrets listed on the service account.
    (secret_name,) = [s["name"] for s in account["secrets"]]
    secret = shipped[("Secret", secret_name)]
    annotations = secret["metadata"]["annotations"]
    assert annotations["serving.kserve.io/s3-endpoint"] == "minio-service.kubeflow:9000"
    assert annotations["serving.kserve.io/s3-usehttps"] == "0"
    assert annotations["serving.kserve.io/s3-verifyssl"] == "0"
    assert annotations["serving.kserve.io/s3-region"]
    assert set(secret["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    kustomization = yaml.safe_load((ROOT / "manifests" / "kustomization.yaml").read_text())
    assert "storage.yaml" in kustomization["resources"]


def test_churnflow_deploy_service_account_option(capsys):
    assert main(["deploy", "--model-uri", "s3://b/m", "--service-account", "team-models", "--dry-run"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["spec"]["predictor"]["serviceAccountName"] == "team-models"
    assert main(["deploy", "--model-uri", "s3://b/m", "--service-account", "Team Models", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("churnflow: error: service_account:") and err.count("\n") == 1


# --- deployment mode and autoscaling ------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "metric", "target"), [("Serverless", "concurrency", 50), ("RawDeployment", "cpu", 80)]
)
def test_the_deployment_mode_is_rendered_and_autoscaling_follows_it(capsys, mode, metric, target):
    assert main(["deploy", "--model-uri", "s3://b/m", "--deployment-mode", mode, "--dry-run"]) == 0
    manifest = yaml.safe_load(capsys.readouterr().out)
    assert manifest["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == mode
    predictor = manifest["spec"]["predictor"]
    assert (predictor["scaleMetric"], predictor["scaleTarget"]) == (metric, target)


def test_an_unknown_deployment_mode_is_one_line(capsys):
    assert main(["deploy", "--model-uri", "s3://b/m", "--deployment-mode", "Raw", "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "churnflow: error: deployment_mode: expected Serverless or RawDeployment, got 'Raw'\n"


def test_the_deploy_step_refuses_an_unknown_mode_before_releasing(tmp_path, model_dir):
    from churnflow.components.deploy.logic import deploy
    from churnflow.core.errors import ChurnflowError

    with pytest.raises(ChurnflowError, match="deployment_mode"):
        deploy(
            model_dir,
            "s3://b/m",
            {"deploy": True},
            tmp_path / "isvc.yaml",
            name="churn",
            namespace="ns",
            image="serve:1",
            model_version="v",
            local_release_dir=str(tmp_path / "release" / "model"),
            deployment_mode="Knative",
        )
    assert not (tmp_path / "release").exists()


# --- item 9: hardening and the metadata digest --------------------------------------------------


@pytest.mark.parametrize("mode", ["Serverless", "RawDeployment"])
def test_the_predictor_pod_is_hardened(isvc_validator, mode):  # noqa: F811 - the imported fixture
    manifest = render_inferenceservice(name="churn", namespace="ns", storage_uri="s3://b/m", deployment_mode=mode)
    assert_valid_isvc(isvc_validator, manifest)
    predictor = manifest["spec"]["predictor"]
    (container,) = predictor["containers"]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["runAsNonRoot"] is True and context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "securityContext" not in predictor  # Knative refuses pod-level fields (tests/test_knative_admission.py)
    (scratch,) = container["volumeMounts"]
    (volume,) = [v for v in predictor["volumes"] if v["name"] == scratch["name"]]
    assert "emptyDir" in volume
    assert {"name": "TMPDIR", "value": scratch["mountPath"]} in container["env"]


def test_deploy_renders_the_digest_of_the_evaluated_models_metadata(tmp_path, model_dir):
    from churnflow.components.deploy.logic import deploy

    manifest = deploy(
        model_dir,
        "s3://b/m",
        {"deploy": True},
        tmp_path / "isvc.yaml",
        name="churn",
        namespace="ns",
        image="serve:1",
        model_version="v",
    )
    env = {e["name"]: e.get("value") for e in manifest["spec"]["predictor"]["containers"][0]["env"]}
    assert env["CHURNFLOW_METADATA_SHA256"] == hashlib.sha256((model_dir / "metadata.json").read_bytes()).hexdigest()
    assert yaml.safe_load((tmp_path / "isvc.yaml").read_text()) == manifest


def test_churnflow_deploy_digest_from_a_local_directory_or_the_option(capsys, model_dir):
    digest = hashlib.sha256((model_dir / "metadata.json").read_bytes()).hexdigest()
    assert main(["deploy", "--model-uri", str(model_dir), "--dry-run"]) == 0
    env = yaml.safe_load(capsys.readouterr().out)["spec"]["predictor"]["containers"][0]["env"]
    assert {"name": "CHURNFLOW_METADATA_SHA256", "value": digest} in env
    assert main(["deploy", "--model-uri", "s3://b/m", "--metadata-sha256", "abc", "--dry-run"]) == 2
    assert "metadata_sha256: expected 64 lower-case hex digits" in capsys.readouterr().err


def test_the_network_policy_admits_only_gateway_pipelines_and_prometheus():
    (policy,) = documents(ROOT / "manifests" / "networkpolicy.yaml")
    rendered = render_inferenceservice(name="churn", namespace="ns", storage_uri="s3://b/m")
    selected = policy["spec"]["podSelector"]["matchLabels"]
    assert selected.items() <= rendered["spec"]["predictor"]["labels"].items()  # it selects the predictor pods
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert "ports" not in rule or rule["ports"]
    sources = rule["from"]
    gateway = [s for s in sources if "namespaceSelector" in s and "podSelector" not in s]
    (expression,) = gateway[0]["namespaceSelector"]["matchExpressions"]
    assert {"istio-system", "knative-serving"} <= set(expression["values"])
    kfp_pods = {"pipelines.kubeflow.org/v2_component": "true"}
    pipelines = [s for s in sources if "podSelector" in s and "namespaceSelector" not in s]
    assert pipelines[0]["podSelector"]["matchLabels"] == kfp_pods  # this namespace's pipeline pods
    scoped = {
        s["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]: s["podSelector"]["matchLabels"]
        for s in sources
        if "podSelector" in s and "namespaceSelector" in s
    }
    assert scoped == {"kubeflow": kfp_pods, "monitoring": {"app.kubernetes.io/name": "prometheus"}}
    assert len(sources) == 4  # nothing else: not "any pod", not "any namespace"
    assert all(s.get("namespaceSelector") != {} and s.get("podSelector") != {} for s in sources)


def test_submit_refuses_an_unknown_deployment_mode_before_contacting_kubeflow(capsys):
    # port 9 (discard) is never a KFP API: the error must come before any connection
    assert main(["submit", "--host", "http://127.0.0.1:9", "--set", "deployment_mode=serverless"]) == 2
    err = capsys.readouterr().err
    assert err == "churnflow: error: deployment_mode: expected Serverless or RawDeployment, got 'serverless'\n"
