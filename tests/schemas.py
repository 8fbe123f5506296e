"""Where the schemas our Kubernetes objects are checked against come from, and the checks themselves.

Two kinds of source, so a fresh clone can run the tests without anything put beside it by hand:

- CRD files that only their projects publish (KServe's InferenceService CRD). `locate()` looks in
  ../shared/<dir>/ first (CI lays it beside the checkout), then in the user's cache
  (`${XDG_CACHE_HOME:-~/.cache}/churnflow/schemas/`), and only then downloads the file from the URL
  recorded below, refuses it unless its SHA-256 is the one recorded below, and caches it. The file itself
  is never part of the repository. `CHURNFLOW_SCHEMA_URL_BASE` replaces the URL's scheme and host (the
  tests point it at a local server).
- Models that PyPI packages carry (cloudcoil-models-istio, cloudcoil-models-prometheus-operator): no
  download at all; their pydantic models are turned into JSON Schema.
- Kubeflow's PodDefault: no package carries it and its CRD would be a download, so its schema is built
  here from the field list of Kubeflow's Go type, every nested Kubernetes type referring to the strict
  definitions that the pinned kubernetes-validate wheel ships (no download either).

Every check treats unknown fields as errors: kubernetes-validate passes unknown kinds silently, and an
API server with `fieldValidation=Strict` refuses unknown fields, so a typo must fail here.

Modules that need a CRD file say so at import with `need(SOURCE)`; tests/conftest.py fetches every needed
file once collection is done, and stops the run with one line if one cannot be had: never a skip, never
one error per test.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate.utils
import referencing
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
URL_BASE_VARIABLE = "CHURNFLOW_SCHEMA_URL_BASE"
DOWNLOAD_TIMEOUT_SECONDS = 60.0


class SchemaUnavailable(Exception):
    """A needed schema file could be neither found nor downloaded and verified; the message is one line."""


@dataclass(frozen=True)
class CrdSource:
    """One published CRD file: where CI keeps a copy, where it is published, and the digest we accept."""

    what: str  # names the file in messages
    shared_dir: str  # ../shared/<shared_dir>/<file_name>
    file_name: str
    base: str  # scheme and host, replaced by $CHURNFLOW_SCHEMA_URL_BASE in tests
    path: str  # the rest of the URL
    sha256: str

    def url(self, base: str | None = None) -> str:
        chosen = base or os.environ.get(URL_BASE_VARIABLE) or self.base
        return chosen.rstrip("/") + self.path


# KServe's InferenceService CRD. The pinned kserve is 0.21.0, but the copy of KServe's repository that
# could be read when this was recorded ends at master of 2026-08-21 (its SDK still said 0.20.0; no
# v0.21.0 tag), so the digest of the v0.21.0 file could not be computed here. Recorded instead: the exact
# file CI keeps in ../shared/kserve/ (byte-identical to charts/kserve-crd/templates/ at that master
# commit, which raw.githubusercontent.com serves as stored). Switch both lines to
# /kserve/kserve/v0.21.0/config/crd/full/serving.kserve.io_inferenceservices.yaml once its digest is
# checked where GitHub is reachable (`curl -sL URL | sha256sum`); see docs/schemas.md.
KSERVE_INFERENCESERVICE_CRD = CrdSource(
    what="KServe's InferenceService CRD",
    shared_dir="kserve",
    file_name="inferenceservices-crd.yaml",
    base="https://raw.githubusercontent.com",
    path="/kserve/kserve/aaac4e294dae2c7b1aa1886447793f3aa1c30912/charts/kserve-crd/templates/"
    "serving.kserve.io_inferenceservices.yaml",
    sha256="5c71522019957f5dbde3b0f7e7270a1ede701c44687833275f4384964a75d896",
)

SOURCES = (KSERVE_INFERENCESERVICE_CRD,)
_needed: dict[str, CrdSource] = {}


def need(source: CrdSource) -> CrdSource:
    """Declares at import that the importing module's tests need `source`; conftest fetches it up front."""
    _needed[source.file_name] = source
    return source


def needed() -> list[CrdSource]:
    return list(_needed.values())


def cache_dir() -> Path:
    """The user's cache, outside the repository, so a fresh clone (or a `git clean`) keeps it."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "churnflow" / "schemas"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _where_to_put(source: CrdSource, shared: Path, base: str | None) -> str:
    return (
        f"put {source.file_name} at {shared / source.shared_dir}/ (it is {source.url(base)}, SHA-256 {source.sha256})"
    )


def locate(
    source: CrdSource, *, shared: Path | None = None, cache: Path | None = None, base: str | None = None
) -> Path:
    """The path of a verified copy of `source`: ../shared first, then the cache, then a download.

    A download is cached only when its SHA-256 is the recorded one; a cached file whose digest no longer
    matches (truncated, edited) is replaced. The shared copy is CI's own material and is used as it is.
    Raises SchemaUnavailable with one line naming the file, where to put it and where it comes from.
    """
    shared = SHARED if shared is None else shared
    cache = cache_dir() if cache is None else cache
    beside = shared / source.shared_dir / source.file_name
    if beside.is_file():
        return beside
    cached = cache / source.sha256[:16] / source.file_name
    if cached.is_file() and _digest(cached) == source.sha256:
        return cached
    url = source.url(base)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response:  # noqa: S310 - our URL
            body = response.read()
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise SchemaUnavailable(
            f"{source.what} is missing and could not be downloaded ({reason}): {_where_to_put(source, shared, base)}"
        ) from None
    got = hashlib.sha256(body).hexdigest()
    if got != source.sha256:
        raise SchemaUnavailable(
            f"{source.what} downloaded from {url} has SHA-256 {got}, not the recorded {source.sha256}; "
            f"refused, nothing cached: {_where_to_put(source, shared, base)}"
        )
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=cached.parent, prefix=".part-", delete=False) as part:
        part.write(body)
    os.replace(part.name, cached)  # atomic: a concurrent or interrupted run never sees half a file
    return cached


def ensure(sources: Iterable[CrdSource]) -> list[Path]:
    """Locates every source (what conftest runs before the first test)."""
    return [locate(source) for source in sources]


# -- CRD schemas as strict JSON Schema ---------------------------------------------------------------


def strict_crd_schema(node: Any) -> Any:
    """A CRD's OpenAPI v3 schema as JSON Schema in which unknown fields are errors.

    Kubernetes' extensions become their JSON Schema meaning (int-or-string → either type; preserved
    unknown fields stay open); every other object with declared properties is closed, as the API
    server's strict field validation does.
    """
    if isinstance(node, list):
        return [strict_crd_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: strict_crd_schema(v) for k, v in node.items()}
    if node.pop("x-kubernetes-int-or-string", False):
        node.pop("type", None)
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    preserve = node.pop("x-kubernetes-preserve-unknown-fields", False)
    for key in [k for k in node if k.startswith("x-kubernetes-")]:
        node.pop(key)
    node.pop("nullable", None)
    if "properties" in node and "additionalProperties" not in node and not preserve:
        node["additionalProperties"] = False
    return node


def load_crd(path: Path) -> dict[str, Any]:
    """Parses a CRD file (C loader where there is one: KServe's is about 2 MB)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return next(d for d in yaml.load_all(path.read_text(), Loader=loader) if d)  # noqa: S506 - a safe loader


def crd_version_schema(source: CrdSource, version: str) -> dict[str, Any]:
    """The openAPIV3Schema of one served version of a located CRD (a deep copy: callers may edit it)."""
    crd = _parsed_crd(locate(source))
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return copy.deepcopy(served["schema"]["openAPIV3Schema"])


@functools.cache
def _parsed_crd(path: Path) -> dict[str, Any]:
    return load_crd(path)


def crd_validator(source: CrdSource, version: str) -> jsonschema.Draft7Validator:
    """A strict validator for one version of a CRD; metadata is left to the API server, as in a CRD."""
    schema = strict_crd_schema(crd_version_schema(source, version))
    schema["properties"]["metadata"] = {"type": "object"}
    return jsonschema.Draft7Validator(schema)


# -- models from PyPI packages ------------------------------------------------------------------------


def close_objects(node: Any) -> Any:
    """A pydantic model's JSON Schema with every object that declares properties closed to others."""
    if isinstance(node, list):
        return [close_objects(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: close_objects(v) for k, v in node.items()}
    if "properties" in node and "additionalProperties" not in node:
        node["additionalProperties"] = False
    return node


def _model_class(api_version: str, kind: str) -> type:
    """The cloudcoil model of a kind (imported on use: the model modules take seconds to import)."""
    if api_version == "security.istio.io/v1":
        from cloudcoil.models.istio.security import v1 as istio_security

        return getattr(istio_security, kind)
    if api_version == "monitoring.coreos.com/v1":
        from cloudcoil.models.prometheus_operator import v1 as prometheus_operator

        return getattr(prometheus_operator, kind)
    raise KeyError(kind)


# -- Kubeflow's PodDefault, built from its Go type and Kubernetes' own definitions -------------------------

# The Kubernetes version whose definitions the nested types come from: the newest kubernetes-validate
# ships, which is also what `kubernetes-validate --strict` checks the standard kinds against by default.
KUBERNETES_VERSION = kubernetes_validate.utils.latest_version()
KUBERNETES_DEFINITIONS_ID = "https://kubernetes.io/api/_definitions.json"  # the `$id` of that file
CORE_V1 = "io.k8s.api.core.v1."
META_V1 = "io.k8s.apimachinery.pkg.apis.meta.v1."


@functools.cache
def kubernetes_definitions(version: str = KUBERNETES_VERSION) -> referencing.Resource:
    """The strict `_definitions.json` of one Kubernetes version, as kubernetes-validate's wheel carries it.

    The strict variant closes every object to unknown fields, as the API server's strict field
    validation does; it is read with the same package function the `kubernetes-validate` command uses.
    """
    contents = kubernetes_validate.utils.schema_contents(
        f"kubernetes-json-schema/v{version}-local-strict/_definitions.json", version
    )
    if contents.get("$id") != KUBERNETES_DEFINITIONS_ID:
        raise ValueError(f"kubernetes-validate's definitions moved: $id {contents.get('$id')!r}")
    return referencing.Resource.from_contents(contents)


def kubernetes_type(name: str) -> dict[str, Any]:
    """A reference to one definition, e.g. `io.k8s.api.core.v1.EnvVar`."""
    return {"$ref": f"{KUBERNETES_DEFINITIONS_ID}#/$defs/{name}"}


def _list_of(name: str) -> dict[str, Any]:
    return {"type": "array", "items": kubernetes_type(name)}


def poddefault_schema() -> dict[str, Any]:
    """PodDefault (kubeflow.org/v1alpha1) as strict JSON Schema.

    The fields of `spec` are those of `PodDefaultSpec` in kubeflow/kubeflow v1.10.0,
    components/admission-webhook/pkg/apis/settings/v1alpha1/poddefault_types.go: the webhook version
    that kubeflow/manifests v1.10.2 installs (its README's component table), and a type unchanged since
    v1.9.1. `selector` is the only field without `omitempty`, hence the only required one; Go strings,
    bools and string slices and maps are plain JSON types here. Every Kubernetes type the Go fields use
    (LabelSelector, Container, EnvVar, ...) is a reference into kubernetes-validate's definitions.
    `PodDefaultStatus` has no fields, so `status` may only be empty; `metadata` is an ObjectMeta.
    """
    strings = {"type": "array", "items": {"type": "string"}}
    string_map = {"type": "object", "additionalProperties": {"type": "string"}}
    spec = {
        "type": "object",
        "properties": {
            "selector": {**kubernetes_type(META_V1 + "LabelSelector"), "type": "object"},  # not a pointer
            "desc": {"type": "string"},
            "initContainers": _list_of(CORE_V1 + "Container"),
            "sidecars": _list_of(CORE_V1 + "Container"),
            "serviceAccountName": {"type": "string"},
            "automountServiceAccountToken": {"type": "boolean"},
            "env": _list_of(CORE_V1 + "EnvVar"),
            "envFrom": _list_of(CORE_V1 + "EnvFromSource"),
            "volumes": _list_of(CORE_V1 + "Volume"),
            "volumeMounts": _list_of(CORE_V1 + "VolumeMount"),
            "annotations": string_map,
            "labels": string_map,
            "tolerations": _list_of(CORE_V1 + "Toleration"),
            "command": strings,
            "args": strings,
            "imagePullSecrets": _list_of(CORE_V1 + "LocalObjectReference"),
        },
        "required": ["selector"],
        "additionalProperties": False,
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": kubernetes_type(META_V1 + "ObjectMeta"),
            "spec": spec,
            "status": {"type": "object", "additionalProperties": False},
        },
        "additionalProperties": False,
    }


def poddefault_validator() -> jsonschema.Draft202012Validator:
    """The PodDefault schema with Kubernetes' definitions registered under their own `$id`."""
    registry = referencing.Registry().with_resource(KUBERNETES_DEFINITIONS_ID, kubernetes_definitions())
    return jsonschema.Draft202012Validator(poddefault_schema(), registry=registry)


# -- one entry point ----------------------------------------------------------------------------------

MODEL_KINDS = {
    ("security.istio.io/v1", "AuthorizationPolicy"): "cloudcoil-models-istio",
    ("monitoring.coreos.com/v1", "PodMonitor"): "cloudcoil-models-prometheus-operator",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "cloudcoil-models-prometheus-operator",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "cloudcoil-models-prometheus-operator",
}
CRD_KINDS = {
    ("serving.kserve.io/v1beta1", "InferenceService"): KSERVE_INFERENCESERVICE_CRD,
}
BUILT_KINDS = {
    ("kubeflow.org/v1alpha1", "PodDefault"): poddefault_validator,
}


@functools.cache
def validator_for(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    """The strict validator of one apiVersion and kind, built once per run."""
    if (api_version, kind) in BUILT_KINDS:
        return BUILT_KINDS[api_version, kind]()
    if (api_version, kind) in CRD_KINDS:
        return crd_validator(CRD_KINDS[api_version, kind], api_version.rsplit("/", 1)[1])
    if (api_version, kind) in MODEL_KINDS:
        model = _model_class(api_version, kind)
        schema = close_objects(model.model_json_schema(by_alias=True, mode="validation"))
        return jsonschema.Draft202012Validator(schema)
    known = ", ".join(f"{v} {k}" for v, k in sorted([*CRD_KINDS, *MODEL_KINDS, *BUILT_KINDS]))
    raise ValueError(f"no schema for apiVersion {api_version!r} kind {kind!r}; known: {known}")


def _is_null_branch(error: jsonschema.ValidationError) -> bool:
    return error.validator == "type" and error.validator_value == "null"


def _leaves(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    """The errors that say what is wrong: for anyOf/oneOf, those of the branch that came closest.

    Optional fields are `anyOf [X, null]` in pydantic's schemas, and a union of specs (Istio's
    AuthorizationPolicy with or without `provider`) is one branch per shape; reporting every branch
    would bury the one useful line under "is not of type 'null'".
    """
    if not error.context:
        return [error]
    branches: dict[Any, list[jsonschema.ValidationError]] = defaultdict(list)
    for sub in error.context:
        branches[sub.relative_schema_path[0]].append(sub)
    real = [b for b in branches.values() if not all(_is_null_branch(e) for e in b)] or list(branches.values())
    closest = min(real, key=len)
    return [leaf for sub in closest for leaf in _leaves(sub)]


def validate_custom(document: dict[str, Any]) -> list[str]:
    """Checks a custom resource against its real schema; returns one `path: message` line per error.

    Dispatches on apiVersion and kind: KServe's CRD (located as above), Istio and Prometheus Operator
    kinds from the cloudcoil model packages, PodDefault from the schema built above. An empty list means
    valid.
    """
    api_version, kind = document.get("apiVersion"), document.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return [f"apiVersion and kind: expected two strings, got {api_version!r} and {kind!r}"]
    validator = validator_for(api_version, kind)
    found = {
        (tuple(map(str, leaf.absolute_path)), leaf.message)
        for error in validator.iter_errors(document)
        for leaf in _leaves(error)
    }
    return [f"{'/'.join(path) or '(document)'}: {message}" for path, message in sorted(found)]


def _validate_group(document: dict[str, Any], group: str) -> list[str]:
    api_version = str(document.get("apiVersion", ""))
    if not api_version.startswith(group + "/"):
        return [f"apiVersion: expected a {group} resource, got {api_version!r}"]
    return validate_custom(document)


def validate_istio(document: dict[str, Any]) -> list[str]:
    """Istio security resources (AuthorizationPolicy) against cloudcoil-models-istio."""
    return _validate_group(document, "security.istio.io")


def validate_poddefault(document: dict[str, Any]) -> list[str]:
    """A Kubeflow PodDefault against the schema built from Kubeflow's Go type (`poddefault_schema`)."""
    return _validate_group(document, "kubeflow.org")
