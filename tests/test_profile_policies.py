"""Issue 21, 2e and 2g: what a Kubeflow profile namespace needs for churnflow beyond RBAC.

2e. Istio: the deploy step's serving check (GET <status.address.url>/v2/models/<name>) meets Kubeflow's
mesh-wide allow-nothing and the profile's ns-owner-access-istio. The Kubernetes API double's predictor
applies Istio's semantics to the peer its sidecar sees (tests/kube_api_double.py, Istio section): in
Serverless mode Knative's local gateway or activator, in RawDeployment the pipeline pod itself. Without
manifests/authorizationpolicy.yaml the check is refused in Serverless mode; with it, it passes, and
nothing beyond the check is admitted. Prometheus' scrape of /metrics is admitted by the profile's own
policy.

2g. The PodDefault that gives the drift pipeline's retrain step its KFP API token: its selector is the
label the retrain pod carries, and its token is where, and for whom, the retrain's client reads it.
"""

from __future__ import annotations

import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from churnflow.components.deploy.kubernetes import CanaryPolicy, RolloutFailed, apply_inferenceservice

from .conftest import KUBECTL
from .kube_api_double import (
    ACTIVATOR_PRINCIPAL,
    LOCAL_GATEWAY_PRINCIPAL,
    SOURCE_HEADER,
    KubeAPIDouble,
    MeshRequest,
    istio_allows,
    manifest_policies,
    profile_owner_policy,
)
from .test_knative_admission import manifest  # the one rendering of a test predictor

ROOT = Path(__file__).resolve().parents[1]
PIPELINE_PRINCIPAL = "cluster.local/ns/ml/sa/churnflow-pipeline"
PROMETHEUS_PRINCIPAL = "cluster.local/ns/monitoring/sa/prometheus-k8s"


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def deploy(kube: KubeAPIDouble, version: str, mode: str, timeout: float = 2.0):
    return apply_inferenceservice(
        kube.client(),
        manifest(version, mode),
        timeout_seconds=timeout,
        poll_seconds=0.005,
        canary_policy=CanaryPolicy(bake_seconds=0),
    )


def get(url: str, principal: str | None = None) -> int:
    request = urllib.request.Request(url, headers={SOURCE_HEADER: principal} if principal is not None else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - the double on loopback
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture
def without_our_policy():
    api = KubeAPIDouble(authorization_policies=[])
    yield api
    api.close()


@pytest.fixture
def with_our_policy():
    api = KubeAPIDouble()
    yield api
    api.close()


# -- 2e: Istio ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("activator", [False, True])
def test_serverless_serving_check_is_refused_without_the_policy(without_our_policy, activator):
    kube = without_our_policy
    kube.activator_in_path = activator
    with pytest.raises(RolloutFailed) as failed:
        deploy(kube, "v1", "Serverless", timeout=0.3)
    message = str(failed.value)
    assert "answered 403 (RBAC: access denied): Istio refuses the serving check" in message
    assert "manifests/authorizationpolicy.yaml" in message
    peer = ACTIVATOR_PRINCIPAL if activator else LOCAL_GATEWAY_PRINCIPAL
    assert (peer, "GET", "/v2/models/churn") in kube.mesh_denied


@pytest.mark.parametrize("activator", [False, True])
def test_serverless_serving_check_passes_with_the_policy(with_our_policy, activator):
    kube = with_our_policy
    kube.activator_in_path = activator
    rollout = deploy(kube, "v1", "Serverless")
    assert rollout.model_version == "v1" and kube.mesh_denied == []
    rollout = deploy(kube, "v2", "Serverless")
    assert kube.served_version("ml", "churn") == "v2" and kube.mesh_denied == []


def test_raw_deployment_check_arrives_as_the_pipeline_pod_and_the_profile_admits_it(without_our_policy):
    """RawDeployment's address is the predictor Service itself: the peer is the pipeline pod, of the
    profile's namespace, which ns-owner-access-istio admits; a pod without a sidecar (plaintext) is not."""
    kube = without_our_policy
    assert deploy(kube, "v1", "RawDeployment").model_version == "v1"
    assert kube.mesh_denied == []
    address = kube.isvc()["status"]["address"]["url"]
    assert get(f"{address}/v2/models/churn", principal="") == 403  # no sidecar: no namespace to match


def test_the_policy_admits_the_check_and_nothing_else(with_our_policy):
    kube = with_our_policy
    deploy(kube, "v1", "Serverless")
    address = kube.isvc()["status"]["address"]["url"]
    assert get(f"{address}/v2/models/churn") == 200
    kube.mesh_denied.clear()
    request = urllib.request.Request(f"{address}/v2/models/churn/infer", data=b"{}", method="POST")
    try:
        urllib.request.urlopen(request, timeout=5)  # noqa: S310 - the double on loopback
        status = 200
    except urllib.error.HTTPError as error:
        status = error.code
    assert status == 403  # predictions through the gateway: not this policy's business
    assert get(f"{address}/v2/models/other") == 403
    # directly to a pod, a workload of another namespace may read neither metadata nor anything else
    pod = f"{kube.url}/_pods/ml/churn"
    assert get(f"{pod}/v2/models/churn", principal="cluster.local/ns/other/sa/default") == 403
    assert get(f"{pod}/v2/models/churn", principal=PIPELINE_PRINCIPAL) == 200


@pytest.mark.parametrize("principal", [PROMETHEUS_PRINCIPAL, ""])
def test_prometheus_scrapes_metrics_under_the_profiles_own_policy(without_our_policy, principal):
    """Prometheus scrapes pod addresses on /metrics, with or without a sidecar: ns-owner-access-istio's
    path rule admits anyone there (and nowhere else), so our policy adds nothing for it."""
    kube = without_our_policy
    deploy(kube, "v1", "RawDeployment")
    pod = f"{kube.url}/_pods/ml/churn"
    assert get(f"{pod}/metrics", principal=principal) == 200
    assert get(f"{pod}/v2/models/churn", principal=principal) == 403


def test_the_policy_selects_the_predictor_pods_in_both_modes(with_our_policy):
    """KServe's own pod label, not our `app` label, which RawDeployment overwrites (isvc.<name>-predictor)."""
    kube = with_our_policy
    deploy(kube, "v1", "Serverless")
    (policy,) = manifest_policies("ml")
    selector = policy["spec"]["selector"]["matchLabels"]
    assert selector.items() <= kube.pod_labels("ml", "churn").items()
    raw = KubeAPIDouble(default_mode="RawDeployment")
    try:
        deploy(raw, "v1", "RawDeployment")
        assert selector.items() <= raw.pod_labels("ml", "churn").items()
        assert raw.pod_labels("ml", "churn")["app"] == "isvc.churn-predictor"
    finally:
        raw.close()


def test_the_pipeline_principal_follows_the_kustomization_namespace():
    """The deploy step's own service account is named in the namespace the kustomization sets."""
    for namespace in ("ml", "team-a"):
        (policy,) = manifest_policies(namespace)
        principals = policy["spec"]["rules"][0]["from"][0]["source"]["principals"]
        assert f"cluster.local/ns/{namespace}/sa/churnflow-pipeline" in principals
        assert policy["metadata"]["namespace"] == namespace


def test_the_istio_model_follows_istios_semantics():
    """The double's rules on small cases: DENY wins, ALLOW needs a match, wildcards, mTLS-only fields."""
    workload = {"app": "x"}
    allow_get = {
        "metadata": {"name": "a", "namespace": "ml"},
        "spec": {"selector": {"matchLabels": {"app": "x"}}, "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]},
    }
    deny_admin = {
        "metadata": {"name": "d", "namespace": "ml"},
        "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}]},
    }
    get_root, post_root = MeshRequest("GET", "/", None), MeshRequest("POST", "/", None)
    assert istio_allows([], "ml", workload, post_root)  # no policy: allowed
    assert istio_allows([allow_get], "ml", workload, get_root)
    assert not istio_allows([allow_get], "ml", workload, post_root)
    assert not istio_allows([allow_get, deny_admin], "ml", workload, MeshRequest("GET", "/admin/x", None))
    assert istio_allows([allow_get], "ml", {"app": "y"}, post_root)  # not selected
    assert istio_allows([allow_get], "other", workload, post_root)  # another namespace's policy
    # "requests without a JWT": no RequestAuthentication, so every request matches notRequestPrincipals
    deny_anonymous = {
        "metadata": {"name": "n", "namespace": "ml"},
        "spec": {"action": "DENY", "rules": [{"from": [{"source": {"notRequestPrincipals": ["*"]}}]}]},
    }
    assert not istio_allows([deny_anonymous], "ml", workload, get_root)
    mtls_only = {
        "metadata": {"name": "m", "namespace": "ml"},
        "spec": {"rules": [{"from": [{"source": {"principals": ["*"]}}]}]},
    }
    assert not istio_allows([mtls_only], "ml", workload, get_root)  # plaintext: no principal at all
    assert istio_allows([mtls_only], "ml", workload, MeshRequest("GET", "/", "cluster.local/ns/a/sa/b"))
    owner = profile_owner_policy("ml")
    assert istio_allows([owner], "ml", workload, MeshRequest("POST", "/", "cluster.local/ns/ml/sa/any"))
    assert not istio_allows([owner], "ml", workload, MeshRequest("POST", "/", "cluster.local/ns/ml2/sa/any"))
    assert istio_allows([owner], "ml", workload, MeshRequest("GET", "/notebook/x/api/kernels", _NOTEBOOKS))
    assert not istio_allows([owner], "ml", workload, MeshRequest("POST", "/notebook/x/api/kernels", _NOTEBOOKS))


_NOTEBOOKS = "cluster.local/ns/kubeflow/sa/notebook-controller-service-account"


# -- 2g: the PodDefault -------------------------------------------------------------------------------------


def test_the_poddefault_gives_the_retrain_pod_the_token_its_client_reads(tmp_path):
    from churnflow.pipelines.drift_pipeline import KFP_ACCESS_LABEL, compile_drift_pipeline
    from churnflow.pipelines.kubeflow import DEFAULT_TOKEN_PATH, TOKEN_ENV

    (poddefault,) = documents(ROOT / "manifests" / "poddefault.yaml")
    assert (poddefault["apiVersion"], poddefault["kind"]) == ("kubeflow.org/v1alpha1", "PodDefault")
    assert poddefault["metadata"]["name"] == "access-ml-pipeline"
    spec = poddefault["spec"]
    # the retrain task's pod carries exactly the label the PodDefault selects on
    compiled = documents(Path(compile_drift_pipeline(str(tmp_path / "drift.yaml"))))
    executors = compiled[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    labelled = {name for name, config in executors.items() if config.get("podMetadata", {}).get("labels")}
    assert labelled == {"exec-retrain-op"}
    assert executors["exec-retrain-op"]["podMetadata"]["labels"] == spec["selector"]["matchLabels"]
    assert spec["selector"]["matchLabels"] == {KFP_ACCESS_LABEL: "true"}
    # the variable the retrain's client reads points at the projected token's file
    assert spec["env"] == [{"name": TOKEN_ENV, "value": DEFAULT_TOKEN_PATH}]
    (volume,) = spec["volumes"]
    (mount,) = spec["volumeMounts"]
    (source,) = volume["projected"]["sources"]
    token = source["serviceAccountToken"]
    assert mount["name"] == volume["name"] and mount.get("readOnly") is True
    assert f"{mount['mountPath']}/{token['path']}" == DEFAULT_TOKEN_PATH
    # the audience the KFP API server's TokenReview expects (backend/src/apiserver/common/const.go)
    assert token["audience"] == "pipelines.kubeflow.org"
    assert 600 <= token["expirationSeconds"] <= 86400  # the kubelet refreshes it; the API server bounds it


def test_the_kustomization_ships_the_poddefault_and_the_policy_namespaced():
    result = subprocess.run([KUBECTL, "kustomize", str(ROOT / "manifests")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    built = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(result.stdout) if d}
    for key in [("PodDefault", "access-ml-pipeline"), ("AuthorizationPolicy", "churn-predictor-serving-check")]:
        assert key in built, key
        assert built[key]["metadata"]["namespace"] == "kubeflow-user-example-com"
