"""Issue 4: the deploy step's rollout with the real `kubernetes` client against a local API stand-in."""

from __future__ import annotations

import pytest

from churnflow.components.deploy.inferenceservice import render_inferenceservice
from churnflow.components.deploy.kubernetes import apply_inferenceservice, merge_patch
from churnflow.errors import ChurnflowError

from .fake_kube_api import FakeKubeAPI, merge

KEY = ("ml", "churn")


@pytest.fixture
def kube():
    api = FakeKubeAPI()
    yield api
    api.close()


def manifest(version: str, uri: str = "s3://models/v1", mode: str | None = None) -> dict:
    rendered = render_inferenceservice(
        name="churn",
        namespace="ml",
        storage_uri=uri,
        image="serve:1",
        model_version=version,
        pipeline_run=f"run-{version}",
    )
    if mode:
        rendered["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] = mode
    return rendered


def storage(obj: dict) -> str:
    return obj["spec"]["predictor"]["containers"][0]["env"][0]["value"]


def apply(kube: FakeKubeAPI, m: dict, **kwargs):
    return apply_inferenceservice(
        kube.client(), m, poll_seconds=0.01, timeout_seconds=kwargs.pop("timeout", 2), **kwargs
    )


def test_first_deploy_creates_and_waits_for_ready(kube):
    rollout = apply(kube, manifest("v1"))
    assert rollout.action == "created" and rollout.url == "http://churn.ml.example.com"
    assert [m for m, _, _ in kube.requests][:2] == ["GET", "POST"]
    assert kube.objects[KEY]["metadata"]["labels"]["churnflow.io/model-version"] == "v1"


def test_update_patches_spec_and_labels(kube):
    apply(kube, manifest("v1"))
    rollout = apply(kube, manifest("v2", uri="s3://models/v2"))
    assert rollout.action == "updated"
    assert storage(kube.objects[KEY]) == "s3://models/v2"
    assert kube.objects[KEY]["metadata"]["labels"]["churnflow.io/model-version"] == "v2"
    assert "PATCH" in [m for m, _, _ in kube.requests]


def test_canary_then_promotion_in_serverless_mode(kube):
    apply(kube, manifest("v1", mode="Serverless"))
    rollout = apply(kube, manifest("v2", uri="s3://models/v2", mode="Serverless"), canary_percent=10)
    patches = [body for method, _, body in kube.requests if method == "PATCH"]
    assert patches[0]["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert patches[1] == {"spec": {"predictor": {"canaryTrafficPercent": None}}}  # promoted after Ready
    assert rollout.canary_percent == 10 and "canaryTrafficPercent" not in kube.objects[KEY]["spec"]["predictor"]


def test_canary_is_refused_in_raw_deployment_mode(kube):
    apply(kube, manifest("v1", mode="RawDeployment"))
    with pytest.raises(ChurnflowError, match="RawDeployment mode, where KServe ignores canaryTrafficPercent"):
        apply(kube, manifest("v2", mode="RawDeployment"), canary_percent=20)
    assert storage(kube.objects[KEY]) == "s3://models/v1"  # nothing was changed


def test_canary_mode_from_the_cluster_config(kube):
    kube.config_maps[("kserve", "inferenceservice-config")] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "inferenceservice-config"},
        "data": {"deploy": '{"defaultDeploymentMode": "RawDeployment"}'},
    }
    # An InferenceService without its own deploymentMode annotation (deploy renders one; a hand-made one
    # may not): the cluster default decides.
    first, second = manifest("v1"), manifest("v2")
    for rendered in (first, second):
        del rendered["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
    apply(kube, first)
    with pytest.raises(ChurnflowError, match="RawDeployment"):
        apply(kube, second, canary_percent=20)


def test_timeout_rolls_back_to_the_previous_model(kube):
    apply(kube, manifest("v1"))
    kube.ready_after = None  # the new revision never becomes Ready
    with pytest.raises(ChurnflowError) as error:
        apply(kube, manifest("v2", uri="s3://models/broken"), timeout=0.2)
    assert "not Ready after 0.2 s" in str(error.value) and "rolled back to the previous model" in str(error.value)
    restored = kube.objects[KEY]
    assert storage(restored) == "s3://models/v1"
    assert restored["metadata"]["labels"]["churnflow.io/model-version"] == "v1"


def test_failed_first_deploy_says_nothing_was_serving(kube):
    kube.ready_after = None
    with pytest.raises(ChurnflowError, match="nothing was serving before"):
        apply(kube, manifest("v1"), timeout=0.1)


@pytest.mark.parametrize(
    ("method", "status", "message"),
    [
        ("GET", 403, "forbidden to get inferenceservice ml/churn"),
        ("POST", 403, "manifests/rbac.yaml"),
        ("POST", 409, "conflict on create"),
        ("POST", 500, "create inferenceservice ml/churn failed with HTTP 500"),
        ("GET", 500, "failed with HTTP 500"),
    ],
)
def test_api_errors_are_one_clear_line(kube, method, status, message):
    kube.errors.append((method, status))
    with pytest.raises(ChurnflowError, match=message):
        apply(kube, manifest("v1"))


def test_patch_error_leaves_the_previous_model(kube):
    apply(kube, manifest("v1"))
    kube.errors.append(("PATCH", 500))
    with pytest.raises(ChurnflowError, match="patch inferenceservice ml/churn failed with HTTP 500"):
        apply(kube, manifest("v2", uri="s3://models/v2"))
    assert storage(kube.objects[KEY]) == "s3://models/v1"


def test_unreachable_api_server():
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = "http://127.0.0.1:9"  # discard port: nothing listens
    configuration.retries = 0
    api = client.CustomObjectsApi(client.ApiClient(configuration))
    with pytest.raises(ChurnflowError, match="cannot reach the API server"):
        apply_inferenceservice(api, manifest("v1"), timeout_seconds=0.1)


def test_merge_patch_round_trip():
    current = {"a": 1, "b": {"c": 2, "d": [1, 2]}, "e": 5}
    target = {"a": 1, "b": {"c": 3, "d": [1]}, "f": {"g": None}}
    assert merge(current, merge_patch(current, target)) == {"a": 1, "b": {"c": 3, "d": [1]}, "f": {}}
