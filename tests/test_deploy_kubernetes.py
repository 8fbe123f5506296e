"""Issue 12: the deploy step's rollout with the real `kubernetes` client against an enforcing API double.

The double (tests/kube_api_double.py) authorizes from manifests/rbac.yaml, validates against KServe's CRD,
enforces resourceVersion and reports status as KServe's controller does in each deployment mode.
"""

from __future__ import annotations

import httpx
import pytest
import yaml

from churnflow.components.deploy.inferenceservice import render_inferenceservice
from churnflow.components.deploy.kubernetes import (
    CanaryPolicy,
    CanaryRolledBack,
    RolloutFailed,
    apply_inferenceservice,
    merge_patch,
)
from churnflow.core.errors import ChurnflowError

from .kube_api_double import RBAC_MANIFEST, KubeAPIDouble, load_rules
from .kube_api_double import merge_patch as apply_merge_patch


@pytest.fixture
def kube():
    api = KubeAPIDouble()
    yield api
    api.close()


def manifest(version: str, uri: str | None = None, mode: str = "") -> dict:
    """What deploy renders; with `mode` empty, without the mode annotation (a hand-made InferenceService
    left to the cluster default, which KServe reports in status)."""
    rendered = render_inferenceservice(
        name="churn",
        namespace="ml",
        storage_uri=uri or f"s3://models/{version or 'unversioned'}",
        image="serve:1",
        model_version=version,
        pipeline_run=f"run-{version}" if version else "run",
        deployment_mode=mode or "Serverless",
    )
    if not mode:
        del rendered["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
    return rendered


def storage(obj: dict) -> str:
    return obj["spec"]["predictor"]["containers"][0]["env"][0]["value"]


def apply(kube: KubeAPIDouble, m: dict, **kwargs):
    kwargs.setdefault("timeout_seconds", 2)
    kwargs.setdefault("canary_policy", CanaryPolicy(bake_seconds=0))
    return apply_inferenceservice(kube.client(), m, poll_seconds=0.005, **kwargs)


def fixed_judge(decision: str, seen: list | None = None, kube: KubeAPIDouble | None = None):
    def judge(**kwargs):
        if seen is not None and kube is not None:  # what the rollout had seen when it started the bake
            seen.append(kube.seen[("ml", "churn")]["status"]["components"]["predictor"]["traffic"])
        return {"decision": decision, "reason": f"judged {decision}", "stable": {}, "canary": {}}

    return judge


def patches(kube: KubeAPIDouble) -> list[dict]:
    return [body for method, _, body in kube.requests if method == "PATCH"]


# -- item 4: when is a rollout done ------------------------------------------------------------------


def test_first_deploy_creates_and_waits_until_the_model_serves(kube):
    rollout = apply(kube, manifest("v1"))
    assert rollout.action == "created" and rollout.url == "http://churn.ml.example.com"
    assert [m for m, _, _ in kube.requests][:2] == ["GET", "POST"]
    assert kube.isvc()["metadata"]["labels"]["churnflow.io/model-version"] == "v1"
    assert kube.served_version("ml", "churn") == "v1"
    assert any(path.startswith("/_serving/ml/churn/v2/models/churn") for _, path, _ in kube.requests)


def test_serverless_done_means_new_revision_ready_with_all_traffic(kube):
    apply(kube, manifest("v1"))
    rollout = apply(kube, manifest("v2"))
    status = kube.isvc()["status"]
    predictor = status["components"]["predictor"]
    assert rollout.action == "updated" and storage(kube.isvc()) == "s3://models/v2"
    assert predictor["latestCreatedRevision"] == predictor["latestReadyRevision"] == "churn-predictor-00002"
    assert predictor["traffic"] == [{"revisionName": "churn-predictor-00002", "percent": 100, "latestRevision": True}]
    # KServe's observedGeneration is the Knative Service's counter: it says nothing about the ISVC's spec
    assert status["observedGeneration"] != kube.isvc()["metadata"]["generation"]


def test_a_predictor_reporting_the_old_model_version_is_not_done(kube):
    apply(kube, manifest("v1"))
    kube.models["s3://models/v2"] = "v1"  # the new revision is Ready but serves the old model
    with pytest.raises(RolloutFailed, match="reports model_version 'v1', expected 'v2'.*rolled back"):
        apply(kube, manifest("v2"), timeout_seconds=0.3)
    assert storage(kube.isvc()) == "s3://models/v1"


def test_crash_looping_serverless_revision_times_out_and_rolls_back(kube):
    apply(kube, manifest("v1"))
    kube.crashing.add("s3://models/v2")
    with pytest.raises(RolloutFailed) as error:
        apply(kube, manifest("v2"), timeout_seconds=0.3)
    message = str(error.value)
    assert "did not serve within 0.3 s" in message and "CrashLoopBackOff" in message
    assert "rolled back to the previous model" in message
    restored = kube.isvc()
    assert storage(restored) == "s3://models/v1"
    assert restored["metadata"]["labels"]["churnflow.io/model-version"] == "v1"
    assert restored["metadata"]["labels"]["churnflow.io/pipeline-run"] == "run-v1"


def test_without_a_model_version_the_new_revision_itself_must_serve(kube):
    """No version to ask the predictor for: the new revision, ready and carrying the traffic, is the proof."""
    apply(kube, manifest(""))
    kube.crashing.add("s3://models/broken")
    with pytest.raises(RolloutFailed, match="CrashLoopBackOff.*rolled back"):
        apply(kube, manifest("", uri="s3://models/broken"), timeout_seconds=0.3)
    assert storage(kube.isvc()) == "s3://models/unversioned"


def test_raw_deployment_waits_for_updated_and_available_replicas(kube):
    apply(kube, manifest("v1", mode="RawDeployment"))
    apply(kube, manifest("v2", mode="RawDeployment"))
    deployment = kube.objects[("Deployment", "ml", "churn-predictor")]
    assert deployment["status"]["updatedReplicas"] == deployment["status"]["availableReplicas"] == 2
    assert deployment["status"]["replicas"] == 2 and kube.served_version("ml", "churn") == "v2"


def test_raw_ready_stays_true_while_old_pods_serve_yet_the_rollout_fails(kube):
    apply(kube, manifest("v1", mode="RawDeployment"))
    kube.crashing.add("s3://models/v2")
    with pytest.raises(RolloutFailed, match="0 of 2 new replicas available.*rolled back"):
        apply(kube, manifest("v2", mode="RawDeployment"), timeout_seconds=0.3)
    ready = [c for c in kube.isvc()["status"]["conditions"] if c["type"] == "Ready"]
    assert ready[0]["status"] == "True"  # what KServe says, while the new pods crash-loop
    assert storage(kube.isvc()) == "s3://models/v1"


def test_failed_first_deploy_says_nothing_was_serving(kube):
    kube.crashing.add("s3://models/v1")
    with pytest.raises(RolloutFailed, match="nothing was serving before"):
        apply(kube, manifest("v1"), timeout_seconds=0.1)


# -- item 5: canary ------------------------------------------------------------------------------------


def test_canary_bakes_on_split_traffic_then_promotes(kube):
    apply(kube, manifest("v1", mode="Serverless"))
    seen: list = []
    rollout = apply(
        kube,
        manifest("v2", mode="Serverless"),
        canary_percent=10,
        judge=fixed_judge("promote", seen, kube),
    )
    assert patches(kube)[0]["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert seen == [  # in KServe's order: the latest revision's target first
        [
            {"revisionName": "churn-predictor-00002", "percent": 10, "latestRevision": True},
            {"revisionName": "churn-predictor-00001", "percent": 90, "latestRevision": False, "tag": "prev"},
        ]
    ]
    assert patches(kube)[1]["spec"] == {"predictor": {"canaryTrafficPercent": None}}
    assert rollout.canary["decision"] == "promote" and rollout.canary["percent"] == 10
    assert "canaryTrafficPercent" not in kube.isvc()["spec"]["predictor"]
    assert kube.served_version("ml", "churn") == "v2"


def test_canary_judged_worse_is_rolled_back(kube):
    apply(kube, manifest("v1", mode="Serverless"))
    with pytest.raises(CanaryRolledBack, match="canary v2 rolled back: judged rollback") as error:
        apply(
            kube,
            manifest("v2", mode="Serverless"),
            canary_percent=20,
            judge=fixed_judge("rollback"),
        )
    assert error.value.report["canary"]["decision"] == "rollback"
    restored = kube.isvc()
    assert storage(restored) == "s3://models/v1" and "canaryTrafficPercent" not in restored["spec"]["predictor"]


def test_canary_is_refused_in_raw_deployment_mode(kube):
    apply(kube, manifest("v1", mode="RawDeployment"))
    with pytest.raises(ChurnflowError, match="RawDeployment mode, where KServe ignores canaryTrafficPercent"):
        apply(kube, manifest("v2", mode="RawDeployment"), canary_percent=20, judge=fixed_judge("promote"))
    assert storage(kube.isvc()) == "s3://models/v1"  # nothing was changed


def test_canary_mode_comes_from_the_inferenceservice_never_the_kserve_config_map(kube):
    """Nothing grants reading kserve's config map (Kubeflow installs KServe in `kubeflow` anyway)."""
    kube.put_object(
        "ConfigMap",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "inferenceservice-config", "namespace": "kserve"},
            "data": {"deploy": '{"defaultDeploymentMode": "Serverless"}'},
        },
    )
    apply(kube, manifest("v1"))  # no annotation: the cluster default, which KServe reports in status
    rollout = apply(kube, manifest("v2"), canary_percent=10, judge=fixed_judge("promote"))
    assert rollout.mode == "Serverless" and rollout.canary["decision"] == "promote"
    assert kube.denied == [] and not any("configmaps" in path for _, path, _ in kube.requests)


def test_canary_needs_prometheus_and_a_new_version(kube):
    apply(kube, manifest("v1", mode="Serverless"))
    with pytest.raises(ChurnflowError, match="prometheus_url is required"):
        apply(kube, manifest("v2", mode="Serverless"), canary_percent=10)
    with pytest.raises(ChurnflowError, match="must differ from the serving one"):
        apply(kube, manifest("v1", uri="s3://models/v1b", mode="Serverless"), canary_percent=10, judge=fixed_judge(""))
    assert storage(kube.isvc()) == "s3://models/v1"


# -- item 8: concurrent rollouts -------------------------------------------------------------------------


def test_patch_carries_the_resource_version_that_was_read(kube):
    apply(kube, manifest("v1"))
    read_version = kube.isvc()["metadata"]["resourceVersion"]
    apply(kube, manifest("v2"))
    assert patches(kube)[0]["metadata"]["resourceVersion"] == read_version


def test_a_concurrent_write_is_retried_from_a_fresh_read(kube):
    apply(kube, manifest("v1"))

    def someone_else_writes(method, key):  # another client annotates the object between our read and write
        obj = kube.objects[key]
        obj["metadata"]["annotations"]["team.example.com/owner"] = "retention"
        obj["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)

    kube.before_write.append(someone_else_writes)
    apply(kube, manifest("v2"))
    first, second = patches(kube)[:2]
    assert first["metadata"]["resourceVersion"] != second["metadata"]["resourceVersion"]
    assert storage(kube.isvc()) == "s3://models/v2"
    assert kube.isvc()["metadata"]["annotations"]["team.example.com/owner"] == "retention"  # not overwritten


def test_endless_conflicts_give_up_with_one_line(kube):
    apply(kube, manifest("v1"))

    def keep_writing(method, key):
        kube.objects[key]["metadata"]["resourceVersion"] += "0"
        kube.before_write.append(keep_writing)

    kube.before_write.append(keep_writing)
    with pytest.raises(ChurnflowError, match="changed under us 4 times in a row; another rollout is in progress"):
        apply(kube, manifest("v2"))


def test_a_racing_rollout_is_not_silently_mixed_into_ours(kube):
    """Rollout B (a canary) writes between rollout A's read and write. Without the resourceVersion, A's
    merge patch, computed from the stale read, would leave B's canaryTrafficPercent in A's spec."""
    apply(kube, manifest("v1"))
    other = manifest("v9", uri="s3://models/v9")
    other["spec"]["predictor"]["canaryTrafficPercent"] = 10
    kube.before_write.append(lambda method, key: kube.write_as_other_client("churn", {"spec": other["spec"]}))
    apply(kube, manifest("v2"))
    assert kube.isvc()["spec"] == manifest("v2")["spec"]  # exactly A's spec, nothing of B's left in it
    assert kube.served_version("ml", "churn") == "v2"
    assert len(patches(kube)) == 2  # A's first patch got 409 and was recomputed from a fresh read


def test_a_stale_resource_version_gets_409_from_the_double(kube):
    apply(kube, manifest("v1"))
    stale = kube.isvc()["metadata"]["resourceVersion"]
    apply(kube, manifest("v2"))
    response = httpx.patch(
        f"{kube.url}/apis/serving.kserve.io/v1beta1/namespaces/ml/inferenceservices/churn",
        json={"metadata": {"resourceVersion": stale}, "spec": {"predictor": {"minReplicas": 2}}},
        headers={"Authorization": f"Bearer {kube.token}", "Content-Type": "application/merge-patch+json"},
    )
    assert response.status_code == 409 and "the object has been modified" in response.json()["message"]


# -- what the double enforces for our calls ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m["metadata"].update(name="Churn_Model"), "metadata.name"),
        (
            lambda m: m["metadata"]["labels"].update({"churnflow.io/pipeline-run": "Run of churn 2026-11-27 03:00"}),
            "metadata.labels",
        ),
        (lambda m: m["spec"]["predictor"].update(minReplicas="two"), "spec.predictor.minReplicas"),
        (lambda m: m["spec"]["predictor"].update(canaryTraffic=10), 'unknown field "spec.predictor.canaryTraffic"'),
        (lambda m: m["spec"]["predictor"]["containers"][0].update(ports=[{"name": "http1"}]), "containerPort"),
    ],
)
def test_invalid_inferenceservices_get_422(kube, change, message):
    bad = manifest("v1")
    change(bad)
    with pytest.raises(ChurnflowError, match=f"failed with HTTP 422.*{message}"):
        apply(kube, bad)
    assert not [k for k in kube.objects if k[0] == "InferenceService"]


def test_only_merge_patch_is_accepted(kube):
    apply(kube, manifest("v1"))
    url = f"{kube.url}/apis/serving.kserve.io/v1beta1/namespaces/ml/inferenceservices/churn"
    auth = {"Authorization": f"Bearer {kube.token}"}
    for content_type, body in (
        ("application/strategic-merge-patch+json", {"spec": {}}),
        ("application/json-patch+json", [{"op": "remove", "path": "/spec/predictor/minReplicas"}]),
    ):
        response = httpx.patch(url, json=body, headers={**auth, "Content-Type": content_type})
        assert response.status_code == 415, content_type
    merged = httpx.patch(
        url,
        json={"spec": {"predictor": {"minReplicas": None, "maxReplicas": 5}}},
        headers={**auth, "Content-Type": "application/merge-patch+json"},
    ).json()
    assert "minReplicas" not in merged["spec"]["predictor"] and merged["spec"]["predictor"]["maxReplicas"] == 5
    assert merged["spec"]["predictor"]["containers"] == manifest("v1")["spec"]["predictor"]["containers"]


def test_unauthenticated_and_other_namespaces_are_refused(kube):
    base = f"{kube.url}/apis/serving.kserve.io/v1beta1/namespaces"
    assert httpx.get(f"{base}/ml/inferenceservices/churn").status_code == 401
    auth = {"Authorization": f"Bearer {kube.token}"}
    assert httpx.get(f"{base}/other/inferenceservices/churn", headers=auth).status_code == 403
    assert httpx.get(f"{kube.url}/api/v1/namespaces/kserve/configmaps/x", headers=auth).status_code == 403
    assert httpx.get(f"{base}/ml/inferenceservices", headers=auth).status_code == 403  # list is not granted


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
    assert apply_merge_patch(current, merge_patch(current, target)) == {"a": 1, "b": {"c": 3, "d": [1]}, "f": {}}


# -- item 6: the Role is sufficient and minimal -------------------------------------------------------------


def full_rollout(kube: KubeAPIDouble) -> None:
    """Every call the deploy code makes: create, update, canary promote and rollback, crash rollback, Raw."""
    apply(kube, manifest("v1", mode="Serverless"))
    apply(kube, manifest("v2", mode="Serverless"))
    apply(kube, manifest("v3", mode="Serverless"), canary_percent=10, judge=fixed_judge("promote"))
    with pytest.raises(CanaryRolledBack):
        apply(kube, manifest("v4", mode="Serverless"), canary_percent=10, judge=fixed_judge("rollback"))
    kube.crashing.add("s3://models/v5")
    with pytest.raises(RolloutFailed, match="rolled back"):
        apply(kube, manifest("v5", mode="Serverless"), timeout_seconds=0.2)
    raw = manifest("v1", mode="RawDeployment")
    raw["metadata"]["name"] = "churn-raw"
    apply(kube, raw)
    raw2 = manifest("v2", mode="RawDeployment")
    raw2["metadata"]["name"] = "churn-raw"
    apply(kube, raw2)


def test_the_role_in_manifests_is_sufficient():
    kube = KubeAPIDouble()
    try:
        full_rollout(kube)
        assert kube.denied == []
    finally:
        kube.close()


def role_variants() -> list[tuple[str, list[dict]]]:
    rules = load_rules(RBAC_MANIFEST, "ml", "churnflow-pipeline")
    variants = []
    for i, rule in enumerate(rules):
        for resource in rule["resources"]:
            for verb in rule["verbs"]:
                reduced = [dict(r) for r in rules]
                reduced[i] = {**rule, "resources": [r for r in rule["resources"] if r != resource] or ["-"]}
                narrowed = {**rule, "resources": [resource], "verbs": [v for v in rule["verbs"] if v != verb]}
                variants.append((f"{resource}:{verb}", [*reduced, narrowed]))
    return variants


def test_the_role_is_minimal():
    documents = list(yaml.safe_load_all(RBAC_MANIFEST.read_text()))
    role = next(d for d in documents if d and d["kind"] == "Role")
    granted = {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    assert not {v for _, v in granted} & {"list", "watch", "*"} and "configmaps" not in {r for r, _ in granted}
    variants = role_variants()
    assert len(variants) == len(granted)
    for label, rules in variants:
        kube = KubeAPIDouble(rbac=rules)
        try:
            with pytest.raises(ChurnflowError, match="forbidden"):
                full_rollout(kube)
            assert kube.denied, label
        finally:
            kube.close()


def test_a_ready_revision_without_its_traffic_is_not_done():
    """Ready and latest, but the route still sends most traffic elsewhere (e.g. a canary split left over)."""
    from churnflow.components.deploy.kubernetes import _serverless_progress, _Target

    status = {
        "components": {
            "predictor": {
                "latestCreatedRevision": "churn-predictor-00002",
                "latestReadyRevision": "churn-predictor-00002",
                "traffic": [
                    {"revisionName": "churn-predictor-00001", "percent": 90},
                    {"revisionName": "churn-predictor-00002", "percent": 10, "latestRevision": True},
                ],
            }
        },
        "conditions": [{"type": "Ready", "status": "True"}],
    }
    done, reason = _serverless_progress({"status": status}, _Target("Serverless", "churn", "v2", 100, None))
    assert not done and reason == "revision churn-predictor-00002 carries 10% of traffic, expected 100%"
    done, _ = _serverless_progress({"status": status}, _Target("Serverless", "churn", "v2", 10, None))
    assert done


def test_the_deploy_step_applies_with_the_mode_and_writes_its_rollout_report(tmp_path, monkeypatch, model_dir):
    import json

    from churnflow.components.deploy.logic import deploy

    kube = KubeAPIDouble(namespace="ml")
    try:
        monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig(tmp_path / "kubeconfig")))
        common = {"name": "churn", "namespace": "ml", "image": "serve:1", "action": "apply"}
        common |= {"deployment_mode": "RawDeployment", "ready_timeout_seconds": 5, "poll_seconds": 0.01}
        deploy(model_dir, "s3://models/v1", {}, tmp_path / "isvc.yaml", model_version="v1", **common)
        report_path = tmp_path / "rollout.json"
        deploy(
            model_dir,
            "s3://models/v2",
            {},
            tmp_path / "isvc.yaml",
            model_version="v2",
            rollout_report_path=report_path,
            **common,
        )
        report = json.loads(report_path.read_text())
        assert report["action"] == "updated" and report["mode"] == "RawDeployment" and report["model_version"] == "v2"
        assert (
            yaml.safe_load((tmp_path / "isvc.yaml").read_text())["metadata"]["annotations"][
                "serving.kserve.io/deploymentMode"
            ]
            == "RawDeployment"
        )
        assert kube.served_version("ml", "churn") == "v2"
        with pytest.raises(ChurnflowError, match="deployment_mode: expected Serverless or RawDeployment"):
            deploy(
                model_dir, "s3://m", {}, tmp_path / "x.yaml", model_version="v3", **{**common, "deployment_mode": "Raw"}
            )
    finally:
        kube.close()
