"""Rolling the InferenceService out on a cluster, with the real `kubernetes` client.

Create if absent, otherwise merge-patch; optionally a canary first (Serverless mode only: KServe
ignores canaryTrafficPercent in RawDeployment, so a canary there is refused rather than silently
skipped); wait for Ready (the new generation's Ready condition) with a timeout; on failure or timeout
restore the previous spec, so the model that was serving goes on serving, and fail with one clear line.

The deploy step uses the pipeline pod's service account in-cluster (manifests/rbac.yaml grants exactly
get, list, watch, create and patch on inferenceservices); from a laptop it uses the kubeconfig.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from typing import Any

from churnflow.errors import ChurnflowError

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
SERVERLESS = "Serverless"
KSERVE_CONFIG = ("kserve", "inferenceservice-config")


@dataclass(frozen=True)
class Rollout:
    action: str  # "created" or "updated"
    name: str
    namespace: str
    url: str | None
    canary_percent: int


def custom_objects_api(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """CustomObjectsApi from the pod's service account in-cluster, else from the kubeconfig."""
    from kubernetes import client, config

    try:
        if kubeconfig or context:
            raise config.ConfigException("explicit kubeconfig")
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config(config_file=kubeconfig, context=context)
        except (config.ConfigException, FileNotFoundError, TypeError) as error:
            raise ChurnflowError(
                f"kubernetes: no in-cluster service account and no usable kubeconfig ({error})"
            ) from None
    return client.CustomObjectsApi()


def _api_error(error: Any, verb: str, what: str) -> ChurnflowError:
    status = getattr(error, "status", None)
    reason = ""
    try:
        reason = json.loads(error.body).get("message", "")
    except (TypeError, ValueError, AttributeError):
        reason = str(getattr(error, "reason", "")) or str(error)
    if status == 403:
        return ChurnflowError(
            f"kubernetes: forbidden to {verb} {what} ({reason}); grant the pipeline's service "
            f"account the verbs in manifests/rbac.yaml"
        )
    if status == 409:
        return ChurnflowError(f"kubernetes: conflict on {verb} {what} ({reason}); another rollout is in progress")
    if status is None:
        return ChurnflowError(f"kubernetes: cannot reach the API server to {verb} {what} ({error})")
    return ChurnflowError(f"kubernetes: {verb} {what} failed with HTTP {status} ({reason})")


def _call(verb: str, what: str, function: Any, *args: Any, **kwargs: Any) -> Any:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return function(*args, **kwargs)
    except ApiException as error:
        raise _api_error(error, verb, what) from None
    except HTTPError as error:
        raise _api_error(error, verb, what) from None


def merge_patch(current: Any, target: Any) -> Any:
    """The JSON merge patch (RFC 7386) that turns `current` into `target` (null deletes a key)."""
    if not isinstance(current, dict) or not isinstance(target, dict):
        return copy.deepcopy(target)
    patch: dict[str, Any] = {key: None for key in current if key not in target}
    for key, value in target.items():
        if key not in current:
            patch[key] = copy.deepcopy(value)
        elif current[key] != value:
            patch[key] = merge_patch(current[key], value)
    return patch


def deployment_mode(api: Any, existing: dict | None, manifest: dict) -> str:
    """The ISVC's own annotation, else the cluster default in KServe's inferenceservice-config."""
    for source in (manifest, existing or {}):
        mode = source.get("metadata", {}).get("annotations", {}).get(MODE_ANNOTATION)
        if mode:
            return mode
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        config_map = client.CoreV1Api(api.api_client).read_namespaced_config_map(KSERVE_CONFIG[1], KSERVE_CONFIG[0])
        return json.loads(config_map.data.get("deploy", "{}")).get("defaultDeploymentMode", SERVERLESS)
    except (ApiException, ValueError, AttributeError):
        return "unknown"


def _ready(obj: dict) -> tuple[bool, str]:
    status = obj.get("status") or {}
    generation = obj.get("metadata", {}).get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and observed is not None and observed < generation:
        return False, "the new spec is not observed yet"
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready":
            if condition.get("status") == "True":
                return True, ""
            return False, condition.get("message") or condition.get("reason") or "not ready"
    return False, "no Ready condition yet"


def wait_ready(api: Any, namespace: str, name: str, timeout_seconds: float, poll_seconds: float) -> dict:
    deadline = time.monotonic() + timeout_seconds
    reason = "no status yet"
    while True:
        obj = _call(
            "get",
            f"inferenceservice {namespace}/{name}",
            api.get_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
        )
        ready, reason = _ready(obj)
        if ready:
            return obj
        if time.monotonic() >= deadline:
            raise TimeoutError(reason)
        time.sleep(poll_seconds)


def apply_inferenceservice(
    api: Any,
    manifest: dict,
    *,
    canary_percent: int = 0,
    timeout_seconds: float = 600,
    poll_seconds: float = 5,
) -> Rollout:
    """Creates or updates the InferenceService and waits until the new model serves, or rolls back."""
    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    what = f"inferenceservice {namespace}/{name}"
    if not 0 <= canary_percent <= 100:
        raise ChurnflowError(f"canary: expected a percentage from 0 to 100, got {canary_percent}")
    from kubernetes.client.exceptions import ApiException

    try:
        existing = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as error:
        if error.status != 404:
            raise _api_error(error, "get", what) from None
        existing = None
    except Exception as error:  # connection refused, DNS, TLS: one line, not a traceback
        raise _api_error(error, "get", what) from None

    canary = canary_percent if existing is not None and 0 < canary_percent < 100 else 0
    if canary:
        mode = deployment_mode(api, existing, manifest)
        if mode != SERVERLESS:
            raise ChurnflowError(
                f"canary: {what} runs in {mode} mode, where KServe ignores canaryTrafficPercent; deploy without "
                "--canary (or use Serverless mode)"
            )
    if existing is None:
        _call("create", what, api.create_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, manifest)
        action = "created"
    else:
        target = copy.deepcopy(manifest)
        if canary:
            target["spec"]["predictor"]["canaryTrafficPercent"] = canary
        patch = {
            "metadata": {
                "labels": target["metadata"].get("labels", {}),
                "annotations": target["metadata"].get("annotations", {}),
            },
            "spec": merge_patch(existing.get("spec", {}), target["spec"]),
        }
        _call("patch", what, api.patch_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name, patch)
        action = "updated"
    try:
        served = wait_ready(api, namespace, name, timeout_seconds, poll_seconds)
        if canary:  # the canary is healthy: send it all the traffic
            promote = {"spec": {"predictor": {"canaryTrafficPercent": None}}}
            _call("patch", what, api.patch_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name, promote)
            served = wait_ready(api, namespace, name, timeout_seconds, poll_seconds)
    except (TimeoutError, ChurnflowError) as failure:
        reason = (
            f"not Ready after {timeout_seconds:g} s ({failure})" if isinstance(failure, TimeoutError) else str(failure)
        )
        if existing is None:
            raise ChurnflowError(
                f"deploy: new {what} {reason}; nothing was serving before, it is left for "
                "inspection (kubectl describe inferenceservice)"
            ) from None
        current = _call("get", what, api.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name)
        restore = {
            "metadata": {"labels": existing["metadata"].get("labels", {})},
            "spec": merge_patch(current.get("spec", {}), existing.get("spec", {})),
        }
        _call(
            "patch (rollback)",
            what,
            api.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            restore,
        )
        raise ChurnflowError(
            f"deploy: {what} {reason}; rolled back to the previous model, which keeps serving"
        ) from None
    url = (served.get("status") or {}).get("url")
    return Rollout(action=action, name=name, namespace=namespace, url=url, canary_percent=canary)
