"""A Kubernetes API double on pytest-httpserver that enforces what a real API server enforces for our calls.

The real `kubernetes` client talks to it over loopback. Every request is authenticated (bearer token →
service account) and authorized from the Role and RoleBinding in manifests/rbac.yaml (403 for anything
not granted, whatever the namespace); names and labels are checked (422); InferenceService bodies are
validated against the openAPIV3Schema of KServe's CRD in ../shared/kserve/ (422 on wrong types, and on
unknown fields under fieldValidation=Strict, pruned otherwise as the server does); every write bumps
resourceVersion and a write carrying a stale one gets 409; PATCH is JSON merge patch (RFC 7386) only
(strategic and JSON patch are refused with 415: our code never sends them).

A controller stand-in drives status the way KServe does, per deployment mode (the
`serving.kserve.io/deploymentMode` annotation, else `default_mode`), one reconcile step per read:
- Serverless: each change of the predictor's pod template is first judged by Knative's webhook
  (tests/knative_webhook.py, `knative_version`: Kubeflow 1.9's 1.12.4 by default, None for none); refused,
  no revision is made and status says so as KServe 0.17+ does (PredictorReady False, ReconcileFailed).
  Admitted, it creates a Knative revision (`<name>-predictor-0000N`); `components.predictor` reports
  latestCreatedRevision, latestReadyRevision, latest/previous rolled-out revisions and `traffic`, written
  as KServe writes the Knative Service's traffic (canaryTrafficPercent splits it with the rolled-out
  revision, 0 pins it there) and resolved as Knative's route does: `latestRevision` goes to the latest
  READY revision. `routing` records which model versions receive traffic after every reconcile step;
  `observedGeneration` is the Knative Service's generation, not the InferenceService's.
- RawDeployment: a Deployment `<name>-predictor` whose updated/available replicas move as a rolling
  update does; the InferenceService's Ready stays True while old pods serve.
- A model in `crashing` (its storage URI) crash-loops: its revision never becomes ready (Serverless), or
  its new pods never become available (Raw).
The predictor each InferenceService routes to answers `GET <status.address.url>/v2/models/<name>` with the
`versions` of the model serving the majority of its traffic, as `churnflow serve` does, and `/metrics`
(also on `/_pods/<ns>/<name>/...`, a pod's own address, as Prometheus scrapes). In front of it sits the
pod's Istio sidecar of a Kubeflow profile (Istio section below): Kubeflow's mesh-wide allow-nothing, the
profile's ns-owner-access-istio and the AuthorizationPolicies manifests/ creates, evaluated for the peer
the sidecar sees (Knative's local gateway or activator for the address in Serverless mode, the caller
itself in RawDeployment or pod to pod); a refusal is Envoy's 403 "RBAC: access denied".
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from . import knative_webhook, schemas

ROOT = Path(__file__).resolve().parents[1]
RBAC_MANIFEST = ROOT / "manifests" / "rbac.yaml"
KSERVE_CRD = schemas.need(schemas.KSERVE_INFERENCESERVICE_CRD)  # ../shared/kserve/, else cached/downloaded
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
VERSION_LABEL = "churnflow.io/model-version"

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

CORE = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/(?P<resource>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?$")
GROUPED = re.compile(
    r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)/namespaces/(?P<ns>[^/]+)/(?P<resource>[^/]+)"
    r"(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?$"
)
# The InferenceService's in-cluster address (status.address.url), and one of its predictor pods directly
# (as Prometheus scrapes them); the rest of the path is the request's.
SERVING = re.compile(r"^/_serving/(?P<ns>[^/]+)/(?P<name>[^/]+)(?P<path>/.*)$")
PODS = re.compile(r"^/_pods/(?P<ns>[^/]+)/(?P<name>[^/]+)(?P<path>/.*)$")
MODEL_METADATA = re.compile(r"^/v2/models/(?P<model>[^/]+)$")
logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log per request in test output

KINDS = {
    ("serving.kserve.io", "inferenceservices"): "InferenceService",
    ("apps", "deployments"): "Deployment",
    ("", "configmaps"): "ConfigMap",
}


@functools.cache
def isvc_schema() -> dict:
    """The InferenceService openAPIV3Schema from KServe's CRD (parsed once: the file is ~40k lines)."""
    return schemas.crd_version_schema(KSERVE_CRD, "v1beta1")


# -- syntax ---------------------------------------------------------------------------------------


def qualified_name_errors(key: str, where: str) -> list[str]:
    """Label/annotation key syntax: optional DNS-1123 subdomain prefix and '/', then a name of ≤63 chars."""
    prefix, _, name = key.rpartition("/")
    errors = []
    if prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix)):
        errors.append(f"{where}: Invalid value: {key!r}: prefix part must be a DNS-1123 subdomain")
    if not name or len(name) > 63 or not QUALIFIED_NAME.match(name):
        errors.append(
            f"{where}: Invalid value: {key!r}: name part must consist of alphanumeric characters, '-', '_' or '.', "
            "and must start and end with an alphanumeric character (at most 63)"
        )
    return errors


def label_errors(labels: Any, where: str) -> list[str]:
    if labels is None:
        return []
    if not isinstance(labels, dict):
        return [f"{where}: Invalid value: must be a map of strings"]
    errors = []
    for key, value in labels.items():
        errors += qualified_name_errors(str(key), f"{where}")
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
            errors.append(
                f"{where}: Invalid value: {value!r}: a valid label must be an empty string or consist of "
                "alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric "
                "character (at most 63 characters)"
            )
    return errors


def metadata_errors(metadata: dict, kind: str) -> list[str]:
    errors = []
    name = metadata.get("name", "")
    pattern, rule = (DNS1035_LABEL, "a DNS-1035 label") if kind == "InferenceService" else (DNS1123_SUBDOMAIN, "")
    limit = 63 if kind == "InferenceService" else 253
    if not isinstance(name, str) or not name or len(name) > limit or not pattern.match(name):
        errors.append(f"metadata.name: Invalid value: {name!r}: must be {rule or 'a DNS-1123 subdomain'}")
    errors += label_errors(metadata.get("labels"), "metadata.labels")
    for key, value in (metadata.get("annotations") or {}).items():
        errors += qualified_name_errors(str(key), "metadata.annotations")
        if not isinstance(value, str):
            errors.append(f"metadata.annotations: Invalid value: {key!r}: values must be strings")
    return errors


# -- structural schema ------------------------------------------------------------------------------

_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "integer": int,
    "number": (int, float),
}


def schema_errors(value: Any, schema: dict, path: str, unknown: list[str]) -> list[str]:
    """Validates `value` against a CRD structural schema; unknown fields are collected in `unknown` and pruned."""
    if value is None:
        return [] if schema.get("nullable") else [f'{path}: Invalid value: "null": must not be null']
    if schema.get("x-kubernetes-int-or-string"):
        if isinstance(value, bool) or not isinstance(value, int | str):
            return [f"{path}: Invalid value: {value!r}: must be an integer or a string"]
        return []
    errors: list[str] = []
    expected = schema.get("type")
    if expected:
        python_type = _TYPES[expected]
        wrong = not isinstance(value, python_type) or (expected in ("integer", "number") and isinstance(value, bool))
        if expected == "integer" and isinstance(value, float) and value.is_integer():
            wrong = False
        if wrong:
            return [f'{path}: Invalid value: "{type(value).__name__}": {path} in body must be of type {expected}']
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: Unsupported value: {value!r}: supported values: {schema['enum']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: Invalid value: {value}: should be greater than or equal to {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: Invalid value: {value}: should be less than or equal to {schema['maximum']}")
    if isinstance(value, dict):
        for required in schema.get("required", []):
            if required not in value:
                errors.append(f"{path}.{required}: Required value")
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        for key in list(value):
            child = f"{path}.{key}"
            if properties is not None and key in properties:
                errors += schema_errors(value[key], properties[key], child, unknown)
            elif isinstance(additional, dict):
                errors += schema_errors(value[key], additional, child, unknown)
            elif schema.get("x-kubernetes-preserve-unknown-fields") or additional is True:
                continue
            elif properties is not None or additional is False:
                unknown.append(child)
                del value[key]
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            errors += schema_errors(item, schema["items"], f"{path}[{index}]", unknown)
    return errors


# -- Istio authorization (the predictor's sidecar) -------------------------------------------------------
#
# What a request to a predictor pod meets in a Kubeflow 1.9/1.10 profile namespace, with Istio's
# AuthorizationPolicy semantics (istio.io reference "Authorization Policy", istio/istio
# pilot/pkg/security/authz): DENY policies first, then, if any ALLOW policy applies to the workload,
# the request must match one of its rules, else Envoy answers 403 "RBAC: access denied". A policy in the
# root namespace (istio-system) applies to every workload; a missing selector selects every workload of
# its namespace. Within a rule, `from`, `to` and `when` must all match; entries of a list match if any
# does; a field's values match if any does. Values: "*" is any non-empty value, "x*" a prefix, "*x" a
# suffix (pilot/pkg/security/authz/matcher/string.go). principals and namespaces come from the peer's
# mTLS certificate, so a plaintext caller has neither and never matches them.

ISTIO_ROOT_NAMESPACE = "istio-system"
# Who a request through the InferenceService's cluster-local address arrives from in Serverless mode:
# Knative's local gateway (kubeflow/manifests v1.10.0: the knative-local-gateway Service selects the
# cluster-local-gateway pods, service account cluster-local-gateway-service-account) or, when it is in
# the path, the activator (knative serving 1.12/1.16 serving-core.yaml: serviceAccountName activator).
LOCAL_GATEWAY_PRINCIPAL = "cluster.local/ns/istio-system/sa/cluster-local-gateway-service-account"
ACTIVATOR_PRINCIPAL = "cluster.local/ns/knative-serving/sa/activator"
# A test stands for another calling workload with this header: its mTLS principal, "" for a caller
# without a sidecar (plaintext). Without it the caller is the pod the double's token belongs to.
SOURCE_HEADER = "X-Test-Source-Principal"
_UNSUPPORTED_SOURCE = ("ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks")
_UNSUPPORTED_OPERATION = ("ports", "notPorts")


def global_deny_all() -> dict:
    """kubeflow/manifests common/istio/istio-install/base/deny_all_authorizationpolicy.yaml (v1.9-v1.10):
    an empty spec in the root namespace, i.e. an ALLOW policy without rules for every workload."""
    return {"metadata": {"name": "global-deny-all", "namespace": ISTIO_ROOT_NAMESPACE}, "spec": {}}


def profile_owner_policy(namespace: str, owner: str = "user@example.com") -> dict:
    """ns-owner-access-istio as the profile controller writes it (kubeflow/kubeflow v1.10.0, same in
    v1.9.2: components/profile-controller/controllers/profile_controller.go, getAuthorizationPolicy),
    with the default principals of its config map (kubeflow/manifests v1.10.0 apps/profiles)."""
    return {
        "metadata": {"name": "ns-owner-access-istio", "namespace": namespace},
        "spec": {
            "action": "ALLOW",
            "rules": [
                {
                    "when": [{"key": "request.headers[kubeflow-userid]", "values": [owner]}],
                    "from": [
                        {
                            "source": {
                                "principals": [
                                    "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account",
                                    "cluster.local/ns/kubeflow/sa/ml-pipeline-ui",
                                ]
                            }
                        }
                    ],
                },
                {"when": [{"key": "source.namespace", "values": [namespace]}]},
                {"to": [{"operation": {"paths": ["/healthz", "/metrics", "/wait-for-drain"]}}]},
                {
                    "from": [
                        {"source": {"principals": ["cluster.local/ns/kubeflow/sa/notebook-controller-service-account"]}}
                    ],
                    "to": [{"operation": {"methods": ["GET"], "paths": ["*/api/kernels"]}}],
                },
            ],
        },
    }


@functools.cache
def _kustomized_policies(namespace: str) -> tuple[str, ...]:
    """The AuthorizationPolicies `kubectl apply -k manifests/` creates in `namespace` (docs/deploy.md step 2:
    the kustomization's namespace set, then built by kubectl's kustomize), as YAML texts."""
    import shutil
    import subprocess
    import sys
    import tempfile

    kubectl = str(Path(sys.executable).with_name("kubectl"))
    with tempfile.TemporaryDirectory() as directory:
        for path in (ROOT / "manifests").glob("*.yaml"):
            shutil.copy(path, directory)
        kustomization = Path(directory) / "kustomization.yaml"
        kustomization.write_text(re.sub(r"(?m)^namespace: .*$", f"namespace: {namespace}", kustomization.read_text()))
        built = subprocess.run([kubectl, "kustomize", directory], capture_output=True, text=True, check=True).stdout
    return tuple(yaml.safe_dump(d) for d in yaml.safe_load_all(built) if d and d["kind"] == "AuthorizationPolicy")


def manifest_policies(namespace: str) -> list[dict]:
    """Our manifests' AuthorizationPolicies as applied to `namespace`."""
    return [yaml.safe_load(text) for text in _kustomized_policies(namespace)]


def _istio_value_matches(pattern: str, value: str | None) -> bool:
    if value is None or value == "":
        return False
    if pattern == "*":
        return True
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def _any_matches(patterns: list[str], value: str | None) -> bool:
    return any(_istio_value_matches(p, value) for p in patterns)


@dataclass
class MeshRequest:
    """A request as the destination's sidecar sees it."""

    method: str
    path: str  # without the query string, which Istio's path match ignores
    principal: str | None  # the peer's mTLS identity; None for plaintext
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def source_namespace(self) -> str | None:
        match = re.match(r"^[^/]+/ns/([^/]+)/sa/[^/]+$", self.principal or "")
        return match.group(1) if match else None


def _field_matches(spec: dict, name: str, value: str | None) -> bool:
    """One source/operation field and its not-variant (absent: matches)."""
    if name in spec and not _any_matches(spec[name], value):
        return False
    negated = "not" + name[0].upper() + name[1:]
    return not (negated in spec and _any_matches(spec[negated], value))  # no value: outside any list


def _source_matches(source: dict, request: MeshRequest) -> bool:
    if unsupported := [k for k in _UNSUPPORTED_SOURCE if k in source]:
        raise NotImplementedError(f"the Istio double does not model source fields {unsupported}")
    return (
        _field_matches(source, "principals", request.principal)
        and _field_matches(source, "namespaces", request.source_namespace)
        and _field_matches(source, "requestPrincipals", None)  # no RequestAuthentication on the predictor
    )


def _operation_matches(operation: dict, request: MeshRequest) -> bool:
    if unsupported := [k for k in _UNSUPPORTED_OPERATION if k in operation]:
        raise NotImplementedError(f"the Istio double does not model operation fields {unsupported}")
    return (
        _field_matches(operation, "methods", request.method)
        and _field_matches(operation, "paths", request.path)
        and _field_matches(operation, "hosts", request.headers.get("host"))
    )


def _condition_value(key: str, request: MeshRequest) -> str | None:
    if key == "source.namespace":
        return request.source_namespace
    if key == "source.principal":
        return request.principal
    if match := re.fullmatch(r"request\.headers\[(.+)\]", key):
        return request.headers.get(match.group(1).lower())
    raise NotImplementedError(f"the Istio double does not model condition key {key!r}")


def _rule_matches(rule: dict, request: MeshRequest) -> bool:
    if rule.get("from") and not any(_source_matches(f.get("source") or {}, request) for f in rule["from"]):
        return False
    if rule.get("to") and not any(_operation_matches(t.get("operation") or {}, request) for t in rule["to"]):
        return False
    for condition in rule.get("when") or []:
        value = _condition_value(condition["key"], request)
        if "values" in condition and not _any_matches(condition["values"], value):
            return False
        if "notValues" in condition and _any_matches(condition["notValues"], value):
            return False
    return True


def _applies(policy: dict, namespace: str, labels: dict[str, str]) -> bool:
    home = policy["metadata"].get("namespace")
    if home not in (namespace, ISTIO_ROOT_NAMESPACE):
        return False
    selector = ((policy.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def istio_allows(policies: list[dict], namespace: str, labels: dict[str, str], request: MeshRequest) -> bool:
    """Whether the sidecar of a pod with `labels` in `namespace` lets `request` through."""
    applying = [p for p in policies if _applies(p, namespace, labels)]
    for policy in applying:
        action = (policy.get("spec") or {}).get("action", "ALLOW")
        if action not in ("ALLOW", "DENY"):
            raise NotImplementedError(f"the Istio double does not model {action} policies")
    if any(_rule_matches(rule, request) for rule in _rules(applying, "DENY")):
        return False
    if not any((p.get("spec") or {}).get("action", "ALLOW") == "ALLOW" for p in applying):
        return True  # no ALLOW policy selects the workload: allowed
    return any(_rule_matches(rule, request) for rule in _rules(applying, "ALLOW"))


def _rules(policies: list[dict], action: str) -> list[dict]:
    """The rules of the policies with `action` (a policy without rules contributes none: it matches
    nothing, so an ALLOW one only denies)."""
    return [
        rule
        for policy in policies
        if (policy.get("spec") or {}).get("action", "ALLOW") == action
        for rule in (policy.get("spec") or {}).get("rules") or []
    ]


# -- RBAC -----------------------------------------------------------------------------------------


def load_rules(path: Path, namespace: str, service_account: str) -> list[dict]:
    """The PolicyRules of every Role bound to `service_account` in `namespace`, from a manifest file."""
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    roles = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Role"}
    rules: list[dict] = []
    for binding in (d for d in documents if d["kind"] == "RoleBinding"):
        bound = any(
            s.get("kind") == "ServiceAccount"
            and s.get("name") == service_account
            and s.get("namespace", namespace) == namespace
            for s in binding.get("subjects", [])
        )
        role = roles.get(binding["roleRef"]["name"]) if binding["roleRef"]["kind"] == "Role" else None
        if bound and role:
            rules += copy.deepcopy(role.get("rules", []))
    return rules


def allowed(rules: list[dict], verb: str, group: str, resource: str, name: str | None) -> bool:
    for rule in rules:
        if not ({group, "*"} & set(rule.get("apiGroups", []))):
            continue
        if not ({resource, "*"} & set(rule.get("resources", []))):
            continue
        if not ({verb, "*"} & set(rule.get("verbs", []))):
            continue
        names = rule.get("resourceNames")
        if names and name not in names:
            continue
        return True
    return False


# -- JSON merge patch (RFC 7386) ------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# -- the controller stand-in ------------------------------------------------------------------------------


@dataclass
class Revision:
    name: str
    template: dict
    ready: bool = False


@dataclass
class Serving:
    """What KServe's controller keeps per InferenceService (Knative Service or Deployment underneath)."""

    mode: str
    revisions: list[Revision] = field(default_factory=list)
    rolled_out: str = ""  # latestRolledoutRevision
    previous: str = ""  # previousRolledoutRevision
    ksvc_generation: int = 0
    traffic: list[dict] = field(default_factory=list)
    pending: bool = False
    lag: int = 0  # reads until the controller notices a spec change
    failed: set[str] = field(default_factory=set)  # revisions whose pods crash-loop
    refused: str = ""  # KServe's message while Knative's webhook refuses the Knative Service


class KubeAPIDouble:
    """One namespace's API server, as the pipeline's service account sees it."""

    def __init__(
        self,
        namespace: str = "ml",
        *,
        rbac: Path | str | list[dict] = RBAC_MANIFEST,
        service_account: str = "churnflow-pipeline",
        default_mode: str = "Serverless",
        replicas: int = 2,
        knative_version: str | None = knative_webhook.KNATIVE_OF_KUBEFLOW["1.9"],
        kserve_version: tuple[int, int] = (0, 21),
        istio: bool = True,
        authorization_policies: list[dict] | None = None,
    ) -> None:
        self.namespace = namespace
        # Istio in a Kubeflow profile (istio=False: no mesh): the mesh-wide allow-nothing, the profile's
        # own policy, and ours (None: the AuthorizationPolicies manifests/ creates in this namespace).
        ours = manifest_policies(namespace) if authorization_policies is None else authorization_policies
        self.authorization_policies = (
            [global_deny_all(), profile_owner_policy(namespace), *copy.deepcopy(ours)] if istio else []
        )
        self.istio = istio
        self.activator_in_path = False  # Serverless: requests reach the pods through Knative's activator
        self.caller = f"cluster.local/ns/{namespace}/sa/{service_account}"  # the token's pod, over mTLS
        self.mesh_denied: list[tuple[str | None, str, str]] = []  # (principal, method, path) answered 403
        self.rules = rbac if isinstance(rbac, list) else load_rules(Path(rbac), namespace, service_account)
        self.user = f"system:serviceaccount:{namespace}:{service_account}"
        self.token = "pipeline-sa-token"
        self.default_mode = default_mode
        self.replicas = replicas
        self.knative_version = knative_version  # None: no Knative webhook in front of the Knative Service
        self.kserve_version = kserve_version  # before 0.17 a refusal is only an event
        self.events: list[dict] = []  # Warning events on InferenceServices (not served: the Role cannot list them)
        self.routing: dict[tuple[str, str], list[dict[str, int]]] = {}  # who answered after each reconcile
        self.isvc_schema = isvc_schema()
        self.objects: dict[tuple[str, str, str], dict] = {}  # (kind, namespace, name) → object
        self.serving: dict[tuple[str, str], Serving] = {}
        self.crashing: set[str] = set()  # storage URIs whose pods crash-loop
        self.models: dict[str, str] = {}  # storage URI → the model_version its model reports
        self.before_write: list[Any] = []  # callables(method, kind, key), run once each before a write
        self.requests: list[tuple[str, str, Any]] = []
        self.seen: dict[tuple[str, str], dict] = {}  # the InferenceService as the client last read it
        self.denied: list[tuple[str, str, str]] = []  # (verb, group/resource, namespace) answered 403
        self._versions = itertools.count(1000)
        self.lock = threading.RLock()
        self.server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
        self.server.no_handler_status_code = 404
        self.server.expect_request(re.compile(r"^/.*$")).respond_with_handler(self._dispatch)
        self.server.start()
        self.url = f"http://127.0.0.1:{self.server.port}"

    def close(self) -> None:
        self.server.clear()
        self.server.stop()

    # -- clients --------------------------------------------------------------------------------

    def configuration(self, token: str | None = None) -> Any:
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.url
        configuration.api_key = {"authorization": f"Bearer {token or self.token}"}
        return configuration

    def client(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(client.ApiClient(self.configuration()))

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "test",
                    "clusters": [{"name": "test", "cluster": {"server": self.url}}],
                    "contexts": [{"name": "test", "context": {"cluster": "test", "user": "sa"}}],
                    "users": [{"name": "sa", "user": {"token": self.token}}],
                }
            )
        )
        return path

    def isvc(self, name: str = "churn") -> dict:
        return self.objects[("InferenceService", self.namespace, name)]

    def put_object(self, kind: str, obj: dict) -> None:
        """Seeds an object as a cluster admin would (no RBAC), e.g. KServe's config map."""
        with self.lock:
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = str(next(self._versions))
            self.objects[(kind, obj["metadata"].get("namespace", self.namespace), obj["metadata"]["name"])] = obj

    def write_as_other_client(self, name: str, patch: dict) -> None:
        """Another client's merge patch (e.g. a second rollout), applied between our read and our write."""
        with self.lock:
            key = ("InferenceService", self.namespace, name)
            current = self.objects[key]
            updated = merge_patch(current, patch)
            if updated.get("spec") != current.get("spec"):
                updated["metadata"]["generation"] = current["metadata"]["generation"] + 1
                self.serving[(self.namespace, name)].pending = True
                self.serving[(self.namespace, name)].lag = 1
            updated["metadata"]["resourceVersion"] = str(next(self._versions))
            self.objects[key] = updated

    # -- HTTP -----------------------------------------------------------------------------------

    @staticmethod
    def _status(code: int, reason: str, message: str, details: dict | None = None) -> Response:
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
        if details:
            body["details"] = details
        return Response(json.dumps(body), status=code, content_type="application/json")

    @staticmethod
    def _json(code: int, body: Any) -> Response:
        return Response(json.dumps(body), status=code, content_type="application/json")

    def _dispatch(self, request: Request) -> Response:
        body = request.get_data(as_text=True)
        with self.lock:
            self.requests.append((request.method, request.full_path.rstrip("?"), json.loads(body) if body else None))
            if match := SERVING.match(request.path) or PODS.match(request.path):
                return self._serve(request, through_address=request.path.startswith("/_serving/"), **match.groupdict())
            if request.headers.get("Authorization") != f"Bearer {self.token}":
                return self._status(401, "Unauthorized", "Unauthorized")
            match = GROUPED.match(request.path) or CORE.match(request.path)
            if not match:
                return self._status(404, "NotFound", f"the server could not find the resource ({request.path})")
            parts = match.groupdict()
            group, resource, namespace = parts.get("group") or "", parts["resource"], parts["ns"]
            name, sub = parts["name"], parts["sub"]
            verb = {
                "GET": "get" if name else ("watch" if request.args.get("watch") else "list"),
                "POST": "create",
                "PUT": "update",
                "PATCH": "patch",
                "DELETE": "delete" if name else "deletecollection",
            }.get(request.method, request.method.lower())
            full = f"{resource}/{sub}" if sub else resource
            if namespace != self.namespace or not allowed(self.rules, verb, group, full, name):
                self.denied.append((verb, f"{group}/{full}" if group else full, namespace))
                kind = f"{resource}.{group}" if group else resource
                return self._status(
                    403,
                    "Forbidden",
                    f'{kind} "{name or ""}" is forbidden: User "{self.user}" cannot {verb} resource "{full}" '
                    f'in API group "{group}" in the namespace "{namespace}"',
                )
            kind = KINDS.get((group, resource))
            if kind is None or sub:
                return self._status(404, "NotFound", f"the server could not find the requested resource ({full})")
            try:
                payload = json.loads(body) if body else None
            except ValueError as error:
                return self._status(400, "BadRequest", f"invalid JSON: {error}")
            if verb == "get":
                return self._get(kind, group, resource, namespace, name)
            if verb == "list":
                items = [o for (k, ns, _), o in self.objects.items() if k == kind and ns == namespace]
                return self._json(200, {"kind": f"{kind}List", "items": items, "metadata": {}})
            if kind != "InferenceService":  # the controller owns Deployments; config maps are read-only here
                return self._status(405, "MethodNotAllowed", f"{verb} {resource} is not served by this double")
            if verb == "create":
                return self._create(namespace, payload, request.args.get("fieldValidation"))
            if verb in ("patch", "update"):
                content_type = request.headers.get("Content-Type", "").split(";")[0]
                if verb == "patch" and content_type != "application/merge-patch+json":
                    return self._status(
                        415, "UnsupportedMediaType", f"the double accepts merge patches only, got {content_type!r}"
                    )
                return self._update(namespace, name, payload, verb, request.args.get("fieldValidation"))
            return self._status(405, "MethodNotAllowed", f"{verb} is not served by this double")

    def _get(self, kind: str, group: str, resource: str, namespace: str, name: str) -> Response:
        # The controller takes one step per read (the first read after a spec change sees none: it lags).
        isvc_name = name.removesuffix("-predictor") if kind == "Deployment" else name
        if kind in ("InferenceService", "Deployment"):
            self._reconcile(namespace, isvc_name)
        obj = copy.deepcopy(self.objects.get((kind, namespace, name)))
        if obj is None:
            what = f"{resource}.{group}" if group else resource
            return self._status(404, "NotFound", f'{what} "{name}" not found', {"name": name, "kind": resource})
        if kind == "InferenceService":
            self.seen[(namespace, name)] = obj
        obj.pop("_previous", None)
        return self._json(200, obj)

    def _validate(self, obj: dict, field_validation: str | None) -> list[str]:
        errors = metadata_errors(obj.get("metadata") or {}, "InferenceService")
        unknown: list[str] = []
        body = {k: v for k, v in obj.items() if k not in ("metadata", "status")}
        schema = {**self.isvc_schema, "properties": {**self.isvc_schema["properties"]}}
        schema["properties"].pop("metadata")
        schema["properties"].pop("status")
        errors += schema_errors(body, schema, "", unknown)
        obj.update(body)  # pruned of unknown fields
        predictor = (obj.get("spec") or {}).get("predictor") or {}
        errors += label_errors(predictor.get("labels"), ".spec.predictor.labels")
        if field_validation == "Strict" and unknown:
            errors += [f'unknown field "{path.lstrip(".")}"' for path in unknown]
        return [e.lstrip(".") for e in errors]

    def _invalid(self, name: str, errors: list[str]) -> Response:
        return self._status(
            422,
            "Invalid",
            f'InferenceService.serving.kserve.io "{name}" is invalid: ' + ", ".join(errors),
            {"name": name, "group": "serving.kserve.io", "kind": "InferenceService"},
        )

    def _run_hooks(self, method: str, key: tuple[str, str, str]) -> None:
        hooks, self.before_write = self.before_write, []
        for hook in hooks:
            hook(method, key)

    def _create(self, namespace: str, obj: Any, field_validation: str | None) -> Response:
        if not isinstance(obj, dict):
            return self._status(400, "BadRequest", "body: expected an object")
        obj = copy.deepcopy(obj)
        metadata = obj.setdefault("metadata", {})
        name = metadata.get("name", "")
        if metadata.get("namespace", namespace) != namespace:
            return self._status(400, "BadRequest", "the namespace of the object does not match the request")
        if obj.get("apiVersion") != "serving.kserve.io/v1beta1" or obj.get("kind") != "InferenceService":
            return self._status(400, "BadRequest", "apiVersion/kind: expected a serving.kserve.io/v1beta1 ISVC")
        if errors := self._validate(obj, field_validation):
            return self._invalid(name, errors)
        key = ("InferenceService", namespace, name)
        self._run_hooks("POST", key)
        if key in self.objects:
            return self._status(409, "AlreadyExists", f'inferenceservices.serving.kserve.io "{name}" already exists')
        metadata.update(namespace=namespace, generation=1, resourceVersion=str(next(self._versions)))
        metadata.setdefault("uid", f"uid-{name}-{metadata['resourceVersion']}")
        obj.pop("status", None)
        self.objects[key] = obj
        annotations = metadata.get("annotations") or {}
        self.serving[(namespace, name)] = Serving(mode=annotations.get(MODE_ANNOTATION, self.default_mode))
        self.serving[(namespace, name)].pending = True
        return self._json(201, obj)

    def _update(self, namespace: str, name: str, payload: Any, verb: str, field_validation: str | None) -> Response:
        key = ("InferenceService", namespace, name)
        self._run_hooks(verb.upper(), key)
        current = self.objects.get(key)
        if current is None:
            return self._status(404, "NotFound", f'inferenceservices.serving.kserve.io "{name}" not found')
        if not isinstance(payload, dict):
            return self._status(400, "BadRequest", "body: expected an object")
        sent_version = (payload.get("metadata") or {}).get("resourceVersion")
        if sent_version is not None and sent_version != current["metadata"]["resourceVersion"]:
            return self._status(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on inferenceservices.serving.kserve.io "{name}": the object has been '
                "modified; please apply your changes to the latest version and try again",
            )
        updated = merge_patch(current, payload) if verb == "patch" else copy.deepcopy(payload)
        metadata = updated.setdefault("metadata", {})
        if metadata.get("name") != name or metadata.get("namespace", namespace) != namespace:
            return self._status(400, "BadRequest", "metadata.name/namespace: does not match the request")
        for immutable in ("uid", "generation", "creationTimestamp"):
            if immutable in current["metadata"]:
                metadata[immutable] = current["metadata"][immutable]
        updated["status"] = current.get("status")  # the status subresource: not writable here
        if errors := self._validate(updated, field_validation):
            return self._invalid(name, errors)
        if updated.get("spec") != current.get("spec"):
            metadata["generation"] = current["metadata"].get("generation", 1) + 1
            self.serving[(namespace, name)].pending = True
            self.serving[(namespace, name)].lag = 1
        if updated == current:
            return self._json(200, current)
        metadata["resourceVersion"] = str(next(self._versions))
        self.objects[key] = updated
        return self._json(200, updated)

    # -- controller -----------------------------------------------------------------------------

    def _write_status(self, key: tuple[str, str, str], status: dict) -> None:
        obj = self.objects[key]
        if obj.get("status") != status:
            obj["status"] = status
            obj["metadata"]["resourceVersion"] = str(next(self._versions))

    @staticmethod
    def _template(isvc: dict) -> dict:
        predictor = copy.deepcopy(isvc["spec"]["predictor"])
        predictor.pop("canaryTrafficPercent", None)
        return predictor

    @staticmethod
    def storage_uri(template: dict) -> str:
        for container in template.get("containers") or []:
            for env in container.get("env") or []:
                if env.get("name") == "STORAGE_URI":
                    return env.get("value", "")
        return (template.get("model") or {}).get("storageUri", "")

    def version_of(self, template: dict) -> str:
        uri = self.storage_uri(template)
        return self.models.get(uri) or (template.get("labels") or {}).get(VERSION_LABEL, "")

    def _reconcile(self, namespace: str, name: str) -> None:
        key = ("InferenceService", namespace, name)
        isvc = self.objects.get(key)
        serving = self.serving.get((namespace, name))
        if isvc is None or serving is None:
            return
        if serving.lag:
            serving.lag -= 1
            return
        if serving.mode == "RawDeployment":
            self._reconcile_raw(key, isvc, serving)
        else:
            self._reconcile_serverless(key, isvc, serving)

    def _address(self, namespace: str, name: str) -> dict:
        return {
            "url": f"http://{name}.{namespace}.example.com",
            "address": {"url": f"{self.url}/_serving/{namespace}/{name}"},
        }

    @staticmethod
    def _kserve_traffic(canary: int | None, rolled_out: str, tags: bool) -> list[dict]:
        """The Knative Service's traffic KServe writes (kserve pkg/controller/v1beta1/inferenceservice/
        reconcilers/knative/ksvc_reconciler.go createKnativeService, v0.14-v0.20): with canaryTrafficPercent
        and a rolled-out revision, the latest revision gets the canary's share and the rolled-out one the rest
        (0 pins everything to the rolled-out one); otherwise one target, latestRevision, 100 %. The latest
        target is tagged only with the `serving.kserve.io/enable-tag-routing: "true"` annotation."""
        latest_tag = {"tag": "latest"} if tags else {}
        if canary is not None and rolled_out:
            targets = [{"latestRevision": True, "percent": canary, **latest_tag}]
            if canary < 100:
                targets.append(
                    {"revisionName": rolled_out, "latestRevision": False, "percent": 100 - canary, "tag": "prev"}
                )
            return targets
        return [{"latestRevision": True, "percent": 100, **latest_tag}]

    @staticmethod
    def _route(targets: list[dict], latest_ready: str | None) -> list[dict] | None:
        """Knative's route: a latestRevision target goes to the configuration's latest READY revision
        (knative serving pkg/reconciler/route/traffic/traffic.go, latestRevision resolves to
        LatestReadyRevisionName), not to the latest created one. None: nothing ready, the route keeps what
        it had."""
        if latest_ready is None:
            return None
        routed = []
        for target in targets:
            entry = {"revisionName": target.get("revisionName") or latest_ready, **target}
            entry = {k: entry[k] for k in ("revisionName", "percent", "latestRevision", "tag") if k in entry}
            routed.append(entry)
        return routed

    @staticmethod
    def _propagate_rollout(serving: Serving, latest_created: str, latest_ready: str | None) -> None:
        """KServe's bookkeeping of latest/previous rolled-out revisions (kserve pkg/apis/serving/v1beta1/
        inference_service_status.go PropagateStatus, v0.14-v0.20)."""
        shares: dict[str, int] = {}
        for target in serving.traffic:
            shares[target["revisionName"]] = shares.get(target["revisionName"], 0) + target["percent"]
        for target in serving.traffic:
            if target["revisionName"] != latest_ready or not target.get("latestRevision"):
                continue
            if serving.rolled_out != latest_ready:
                if target["percent"] == 100:
                    serving.previous, serving.rolled_out = serving.rolled_out, latest_ready
            elif (
                latest_ready == latest_created
                and target["percent"] < 100
                and shares.get(target["revisionName"]) == 100  # a split that lands on one revision
                and serving.previous
            ):
                serving.rolled_out = serving.previous

    def _reconcile_serverless(self, key: tuple[str, str, str], isvc: dict, serving: Serving) -> None:
        template = self._template(isvc)
        canary = isvc["spec"]["predictor"].get("canaryTrafficPercent")
        latest = serving.revisions[-1] if serving.revisions else None
        if latest is not None and latest.template == template:
            serving.refused = ""  # KServe's Knative Service already matches: nothing to refuse
        if latest is None or latest.template != template:
            # step 1: KServe writes the Knative Service; Knative's webhook admits it (a new revision) or not
            refused = self.knative_version and knative_webhook.refusal(template, self.knative_version)
            if refused:
                serving.refused = f"fails to reconcile predictor: {refused}"
                self._write_refusal(key, serving)
                return
            serving.refused = ""
            serving.revisions.append(Revision(f"{key[2]}-predictor-{len(serving.revisions) + 1:05d}", template))
            serving.ksvc_generation += 1
        elif not latest.ready and latest.name not in serving.failed:
            # step 2: the revision becomes ready (or crash-loops)
            latest.ready = self.storage_uri(template) not in self.crashing
            if not latest.ready:
                serving.failed.add(latest.name)
        # every step: the route follows the Knative Service's traffic and the latest ready revision
        ready = [r for r in serving.revisions if r.ready]
        latest_ready = ready[-1].name if ready else None
        tags = (isvc["metadata"].get("annotations") or {}).get("serving.kserve.io/enable-tag-routing") == "true"
        routed = self._route(self._kserve_traffic(canary, serving.rolled_out, tags), latest_ready)
        if routed is not None and routed != serving.traffic:
            serving.traffic = routed
            serving.ksvc_generation += 1
        self._propagate_rollout(serving, serving.revisions[-1].name, latest_ready)
        serving.pending = False
        self.routing.setdefault((key[1], key[2]), []).append(self.answering(key[1], key[2]))
        latest = serving.revisions[-1]
        failed = latest.name in serving.failed
        predictor: dict[str, Any] = {
            "latestCreatedRevision": latest.name,
            "url": f"http://{key[2]}-predictor.{key[1]}.example.com",
        }
        if latest_ready:
            predictor["latestReadyRevision"] = latest_ready
        if serving.rolled_out:
            predictor["latestRolledoutRevision"] = serving.rolled_out
        if serving.previous:
            predictor["previousRolledoutRevision"] = serving.previous
        if serving.traffic:
            predictor["traffic"] = copy.deepcopy(serving.traffic)
        if failed:
            condition = {
                "type": "Ready",
                "status": "False",
                "reason": "RevisionFailed",
                "message": f'Revision "{latest.name}" failed with message: Back-off restarting '
                "failed container kserve-container (CrashLoopBackOff).",
            }
        elif not latest.ready or not ready:
            condition = {"type": "Ready", "status": "Unknown", "reason": "RevisionMissing"}
        else:
            condition = {"type": "Ready", "status": "True"}
        status = {
            "observedGeneration": serving.ksvc_generation,
            "deploymentMode": "Serverless",
            "components": {"predictor": predictor},
            "conditions": [condition],
        }
        if ready:
            status.update(self._address(key[1], key[2]))
        self._write_status(key, status)

    def _write_refusal(self, key: tuple[str, str, str], serving: Serving) -> None:
        """KServe's status when Knative refuses the Knative Service (kserve v0.17+ components/predictor.go:
        PropagateRawStatusWithMessages(PredictorComponent, "ReconcileFailed", err, False); Ready follows its
        dependent). The components keep what they had: the old revisions go on serving. KServe 0.13-0.16
        (Kubeflow 1.9/1.10's own) only record a Warning event "InternalError" with the same text."""
        if self.kserve_version < (0, 17):  # controller.go: Recorder.Eventf(isvc, Warning, "InternalError", err)
            event = {"involvedObject": {"kind": "InferenceService", "name": key[2]}, "reason": "InternalError"}
            self.events.append({**event, "type": "Warning", "message": serving.refused})
            return
        status = copy.deepcopy(self.objects[key].get("status") or {})
        status.setdefault("deploymentMode", "Serverless")
        status.setdefault("components", {"predictor": {}})
        failed = {"status": "False", "reason": "ReconcileFailed", "message": serving.refused}
        others = [c for c in status.get("conditions") or [] if c.get("type") not in ("Ready", "PredictorReady")]
        status["conditions"] = [*others, {"type": "PredictorReady", **failed}, {"type": "Ready", **failed}]
        self._write_status(key, status)

    def answering(self, namespace: str, name: str) -> dict[str, int]:
        """Which model versions receive traffic right now, and their share (Serverless: the route's)."""
        serving = self.serving.get((namespace, name))
        shares: dict[str, int] = {}
        for target in serving.traffic if serving else []:
            if target["percent"]:
                revision = next(r for r in serving.revisions if r.name == target["revisionName"])
                version = self.version_of(revision.template)
                shares[version] = shares.get(version, 0) + target["percent"]
        return shares

    def _reconcile_raw(self, key: tuple[str, str, str], isvc: dict, serving: Serving) -> None:
        namespace, name = key[1], key[2]
        template = self._template(isvc)
        dkey = ("Deployment", namespace, f"{name}-predictor")
        deployment = self.objects.get(dkey)
        replicas = self.replicas
        if deployment is None:
            deployment = {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": dkey[2], "namespace": namespace, "generation": 0},
                "spec": {"replicas": replicas, "template": {}},
                "status": {},
            }
            self.objects[dkey] = deployment
        spec_template = {"metadata": {"labels": dict(template.get("labels") or {})}, "spec": template}
        status = deployment["status"]
        old_template = deployment["spec"]["template"]
        if old_template != spec_template:  # step 1: the controller updates the Deployment
            deployment["spec"]["template"] = spec_template
            deployment["metadata"]["generation"] += 1
            deployment["metadata"]["resourceVersion"] = str(next(self._versions))
            deployment["_previous"] = old_template
        elif status.get("observedGeneration") != deployment["metadata"]["generation"]:  # step 2: new pods start
            had_old = bool(deployment.get("_previous"))
            deployment["status"] = {
                "observedGeneration": deployment["metadata"]["generation"],
                "replicas": replicas * 2 if had_old else replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas if had_old else 0,
                "availableReplicas": replicas if had_old else 0,
                "unavailableReplicas": replicas,
            }
        elif status.get("unavailableReplicas") and self.storage_uri(template) not in self.crashing:
            # step 3: the new pods become available and the old ones go (crash-looping ones never do)
            deployment["status"] = {
                "observedGeneration": deployment["metadata"]["generation"],
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
            }
            deployment.pop("_previous", None)
        available = bool(deployment["status"].get("availableReplicas"))
        # RawDeployment: Ready as soon as the Deployment has available pods, old or new
        condition = (
            {"type": "Ready", "status": "True"}
            if available
            else {"type": "Ready", "status": "False", "reason": "MinimumReplicasUnavailable"}
        )
        isvc_status: dict[str, Any] = {
            "observedGeneration": deployment["status"].get("observedGeneration", 0),
            "deploymentMode": "RawDeployment",
            "components": {"predictor": {"url": f"http://{name}-predictor.{namespace}.example.com"}},
            "conditions": [condition],
        }
        if available:
            isvc_status.update(self._address(namespace, name))
        self._write_status(key, isvc_status)

    def served_version(self, namespace: str, name: str) -> str | None:
        """The model_version answering most of this InferenceService's traffic."""
        serving = self.serving.get((namespace, name))
        if serving is None:
            return None
        if serving.mode == "RawDeployment":
            deployment = self.objects.get(("Deployment", namespace, f"{name}-predictor"))
            if not deployment or not deployment["status"].get("availableReplicas"):
                return None
            status = deployment["status"]
            template = deployment.get("_previous") if status.get("unavailableReplicas") else None
            return self.version_of((template or deployment["spec"]["template"])["spec"])
        if not serving.traffic:
            return None
        top = max(serving.traffic, key=lambda t: t["percent"])
        revision = next(r for r in serving.revisions if r.name == top["revisionName"])
        return self.version_of(revision.template)

    def pod_labels(self, namespace: str, name: str) -> dict[str, str]:
        """The labels of the predictor pods serving most of the traffic, as KServe and Knative write them:
        the predictor's own labels plus serving.kserve.io/inferenceservice and component (both modes);
        Serverless adds serving.knative.dev/service; RawDeployment overwrites `app` with
        isvc.<name>-predictor (kserve reconcilers/deployment/deployment_reconciler.go, createRawDeployment)."""
        serving = self.serving[(namespace, name)]
        if serving.mode == "RawDeployment":
            deployment = self.objects[("Deployment", namespace, f"{name}-predictor")]
            status = deployment["status"]
            template = deployment.get("_previous") if status.get("unavailableReplicas") else None
            labels = dict(((template or deployment["spec"]["template"])["spec"].get("labels")) or {})
            labels["app"] = f"isvc.{name}-predictor"
        else:
            top = max(serving.traffic, key=lambda t: t["percent"])
            revision = next(r for r in serving.revisions if r.name == top["revisionName"])
            labels = dict(revision.template.get("labels") or {})
            labels["serving.knative.dev/service"] = f"{name}-predictor"
            labels["serving.knative.dev/revision"] = revision.name
        labels.update({"serving.kserve.io/inferenceservice": name, "component": "predictor"})
        return labels

    def _serve(self, request: Request, ns: str, name: str, path: str, through_address: bool) -> Response:
        """A request to the predictor: through the InferenceService's address (`/_serving/...`) or to a
        pod directly (`/_pods/...`, as Prometheus scrapes). No ready pod: 503 from the gateway, before any
        sidecar; then the pod's sidecar applies Istio's policies to the peer it sees: in Serverless mode
        through the address that is Knative's local gateway or activator, never the caller."""
        version = self.served_version(ns, name)
        if version is None:
            return self._json(503, {"error": "no ready pods"})
        caller = request.headers.get(SOURCE_HEADER, self.caller) or None
        if through_address and self.serving[(ns, name)].mode != "RawDeployment":
            caller = ACTIVATOR_PRINCIPAL if self.activator_in_path else LOCAL_GATEWAY_PRINCIPAL
        if self.istio:
            headers = {k.lower(): v for k, v in request.headers.items() if k != SOURCE_HEADER}
            seen = MeshRequest(request.method, path, caller, headers)
            if not istio_allows(self.authorization_policies, ns, self.pod_labels(ns, name), seen):
                self.mesh_denied.append((caller, request.method, path))
                return Response("RBAC: access denied", status=403, content_type="text/plain")
        if path == "/metrics" and request.method == "GET":
            return Response(f'churnflow_model_info{{model_version="{version}"}} 1\n', content_type="text/plain")
        match = MODEL_METADATA.match(path)
        if match and request.method == "GET":
            model = match.group("model")
            return self._json(200, {"name": model, "versions": [version], "platform": "", "inputs": [], "outputs": []})
        return self._json(404, {"error": f"{request.method} {path}: not served"})
