"""Issue 21 (2a, 2b, 2d): the predictor as Knative admits and routes it, on Kubeflow 1.9 and 1.10.

Knative's webhook (tests/knative_webhook.py, rules from knative/serving 1.12.4 and 1.16.2) judges the Knative
Service KServe makes of the predictor; the API double's controller stand-in routes `latestRevision` traffic to
the latest ready revision and records, after every reconcile step, which model versions receive traffic.
"""

from __future__ import annotations

import copy
import time

import pytest

from churnflow.components.deploy.inferenceservice import SCRATCH_MOUNT, render_inferenceservice
from churnflow.components.deploy.kubernetes import CanaryPolicy, CanaryRolledBack, RolloutFailed, apply_inferenceservice

from . import knative_webhook
from .kube_api_double import KubeAPIDouble

KNATIVE_1_12 = knative_webhook.KNATIVE_OF_KUBEFLOW["1.9"]
KNATIVE_1_16 = knative_webhook.KNATIVE_OF_KUBEFLOW["1.10"]
POD_CONTEXT_REFUSED = (
    "must not set the field(s): spec.template.spec.securityContext.runAsNonRoot, "
    "spec.template.spec.securityContext.seccompProfile"
)
TMP_REFUSED = 'mountPath "/tmp" is a reserved path: spec.template.spec.containers[0].volumeMounts[0].mountPath'


def manifest(version: str, mode: str = "Serverless") -> dict:
    return render_inferenceservice(
        name="churn",
        namespace="ml",
        storage_uri=f"s3://models/{version}",
        image="serve:1",
        model_version=version,
        deployment_mode=mode,
    )


def as_rendered_before_issue_21(rendered: dict) -> dict:
    """The render before 2a/2b: a pod-level securityContext and the scratch emptyDir at /tmp."""
    old = copy.deepcopy(rendered)
    predictor = old["spec"]["predictor"]
    predictor["securityContext"] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    predictor["containers"][0]["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]
    predictor["volumes"] = [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
    return old


def settle(kube: KubeAPIDouble, reads: int = 6) -> None:
    """The cluster goes on reconciling after the deploy step returns: a few more reads, a step each."""
    for _ in range(reads):
        kube.client().get_namespaced_custom_object("serving.kserve.io", "v1beta1", "ml", "inferenceservices", "churn")


@pytest.fixture
def kube():
    api = KubeAPIDouble(knative_version=KNATIVE_1_12)
    yield api
    api.close()


def apply(kube: KubeAPIDouble, m: dict, **kwargs):
    kwargs.setdefault("timeout_seconds", 2)
    kwargs.setdefault("canary_policy", CanaryPolicy(bake_seconds=0))
    return apply_inferenceservice(kube.client(), m, poll_seconds=0.005, **kwargs)


def judge(decision: str, kube: KubeAPIDouble, marks: list[int]):
    """A fixed decision; `marks` gets the routing step of the decision and that of the next write."""

    def fixed(**_: object) -> dict:
        steps = kube.routing[("ml", "churn")]
        marks.append(len(steps))
        kube.before_write.append(lambda *_: marks.append(len(steps)))
        return {"decision": decision, "reason": f"judged {decision}", "stable": {}, "canary": {}}

    return fixed


# -- 2a/2b: what the webhook admits ----------------------------------------------------------------------


@pytest.mark.parametrize("knative", [KNATIVE_1_12, KNATIVE_1_16])
@pytest.mark.parametrize("mode", ["Serverless", "RawDeployment"])
def test_the_rendered_predictor_passes_knatives_webhook(knative, mode):
    predictor = manifest("v1", mode)["spec"]["predictor"]
    assert knative_webhook.refusal(predictor, knative) is None
    (container,) = predictor["containers"]
    assert {"name": "TMPDIR", "value": SCRATCH_MOUNT} in container["env"]
    assert [m["mountPath"] for m in container["volumeMounts"]] == [SCRATCH_MOUNT]
    assert SCRATCH_MOUNT not in knative_webhook.RESERVED_PATHS_UP_TO_1_12


@pytest.mark.parametrize("knative", [KNATIVE_1_12, KNATIVE_1_16])
def test_a_pod_level_security_context_is_refused_by_both_versions(knative):
    predictor = as_rendered_before_issue_21(manifest("v1"))["spec"]["predictor"]
    message = knative_webhook.refusal(predictor, knative)
    assert message.startswith('admission webhook "validation.webhook.serving.knative.dev" denied the request')
    assert POD_CONTEXT_REFUSED in message


def test_tmp_is_a_reserved_mount_path_up_to_knative_1_12_only():
    predictor = manifest("v1")["spec"]["predictor"]
    predictor["containers"][0]["volumeMounts"] = [{"name": "scratch", "mountPath": "/tmp/"}]
    assert TMP_REFUSED in knative_webhook.refusal(predictor, KNATIVE_1_12)
    assert knative_webhook.refusal(predictor, KNATIVE_1_16) is None
    predictor["containers"][0]["volumeMounts"] = [{"name": "scratch", "mountPath": "/dev"}]
    assert "is a reserved path" in knative_webhook.refusal(predictor, KNATIVE_1_16)


def test_the_container_mask_admits_our_hardening_and_nothing_more():
    predictor = manifest("v1")["spec"]["predictor"]
    context = predictor["containers"][0]["securityContext"]
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}  # SecurityContextMask keeps it (1.12, 1.16)
    context["privileged"] = False
    context["capabilities"]["add"] = ["NET_ADMIN"]
    message = knative_webhook.refusal(predictor, KNATIVE_1_16)
    assert (
        "must not set the field(s): spec.template.spec.containers[0].securityContext.capabilities.add, "
        "spec.template.spec.containers[0].securityContext.privileged"
    ) in message


# -- the deploy step reads the refusal ------------------------------------------------------------------


def test_a_refused_first_deploy_fails_at_once_in_one_line_naming_the_field(kube):
    started = time.monotonic()
    with pytest.raises(RolloutFailed) as error:
        apply(kube, as_rendered_before_issue_21(manifest("v1")), timeout_seconds=30)
    elapsed = time.monotonic() - started
    message = str(error.value)
    assert elapsed < 5, f"took {elapsed:.1f} s: the refusal was not read, the wait timed out"
    assert "\n" not in message and "did not serve within" not in message
    assert POD_CONTEXT_REFUSED in message and TMP_REFUSED in message
    assert "nothing was serving before" in message
    assert "latestCreatedRevision" not in kube.isvc()["status"]["components"]["predictor"]  # never got a revision


def test_a_refused_update_fails_at_once_and_the_previous_model_keeps_serving(kube):
    apply(kube, manifest("v1"))
    started = time.monotonic()
    with pytest.raises(RolloutFailed, match="reserved path.*rolled back to the previous model") as error:
        apply(kube, as_rendered_before_issue_21(manifest("v2")), timeout_seconds=30)
    assert time.monotonic() - started < 5
    settle(kube)
    assert error.value.report["served_during_rollback"] == ["v1"]
    assert set().union(*kube.routing[("ml", "churn")]) == {"v1"}
    assert kube.isvc()["spec"]["predictor"]["containers"][0]["env"][0]["value"] == "s3://models/v1"
    assert "canaryTrafficPercent" not in kube.isvc()["spec"]["predictor"]


def test_after_a_refused_deploy_a_good_one_goes_through(kube):
    with pytest.raises(RolloutFailed):
        apply(kube, as_rendered_before_issue_21(manifest("v1")))
    rollout = apply(kube, manifest("v1"))  # the stale refusal in status is not taken for a new one
    assert rollout.action == "updated" and kube.served_version("ml", "churn") == "v1"


def test_before_kserve_0_17_a_refusal_is_an_event_and_the_timeout_points_at_it():
    """KServe 0.13-0.16 (Kubeflow 1.9/1.10) record the refusal only as an InternalError event."""
    kube = KubeAPIDouble(knative_version=KNATIVE_1_12, kserve_version=(0, 14))
    try:
        with pytest.raises(RolloutFailed) as error:
            apply(kube, as_rendered_before_issue_21(manifest("v1")), timeout_seconds=0.3)
        message = str(error.value)
        assert "did not serve within 0.3 s (no new revision created yet" in message
        assert "kubectl describe inferenceservice churn" in message and "\n" not in message
        assert POD_CONTEXT_REFUSED in kube.events[-1]["message"] and kube.events[-1]["reason"] == "InternalError"
    finally:
        kube.close()


def test_knative_1_16_admits_tmp_but_not_the_pod_security_context():
    kube = KubeAPIDouble(knative_version=KNATIVE_1_16)
    try:
        rendered = as_rendered_before_issue_21(manifest("v1"))
        del rendered["spec"]["predictor"]["securityContext"]
        apply(kube, rendered)  # /tmp alone is fine from Knative 1.13 on
        with pytest.raises(RolloutFailed, match=r"securityContext\.runAsNonRoot"):
            apply(kube, as_rendered_before_issue_21(manifest("v2")))
    finally:
        kube.close()


# -- 2d: who answers during a canary rollback -------------------------------------------------------------


def test_a_one_write_restore_hands_all_traffic_to_the_canary(kube):
    """The hazard the double models: Knative routes latestRevision to the latest READY revision."""
    apply(kube, manifest("v1"))
    canary = manifest("v2")
    canary["spec"]["predictor"]["canaryTrafficPercent"] = 10
    kube.client().patch_namespaced_custom_object(
        "serving.kserve.io", "v1beta1", "ml", "inferenceservices", "churn", {"spec": canary["spec"]}
    )
    for _ in range(4):
        kube.client().get_namespaced_custom_object("serving.kserve.io", "v1beta1", "ml", "inferenceservices", "churn")
    assert kube.answering("ml", "churn") == {"v1": 90, "v2": 10}
    restore = {"spec": {"predictor": {**manifest("v1")["spec"]["predictor"], "canaryTrafficPercent": None}}}
    kube.client().patch_namespaced_custom_object(
        "serving.kserve.io", "v1beta1", "ml", "inferenceservices", "churn", restore
    )
    kube.client().get_namespaced_custom_object("serving.kserve.io", "v1beta1", "ml", "inferenceservices", "churn")
    kube.client().get_namespaced_custom_object("serving.kserve.io", "v1beta1", "ml", "inferenceservices", "churn")
    assert kube.answering("ml", "churn") == {"v2": 100}  # the rejected canary, until the restored one is ready


def test_a_canary_rollback_never_routes_to_the_canary(kube):
    apply(kube, manifest("v1"))
    marks: list[int] = []
    with pytest.raises(CanaryRolledBack) as error:
        apply(kube, manifest("v2"), canary_percent=10, judge=judge("rollback", kube, marks))
    settle(kube)
    steps = kube.routing[("ml", "churn")]
    decided, pinned = marks
    assert {"v1": 90, "v2": 10} in steps[:decided]  # the canary did get its share while baking
    assert all(step == {"v1": 90, "v2": 10} for step in steps[decided:pinned])  # until the first write
    after_pin = steps[pinned:]
    assert after_pin and all(step == {"v1": 100} for step in after_pin), after_pin
    assert error.value.report["served_during_rollback"] == ["v1"]
    assert "answering during the rollback: v1" in str(error.value)
    restored = kube.isvc()
    assert "canaryTrafficPercent" not in restored["spec"]["predictor"]
    predictor = restored["status"]["components"]["predictor"]
    assert predictor["latestRolledoutRevision"] == predictor["latestReadyRevision"] == "churn-predictor-00003"
    assert kube.served_version("ml", "churn") == "v1"


def test_a_crash_rollback_never_routes_to_the_new_revision(kube):
    apply(kube, manifest("v1"))
    kube.crashing.add("s3://models/v2")
    with pytest.raises(RolloutFailed, match="CrashLoopBackOff.*rolled back") as error:
        apply(kube, manifest("v2"), timeout_seconds=0.3)
    settle(kube)
    assert set().union(*kube.routing[("ml", "churn")]) == {"v1"}
    assert error.value.report["served_during_rollback"] == ["v1"]


def test_a_raw_deployment_rollback_restores_in_one_write():
    kube = KubeAPIDouble()
    try:
        apply(kube, manifest("v1", "RawDeployment"))
        kube.crashing.add("s3://models/v2")
        with pytest.raises(RolloutFailed, match="rolled back to the previous model"):
            apply(kube, manifest("v2", "RawDeployment"), timeout_seconds=0.3)
        rollback = [body for method, _, body in kube.requests if method == "PATCH"][-1]
        assert "canaryTrafficPercent" not in str(rollback)  # KServe ignores it in RawDeployment
    finally:
        kube.close()


# -- 2b: the predictor writes where TMPDIR points -------------------------------------------------------------


def test_the_predictor_writes_its_temporary_files_under_the_rendered_tmpdir(model_dir, tmp_path):
    """Two workers need a Prometheus multiprocess directory: it must land on the scratch volume (TMPDIR), the
    only writable place in the rendered pod, not in a /tmp Knative 1.12 will not let us mount."""
    from .conftest import ServerProcess

    (env,) = [e for e in manifest("v1")["spec"]["predictor"]["containers"][0]["env"] if e["name"] == "TMPDIR"]
    scratch = tmp_path / env["value"].strip("/")
    scratch.mkdir()
    server = ServerProcess(model_dir, "--workers", "2", env={"TMPDIR": str(scratch)})
    try:
        server.wait_ready()
        (metrics,) = scratch.glob("churnflow-metrics-*")
        assert any(metrics.glob("*.db")), sorted(p.name for p in scratch.rglob("*"))
    finally:
        server.stop()


def test_a_failed_promotion_rolls_back_even_though_the_canary_is_already_rolled_out(kube):
    """Promoted, the canary is KServe's latest rolled-out revision: pinning would pin it, so restore at once."""
    apply(kube, manifest("v1"))
    kube.models["s3://models/v2"] = "v2-wrong"  # the promoted predictor reports another version
    with pytest.raises(RolloutFailed, match="expected 'v2'.*rolled back to the previous model") as error:
        apply(kube, manifest("v2"), canary_percent=10, judge=judge("promote", kube, []), timeout_seconds=0.5)
    settle(kube)
    assert kube.answering("ml", "churn") == {"v1": 100}
    assert "canaryTrafficPercent" not in kube.isvc()["spec"]["predictor"]
    assert error.value.report["served_during_rollback"][-1] == "v1"
