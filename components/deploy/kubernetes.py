"""Rolling the InferenceService out on a cluster, with the real `kubernetes` client.

Create if absent, otherwise merge-patch carrying the resourceVersion that was read (a 409 means another
writer got there first: re-read and re-apply, a bounded number of times, so two rollouts never overwrite
each other silently). Then wait until the new model is shown to serve, which KServe's `Ready` alone does
not show (in RawDeployment it stays True while the old pods serve, and `observedGeneration` is the
Knative Service's or Deployment's counter, not the InferenceService's):
- Serverless: the predictor's latest created revision is a new one, is the latest ready one, and
  carries the intended traffic (100 %, or the canary's share);
- RawDeployment: the Deployment `<name>-predictor` runs the new pod template with all replicas updated
  and available and no old ones left;
- both: the predictor behind the InferenceService's in-cluster address reports the new `model_version`
  in its v2 model metadata (`versions`).
A canary (Serverless only; the mode is the `serving.kserve.io/deploymentMode` annotation) bakes for a
window in which its error ratio and p99 latency, read from Prometheus, are compared with the stable
model's (canary.py); it is promoted within bounds and rolled back otherwise. On a timeout (crash-looping
pods) the previous spec is restored, so the model that was serving goes on serving.

Two things a real Knative adds (docs/knative-admission.md):
- its webhook may refuse the Knative Service KServe makes of the predictor; KServe 0.17+ then reports
  `PredictorReady` False with reason `ReconcileFailed` and the webhook's message, which ends the wait at
  once with that message instead of a timeout;
- a `latestRevision` route goes to the latest *ready* revision, so restoring the previous spec in one write
  would hand all traffic to a canary (or any ready new revision) until the restored revision is ready. A
  Serverless rollback therefore pins traffic to the last rolled-out revision first (KServe's
  `canaryTrafficPercent: 0`), restores the spec while pinned, and unpins only once the restored revision
  is ready; the report says which model answered meanwhile (`served_during_rollback`).

The deploy step uses the pipeline pod's service account in-cluster (manifests/rbac.yaml grants exactly
the calls made here: get/create/patch on inferenceservices, get on deployments); from a laptop it uses
the kubeconfig.
"""

from __future__ import annotations

import copy
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from churnflow.components.deploy.canary import DEFAULT_CANARY, NO_CANARY, CanaryPolicy
from churnflow.core.errors import ChurnflowError

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
SERVERLESS, RAW = "Serverless", "RawDeployment"
MODES = (SERVERLESS, RAW)
VERSION_LABEL = "churnflow.io/model-version"
OWNED_PREFIX = "churnflow.io/"  # labels/annotations this code may delete; others belong to someone else
WRITE_ATTEMPTS = 4
READY_TIMEOUT_SECONDS = 600.0  # how long a new model may take to serve before it is rolled back (the one default)

HttpGet = Callable[[str], dict]


@dataclass
class Rollout:
    action: str  # "created" or "updated"
    name: str
    namespace: str
    url: str | None
    canary_percent: int
    mode: str = ""
    model_version: str = ""
    canary: dict[str, Any] | None = None  # the bake's numbers and decision (canary.py)
    # model versions the predictor reported while a rollback was in progress, in the order first seen
    served_during_rollback: list[str] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        return asdict(self)


class RolloutFailed(ChurnflowError):
    """The new model did not take over; the previous one was restored. `report` says what was measured."""

    def __init__(self, message: str, report: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.report = report or {}


class AdmissionRefused(ChurnflowError):
    """KServe could not create or update the predictor's Knative Service (or Deployment): no revision follows."""


class CanaryRolledBack(RolloutFailed):
    """The canary was served, measured and judged worse than the stable model, so it was rolled back."""


def custom_objects_api(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """CustomObjectsApi from the pod's service account in-cluster, else from the kubeconfig."""
    from kubernetes import client, config

    if kubeconfig and not os.path.isfile(kubeconfig):
        raise ChurnflowError(f"--kubeconfig: no such file {kubeconfig}")
    try:
        if kubeconfig or context:
            raise config.ConfigException("explicit kubeconfig")
        config.load_incluster_config()
    except config.ConfigException:
        try:
            # $KUBECONFIG as it is now: the kubernetes package reads it only once, when imported
            config.load_kube_config(config_file=kubeconfig or os.environ.get("KUBECONFIG"), context=context)
        except (config.ConfigException, FileNotFoundError, TypeError, ValueError) as error:
            where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
            raise ChurnflowError(
                f"kubernetes: no in-cluster service account and no usable kubeconfig at {where} ({error})"
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
    if not status:  # None, or 0 for connection and TLS failures
        return ChurnflowError(f"kubernetes: cannot reach the API server to {verb} {what} ({error})")
    return ChurnflowError(f"kubernetes: {verb} {what} failed with HTTP {status} ({reason})")


def _call(verb: str, what: str, function: Any, *args: Any, **kwargs: Any) -> Any:
    from kubernetes.client.exceptions import ApiException

    try:
        return function(*args, **kwargs)
    except ApiException as error:
        raise _api_error(error, verb, what) from None
    except Exception as error:  # connection refused, DNS, TLS: one line, not a traceback
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


def _owned_map_patch(current: dict | None, target: dict | None) -> dict:
    """Sets every key of `target`; deletes only our own keys (churnflow.io/...) that `target` lacks."""
    current, target = current or {}, target or {}
    patch: dict[str, Any] = {k: None for k in current if k not in target and k.startswith(OWNED_PREFIX)}
    patch.update({k: v for k, v in target.items() if current.get(k) != v})
    return patch


def deployment_mode(existing: dict | None, manifest: dict) -> str:
    """The rendered annotation, else the live object's annotation, else the mode KServe reports in status."""
    for source in (manifest, existing or {}):
        mode = (source.get("metadata", {}).get("annotations") or {}).get(MODE_ANNOTATION)
        if mode:
            return mode
    return ((existing or {}).get("status") or {}).get("deploymentMode") or "unknown"


def with_canary(manifest: dict, canary_percent: int) -> dict:
    """The manifest as it is applied during a canary: `canaryTrafficPercent` on the predictor."""
    if canary_percent:
        manifest["spec"]["predictor"]["canaryTrafficPercent"] = canary_percent
    return manifest


def http_get_json(url: str, timeout: float = 5.0) -> dict:
    """GET a JSON document; raises OSError/ValueError on any failure (the caller keeps polling)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - http(s) only, from status
        return json.loads(response.read())


def served_version(http_get: HttpGet, address: str | None, model_name: str) -> tuple[str | None, str]:
    """(the model_version the predictor behind `address` reports in its v2 model metadata, or None;
    why there is none). An Istio refusal is named: in a Kubeflow profile the check needs the predictor's
    AuthorizationPolicy (manifests/authorizationpolicy.yaml), and without it the rollout only times out."""
    if not address:
        return None, "no address yet"
    try:
        versions = http_get(f"{address.rstrip('/')}/v2/models/{model_name}").get("versions") or []
    except urllib.error.HTTPError as error:
        if error.code == 403:
            body = error.read().decode(errors="replace").strip()[:80] if error.fp else ""
            return None, (
                f"answered 403 ({body or 'Forbidden'}): Istio refuses the serving check; apply "
                "manifests/authorizationpolicy.yaml in this namespace (kubectl apply -k manifests/)"
            )
        return None, f"answered {error.code}"
    except (OSError, ValueError, urllib.error.URLError, AttributeError):
        return None, "no answer"
    return (str(versions[0]) if versions else ""), ""


class _Target:
    """What 'the new model serves' means for one rollout phase."""

    def __init__(
        self,
        mode: str,
        name: str,
        version: str,
        percent: int,
        previous_revision: str | None,
        served_url: str = "",
        stale_refusal: str = "",
    ) -> None:
        self.mode, self.name, self.version, self.served_url = mode, name, version, served_url
        self.percent = percent  # traffic the latest revision should carry
        self.previous_revision = previous_revision  # latestCreatedRevision before our write (None: any)
        self.stale_refusal = stale_refusal  # a refusal already in status before our write: not about our spec


RECONCILE_FAILED = "ReconcileFailed"


def refusal(obj: dict | None) -> str:
    """KServe's message when it could not write the predictor's Knative Service or Deployment, else "".

    KServe 0.17+ (components/predictor.go) sets PredictorReady False with reason ReconcileFailed and the
    error, e.g. Knative's webhook refusing the pod spec. 0.13-0.16 only emit a Warning event with it."""
    for condition in ((obj or {}).get("status") or {}).get("conditions") or []:
        failed = condition.get("status") == "False" and condition.get("reason") == RECONCILE_FAILED
        if condition.get("type") == "PredictorReady" and failed:
            lines = str(condition.get("message") or RECONCILE_FAILED).splitlines()  # one error a line
            return "; ".join(" ".join(line.split()) for line in lines if line.strip())
    return ""


def _ready_condition(status: dict) -> tuple[bool, str]:
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready":
            ok = condition.get("status") == "True"
            return ok, "" if ok else (condition.get("message") or condition.get("reason") or "not ready")
    return False, "no Ready condition yet"


def _serverless_progress(obj: dict, target: _Target) -> tuple[bool, str]:
    status = obj.get("status") or {}
    predictor = (status.get("components") or {}).get("predictor") or {}
    created, ready = predictor.get("latestCreatedRevision"), predictor.get("latestReadyRevision")
    if not created or created == target.previous_revision:
        # KServe before 0.17 reports a Knative Service it could not write (e.g. refused by Knative's
        # webhook) only as a Warning event on the InferenceService, which this step cannot list.
        return (
            False,
            f"no new revision created yet; see the events of `kubectl describe inferenceservice {target.name}`",
        )
    if created != ready:
        ok, reason = _ready_condition(status)
        return False, f"revision {created} is not ready ({reason or 'starting'})"
    share = sum(t.get("percent") or 0 for t in predictor.get("traffic") or [] if t.get("revisionName") == created)
    if share != target.percent:
        return False, f"revision {created} carries {share}% of traffic, expected {target.percent}%"
    return _ready_condition(status)


def _raw_progress(api: Any, obj: dict, target: _Target, namespace: str) -> tuple[bool, str]:
    from kubernetes import client

    name = f"{target.name}-predictor"
    apps = client.AppsV1Api(api.api_client)
    from kubernetes.client.exceptions import ApiException

    try:
        response = apps.read_namespaced_deployment(name, namespace, _preload_content=False)
    except ApiException as error:
        if error.status == 404:
            return False, f"deployment {name} not created yet"
        raise _api_error(error, "get", f"deployment {namespace}/{name}") from None
    except Exception as error:
        raise _api_error(error, "get", f"deployment {namespace}/{name}") from None
    deployment = json.loads(response.data)
    spec, status, meta = deployment.get("spec") or {}, deployment.get("status") or {}, deployment.get("metadata") or {}
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if target.version and labels.get(VERSION_LABEL) != target.version:
        return False, f"deployment {name} does not run model_version {target.version} yet"
    if (status.get("observedGeneration") or 0) < (meta.get("generation") or 0):
        return False, f"deployment {name}: the new pod template is not observed yet"
    wanted = spec.get("replicas") if spec.get("replicas") is not None else 1
    updated, available = status.get("updatedReplicas") or 0, status.get("availableReplicas") or 0
    total = status.get("replicas") or 0
    if updated < wanted:
        return False, f"deployment {name}: {updated} of {wanted} replicas updated"
    if total > updated or available < updated:
        new_available = max(0, available - (total - updated))  # old pods count as available until they go
        return False, (
            f"deployment {name}: {new_available} of {updated} new replicas available, "
            f"{total - updated} old ones still serving"
        )
    return True, ""


def _progress(api: Any, obj: dict, target: _Target, namespace: str, http_get: HttpGet) -> tuple[bool, str]:
    # Without the annotation the cluster default applies, which KServe reports in status.deploymentMode.
    mode = target.mode if target.mode in MODES else (obj.get("status") or {}).get("deploymentMode")
    refused = refusal(obj)
    if refused and refused != target.stale_refusal:
        raise AdmissionRefused(f"KServe could not apply the predictor: {refused}")
    if mode == RAW:
        done, reason = _raw_progress(api, obj, target, namespace)
    elif mode == SERVERLESS:
        done, reason = _serverless_progress(obj, target)
    else:
        return False, "KServe has not reported the deployment mode yet"
    if not done or not target.version or target.percent != 100:
        return done, reason  # a canary serves a share only: its revision and traffic are the evidence
    address = target.served_url or ((obj.get("status") or {}).get("address") or {}).get("url")
    version, problem = served_version(http_get, address, target.name)
    if version != target.version:
        seen = problem if version is None else f"model_version {version!r}"
        return False, f"the predictor at {address} reports {seen}, expected {target.version!r}"
    return True, ""


def _get(api: Any, namespace: str, name: str) -> dict | None:
    from kubernetes.client.exceptions import ApiException

    try:
        return api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as error:
        if error.status == 404:
            return None
        raise _api_error(error, "get", f"inferenceservice {namespace}/{name}") from None
    except Exception as error:
        raise _api_error(error, "get", f"inferenceservice {namespace}/{name}") from None


def wait_until_served(
    api: Any,
    target: _Target,
    namespace: str,
    *,
    timeout_seconds: float,
    poll_seconds: float,
    http_get: HttpGet,
) -> dict:
    """Polls until `target` is met; TimeoutError carries the last reason it was not."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        obj = _get(api, namespace, target.name) or {}
        done, reason = _progress(api, obj, target, namespace, http_get)
        if done:
            return obj
        if time.monotonic() >= deadline:
            raise TimeoutError(reason)
        time.sleep(poll_seconds)


def _patch_fresh(api: Any, namespace: str, name: str, verb: str, build: Callable[[dict], dict]) -> tuple[dict, dict]:
    """Merge-patches from a fresh read with its resourceVersion; retries a 409 (bounded).

    Returns (the object as read before the winning write, the object after it)."""
    from kubernetes.client.exceptions import ApiException

    what = f"inferenceservice {namespace}/{name}"
    for attempt in range(WRITE_ATTEMPTS):
        current = _get(api, namespace, name)
        if current is None:
            raise ChurnflowError(f"kubernetes: {what} disappeared during the rollout")
        patch = build(current)
        patch.setdefault("metadata", {})["resourceVersion"] = current["metadata"]["resourceVersion"]
        try:
            return current, api.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, patch, field_validation="Strict"
            )
        except ApiException as error:
            if error.status == 409 and attempt + 1 < WRITE_ATTEMPTS:
                time.sleep(0.05 * (attempt + 1))
                continue
            if error.status == 409:
                raise ChurnflowError(
                    f"kubernetes: conflict on {verb} {what}: it changed under us {WRITE_ATTEMPTS} times in a row; "
                    "another rollout is in progress"
                ) from None
            raise _api_error(error, verb, what) from None
        except Exception as error:
            raise _api_error(error, verb, what) from None
    raise AssertionError("unreachable")


def _forward_patch(target: dict) -> Callable[[dict], dict]:
    def build(current: dict) -> dict:
        meta, want = current.get("metadata", {}), target["metadata"]
        return {
            "metadata": {
                "labels": _owned_map_patch(meta.get("labels"), want.get("labels")),
                "annotations": _owned_map_patch(meta.get("annotations"), want.get("annotations")),
            },
            "spec": merge_patch(current.get("spec", {}), target["spec"]),
        }

    return build


def _latest_created(obj: dict | None) -> str | None:
    return (((obj or {}).get("status") or {}).get("components") or {}).get("predictor", {}).get("latestCreatedRevision")


def _version_of(manifest: dict) -> str:
    return (manifest.get("metadata", {}).get("labels") or {}).get(VERSION_LABEL, "")


def apply_inferenceservice(
    api: Any,
    manifest: dict,
    *,
    canary_percent: int = NO_CANARY,
    timeout_seconds: float = READY_TIMEOUT_SECONDS,
    poll_seconds: float = 5,
    canary_policy: CanaryPolicy | None = None,
    http_get: HttpGet = http_get_json,
    judge: Callable[..., dict] | None = None,
    served_url: str = "",
) -> Rollout:
    """Creates or updates the InferenceService and waits until the new model serves, or rolls back.

    `http_get` reads the predictor's v2 metadata (injectable: tests point it at a local server);
    `judge` compares canary and stable (default: canary.judge_from_prometheus with `canary_policy`);
    `served_url` replaces the InferenceService's in-cluster address (from outside the cluster)."""
    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    what = f"inferenceservice {namespace}/{name}"
    if not 0 <= canary_percent <= 100:
        raise ChurnflowError(f"canary: expected a percentage from 0 to 100, got {canary_percent}")
    policy = canary_policy or DEFAULT_CANARY
    version = _version_of(manifest)
    existing = _get(api, namespace, name)
    mode = deployment_mode(existing, manifest)

    canary = canary_percent if existing is not None and 0 < canary_percent < 100 else 0
    stable_version = _version_of(existing or {})
    if canary:
        if mode != SERVERLESS:
            raise ChurnflowError(
                f"canary: {what} runs in {mode} mode, where KServe ignores canaryTrafficPercent; deploy without "
                "--canary (or use Serverless mode)"
            )
        if judge is None and not policy.prometheus_url:
            raise ChurnflowError("canary: prometheus_url is required to judge the canary against the stable model")
        if not version or version == stable_version:
            raise ChurnflowError(
                f"canary: the new model_version ({version or 'none'}) must differ from the serving one "
                f"({stable_version or 'none'}) so their metrics can be told apart"
            )
    target = with_canary(copy.deepcopy(manifest), canary)
    if existing is None:
        _call(
            "create",
            what,
            api.create_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            target,
            field_validation="Strict",
        )
        action, before = "created", None
    else:
        before, _ = _patch_fresh(api, namespace, name, "patch", _forward_patch(target))
        action = "updated"
    rollout = Rollout(action, name, namespace, None, canary, mode, version)
    spec_changed = before is None or before.get("spec") != target["spec"]
    first = _Target(
        mode,
        name,
        version,
        canary or 100,
        _latest_created(before) if spec_changed else None,
        served_url,
        refusal(before),
    )
    phase = "the new model"
    try:
        served = wait_until_served(
            api, first, namespace, timeout_seconds=timeout_seconds, poll_seconds=poll_seconds, http_get=http_get
        )
        if canary:
            phase = "the canary"
            rollout.canary = _bake(policy, judge, namespace, stable_version, version, canary)
            if rollout.canary["decision"] != "promote":
                raise CanaryRolledBack(f"canary {version} rolled back: {rollout.canary['reason']}")
            phase = "the promoted model"
            _patch_fresh(
                api,
                namespace,
                name,
                "patch (promote)",
                lambda _: {"spec": {"predictor": {"canaryTrafficPercent": None}}},
            )
            promoted = _Target(mode, name, version, 100, None, served_url)
            served = wait_until_served(
                api, promoted, namespace, timeout_seconds=timeout_seconds, poll_seconds=poll_seconds, http_get=http_get
            )
    except (TimeoutError, ChurnflowError) as failure:
        if isinstance(failure, TimeoutError):
            reason = f"{phase} did not serve within {timeout_seconds:g} s ({failure})"
        else:
            reason = str(failure)
        if before is None:
            raise RolloutFailed(
                f"deploy: new {what}: {reason}; nothing was serving before, it is left for "
                "inspection (kubectl describe inferenceservice)",
                rollout.report(),
            ) from None
        waits = {"timeout_seconds": timeout_seconds, "poll_seconds": poll_seconds, "http_get": http_get}
        restored = _rollback(api, namespace, name, before, mode, served_url, rollout, **waits)
        message = f"deploy: {what}: {reason}; {restored}"
        error_type = CanaryRolledBack if isinstance(failure, CanaryRolledBack) else RolloutFailed
        raise error_type(message, rollout.report()) from None
    rollout.url = (served.get("status") or {}).get("url")
    return rollout


def _restore_patch(before: dict, **predictor_overrides: Any) -> Callable[[dict], dict]:
    """The merge patch back to `before`'s labels, annotations and spec (with predictor fields overridden)."""

    def build(current: dict) -> dict:
        meta, old = current.get("metadata", {}), before["metadata"]
        spec = copy.deepcopy(before.get("spec", {}))
        spec.setdefault("predictor", {}).update(predictor_overrides)
        return {
            "metadata": {
                "labels": _owned_map_patch(meta.get("labels"), old.get("labels")),
                "annotations": _owned_map_patch(meta.get("annotations"), old.get("annotations")),
            },
            "spec": merge_patch(current.get("spec", {}), spec),
        }

    return build


def _rolled_out(obj: dict | None) -> str:
    predictor = (((obj or {}).get("status") or {}).get("components") or {}).get("predictor") or {}
    return predictor.get("latestRolledoutRevision") or ""


def _share_of(obj: dict, revision: str) -> int:
    predictor = (((obj or {}).get("status") or {}).get("components") or {}).get("predictor") or {}
    return sum(t.get("percent") or 0 for t in predictor.get("traffic") or [] if t.get("revisionName") == revision)


def _poll(
    api: Any,
    namespace: str,
    name: str,
    check: Callable[[dict], tuple[bool, str]],
    *,
    timeout_seconds: float,
    poll_seconds: float,
    watch: Callable[[dict], None],
) -> tuple[bool, str]:
    """Polls `check` on fresh reads until it holds or time runs out; `watch` sees every read."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        obj = _get(api, namespace, name) or {}
        watch(obj)
        done, reason = check(obj)
        if done or time.monotonic() >= deadline:
            return done, reason
        time.sleep(poll_seconds)


def _rollback(
    api: Any,
    namespace: str,
    name: str,
    before: dict,
    mode: str,
    served_url: str,
    rollout: Rollout,
    *,
    timeout_seconds: float,
    poll_seconds: float,
    http_get: HttpGet,
) -> str:
    """Restores `before`; returns how far that got, as the end of the failure message.

    Serverless, with a rolled-out revision to go back to: (1) canaryTrafficPercent 0, which KServe turns into
    100 % on the last rolled-out revision (ksvc_reconciler.go), and wait until the route shows it; (2) the
    previous spec, still pinned; wait until the revision it creates is ready; (3) unpin, so the restored
    revision takes the traffic, and wait until it serves the previous model_version. At no step does a
    `latestRevision` target point at the rejected revision with any share. Otherwise (RawDeployment, where
    KServe ignores canaryTrafficPercent, or nothing ever rolled out) the previous spec is written back at once.
    """
    stable = _rolled_out(before)
    previous_version = _version_of(before)
    waits = {"timeout_seconds": timeout_seconds, "poll_seconds": poll_seconds}

    def watch(obj: dict) -> None:
        address = served_url or ((obj.get("status") or {}).get("address") or {}).get("url")
        seen, _ = served_version(http_get, address, name)
        if seen is not None and seen not in rollout.served_during_rollback:
            rollout.served_during_rollback.append(seen)

    if mode != SERVERLESS or not stable:
        _patch_fresh(api, namespace, name, "patch (rollback)", _restore_patch(before))
        return "rolled back to the previous model, which keeps serving"
    _, pinned = _patch_fresh(
        api, namespace, name, "patch (rollback: pin)", lambda _: {"spec": {"predictor": {"canaryTrafficPercent": 0}}}
    )
    watch(pinned)

    def stable_holds_all(obj: dict) -> tuple[bool, str]:
        share = _share_of(obj, stable)
        return share == 100, f"revision {stable} carries {share}% of traffic, expected 100%"

    done, reason = _poll(api, namespace, name, stable_holds_all, watch=watch, **waits)
    if not done:  # restoring now could route to the rejected revision: leave it pinned for inspection
        return f"rollback stopped with traffic pinned by canaryTrafficPercent 0 ({reason})"
    pinned_spec = before.get("spec", {}).get("predictor", {}).get("canaryTrafficPercent", 0) or 0
    current, restored = _patch_fresh(
        api, namespace, name, "patch (rollback: restore)", _restore_patch(before, canaryTrafficPercent=0)
    )
    # A new revision follows only if the rejected spec had reached Knative (a refused one never did).
    new_revision = not refusal(current) and _pod_template(current) != _pod_template(restored)
    created_before = _latest_created(current)

    def restored_ready(obj: dict) -> tuple[bool, str]:
        predictor = ((obj.get("status") or {}).get("components") or {}).get("predictor") or {}
        created, ready = predictor.get("latestCreatedRevision"), predictor.get("latestReadyRevision")
        if refusal(obj):
            return False, refusal(obj)
        if new_revision and created == created_before:
            return False, "no revision for the previous spec yet"
        if created != ready:
            return False, f"restored revision {created} is not ready"
        return _share_of(obj, stable) == 100, f"revision {stable} no longer carries all traffic"

    done, reason = _poll(api, namespace, name, restored_ready, watch=watch, **waits)
    if not done:
        return (
            f"rollback stopped with the previous model serving from {stable} (canaryTrafficPercent 0) while the "
            f"restored spec is not ready ({reason})"
        )
    unpin = {"canaryTrafficPercent": pinned_spec or None}
    _patch_fresh(api, namespace, name, "patch (rollback: unpin)", lambda _: {"spec": {"predictor": unpin}})
    final = _Target(mode, name, previous_version, 100, None, served_url)
    try:
        wait_until_served(api, final, namespace, **waits, http_get=http_get)
    except (TimeoutError, ChurnflowError) as failure:
        return f"rolled back to the previous spec, but it does not serve yet ({failure})"
    finally:
        watch(_get(api, namespace, name) or {})
    answered = ", ".join(rollout.served_during_rollback) or "no answer"
    return f"rolled back to the previous model, which kept serving (answering during the rollback: {answered})"


def _pod_template(obj: dict | None) -> dict:
    """The predictor spec without canaryTrafficPercent: what the Knative revision is made of."""
    predictor = copy.deepcopy(((obj or {}).get("spec") or {}).get("predictor") or {})
    predictor.pop("canaryTrafficPercent", None)
    return predictor


def _bake(
    policy: CanaryPolicy,
    judge: Callable[..., dict] | None,
    namespace: str,
    stable_version: str,
    canary_version: str,
    percent: int,
) -> dict:
    from churnflow.components.deploy.canary import judge_from_prometheus

    time.sleep(policy.bake_seconds)
    judge = judge or judge_from_prometheus
    report = judge(policy=policy, namespace=namespace, stable_version=stable_version, canary_version=canary_version)
    return {"percent": percent, **report}
