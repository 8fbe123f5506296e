"""Which Kubeflow Pipelines backend runs which compiled pipeline: the one table of backend features.

The KFP SDK compiles constructs that only newer backends (API server, driver, launcher) understand,
and an older backend fails a run late and obscurely (a driver that cannot unmarshal its config, a
fan-in it does not resolve). Kubeflow 1.9 ships KFP 2.2/2.3 and 1.10 ships 2.4/2.5, so churnflow
compiles for a named backend: `FEATURES` says which construct needs which backend, `features_used`
finds them in a compiled spec, `adapt` removes what can be removed without changing meaning, and
`check` refuses with one line naming the feature and the version it needs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from churnflow.core.errors import ChurnflowError

Version = tuple[int, int]


@dataclass(frozen=True)
class Feature:
    """A construct of the compiled spec and the oldest backend that runs it."""

    what: str
    needs: Version
    source: str


# Each version is the first KFP release tag whose sources hold the change (kubeflow/pipelines git
# history); none was verified against a running backend here.
FEATURES: dict[str, Feature] = {
    "collected": Feature(
        "fan-in of ParallelFor outputs (dsl.Collected)", (2, 14), "kubeflow/pipelines PR 11725, released in 2.14"
    ),
    "oneof": Feature(
        "outputs of dsl.If/dsl.Else branches joined with dsl.OneOf (a condition DAG's outputs)",
        (2, 4),
        "kubeflow/pipelines PR 11196 (the driver resolves a sub-DAG's outputs, dsl.OneOf's included), released in "
        "2.4.0; older drivers fail the consumer with 'cannot find output parameter key ... in producer task'",
    ),
    "resource_strings": Feature(
        "CPU/memory requests or limits as strings or pipeline parameters (resourceCpuLimit, ...)",
        (2, 4),
        "the API server before 2.4 parses specs with a proto without these fields (KFP PRs 11075, 11501)",
    ),
    "pod_metadata": Feature(
        "pod labels or annotations (kubernetes.add_pod_label/add_pod_annotation)",
        (2, 1),
        "KFP PR 10393, released in 2.1",
    ),
    "optional_secret_env": Feature(
        "a Secret as env marked optional (use_secret_as_env(optional=...))",
        (2, 15),
        "kubeflow/pipelines issue 12495: older drivers fail with 'unknown field optional in SecretAsEnv'",
    ),
    "secret_name_parameter": Feature(
        "a Secret name given as a parameter (secretNameParameter)",
        (2, 5),
        "kubeflow/pipelines issue 11935: older drivers fail with 'unknown field secretNameParameter'",
    ),
    "run_placeholders": Feature(
        "the run's name or id as a task input ({{$.pipeline_job_name}}, dsl.PIPELINE_JOB_NAME_PLACEHOLDER)",
        (2, 5),
        "kubeflow/pipelines PR 11599 (backend/src/v2/driver/driver.go resolves the job and task placeholders), "
        "released in 2.5.0; older drivers hand the placeholder on as literal text",
    ),
}
# The placeholders the 2.5 driver resolves when a task input is exactly one of them (driver.go,
# resolveInputParameter, a RuntimeValue constant); before 2.5 none is resolved. No driver resolves them
# in pod labels or annotations (podMetadata), so they are never written there.
RUN_PLACEHOLDERS = (
    "{{$.pipeline_job_name}}",
    "{{$.pipeline_job_resource_name}}",
    "{{$.pipeline_job_uuid}}",
    "{{$.pipeline_task_name}}",
    "{{$.pipeline_task_uuid}}",
)
# Oldest backend that runs KFP v2 pipeline specs at all (KFP 1.x runs Argo workflows, not this IR).
OLDEST: Version = (2, 0)
# The backend today's DAG is written for: the newest feature's version (`churnflow compile` default).
NEWEST: Version = max(feature.needs for feature in FEATURES.values())


def parse_version(text: str) -> Version:
    """'2.4', '2.4.1', 'v2.5.0' or '2.14.0-rc.1' → (major, minor); a ChurnflowError for anything else."""
    match = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.\d+)?(?:[-+][0-9A-Za-z.-]*)?", text.strip())
    if not match:
        raise ChurnflowError(f"--kfp-backend: expected a KFP backend version such as 2.4 or 2.14.0, got {text!r}")
    return int(match.group(1)), int(match.group(2))


def show(version: Version) -> str:
    return f"{version[0]}.{version[1]}"


def _platform_executors(documents: list[dict[str, Any]]) -> dict[str, Any]:
    if len(documents) < 2 or not documents[1]:
        return {}
    platforms = documents[1].get("platforms", {})
    return platforms.get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {}) or {}


# New string field → (the numeric field older backends read, the kind of quantity)
_RESOURCE_FIELDS = {
    "resourceCpuLimit": ("cpuLimit", "cpu"),
    "resourceCpuRequest": ("cpuRequest", "cpu"),
    "resourceMemoryLimit": ("memoryLimit", "memory"),
    "resourceMemoryRequest": ("memoryRequest", "memory"),
}
_CHANNEL = re.compile(r"^\{\{\$\.inputs\.parameters\['pipelinechannel--([^']+)'\]\}\}$")


def _resources(spec: dict[str, Any]) -> Iterable[tuple[str, dict[str, Any]]]:
    for name, executor in spec.get("deploymentSpec", {}).get("executors", {}).items():
        resources = executor.get("container", {}).get("resources")
        if resources:
            yield name, resources


def _dags(spec: dict[str, Any]) -> Iterable[tuple[str, dict[str, Any]]]:
    yield "root", spec.get("root", {}).get("dag", {})
    for name, component in spec.get("components", {}).items():
        if "dag" in component:
            yield name, component["dag"]


def _task_constants(spec: dict[str, Any]) -> Iterable[tuple[str, dict[str, Any]]]:
    """(dag/task, runtimeValue) of every task input parameter given as a constant."""
    for dag_name, dag in _dags(spec):
        for task_name, task in dag.get("tasks", {}).items():
            for value in task.get("inputs", {}).get("parameters", {}).values():
                runtime = value.get("runtimeValue")
                if isinstance(runtime, dict) and "constant" in runtime:
                    yield f"{dag_name}/{task_name}", runtime


def _has_placeholder(value: Any) -> bool:
    return isinstance(value, str) and any(p in value for p in RUN_PLACEHOLDERS)


def features_used(documents: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Feature key → where the compiled spec (pipeline spec + Kubernetes platform spec) uses it."""
    spec = documents[0]
    components = spec.get("components", {})
    used: dict[str, list[str]] = {}
    for dag_name, dag in _dags(spec):
        for task_name, task in dag.get("tasks", {}).items():
            if "parameterIterator" not in task and "artifactIterator" not in task:
                continue
            loop = components.get(task.get("componentRef", {}).get("name", ""), {})
            if loop.get("dag", {}).get("outputs"):  # a loop whose outputs leave it is a fan-in
                used.setdefault("collected", []).append(f"{dag_name}/{task_name}")
    for name, component in components.items():
        outputs = component.get("dag", {}).get("outputs", {}).get("parameters", {})
        if any("valueFromOneof" in output for output in outputs.values()):
            used.setdefault("oneof", []).append(name)
    for where, runtime in _task_constants(spec):
        if _has_placeholder(runtime["constant"]):
            used.setdefault("run_placeholders", []).append(where)
    for executor, resources in _resources(spec):
        if set(resources) & set(_RESOURCE_FIELDS):
            used.setdefault("resource_strings", []).append(executor)
    for executor, config in _platform_executors(documents).items():
        if config.get("podMetadata"):
            used.setdefault("pod_metadata", []).append(executor)
        for secret in config.get("secretAsEnv", []) or []:
            if "optional" in secret:
                used.setdefault("optional_secret_env", []).append(executor)
            if "secretNameParameter" in secret:
                used.setdefault("secret_name_parameter", []).append(executor)
    return used


def _fixed_quantity(value: str, kind: str, defaults: dict[str, Any], values: dict[str, Any]) -> float | None:
    """A resource string as the number older backends read: a constant, or a pipeline parameter
    fixed to the run's value or its default (None when it cannot be fixed)."""
    from kfp.compiler import compiler_utils

    match = _CHANNEL.match(value)
    if match:
        name = match.group(1)
        if name in values:
            value = str(values[name])
        elif name in defaults:
            value = str(defaults[name])
        else:
            return None
    if "{{" in value:
        return None
    try:
        return compiler_utils._cpu_to_float(value) if kind == "cpu" else compiler_utils._memory_to_float(value)
    except (ValueError, TypeError):
        return None


def _adapt_resources(spec: dict[str, Any], values: dict[str, Any]) -> None:
    parameters = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    defaults = {name: p["defaultValue"] for name, p in parameters.items() if "defaultValue" in p}
    for _, resources in _resources(spec):
        for field, (numeric, kind) in _RESOURCE_FIELDS.items():
            if field not in resources:
                continue
            quantity = _fixed_quantity(str(resources[field]), kind, defaults, values)
            if quantity is not None:
                resources[numeric] = quantity
                del resources[field]


def _drop_placeholders(text: str) -> str:
    for placeholder in RUN_PLACEHOLDERS:
        text = text.replace(placeholder, "")
    return text


def _adapt_placeholders(spec: dict[str, Any]) -> None:
    """Before 2.5 every run/task placeholder becomes empty text: the steps read an empty run name as
    "no run known" and write no run label, annotation or metadata, where the literal placeholder text
    would otherwise reach the InferenceService and the model's metadata. No older placeholder stands in
    for it: the job and task placeholders arrived together (KFP PR 11599)."""
    for _, runtime in _task_constants(spec):
        if _has_placeholder(runtime["constant"]):
            runtime["constant"] = _drop_placeholders(runtime["constant"])


def adapt(
    documents: list[dict[str, Any]], backend: Version, values: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Rewrites, for an older `backend`, fields it cannot read into what it can, keeping the meaning:
    resource strings become the numeric fields (a pipeline parameter is fixed to `values`, the run's
    arguments, or its default: such a backend cannot vary resources per run), `optional: false` (the
    default) goes, and so does a secretNameParameter repeating the constant secretName; a Secret named
    by a pipeline parameter is fixed to the run's value or its default, as resources are. An optional
    Secret stays: without the field it would become required (check refuses it). Before 2.5 the run
    and task placeholders ({{$.pipeline_job_name}}, ...) become empty text (`_adapt_placeholders`)."""
    if backend < FEATURES["run_placeholders"].needs:
        _adapt_placeholders(documents[0])
    if backend < FEATURES["resource_strings"].needs:
        _adapt_resources(documents[0], values or {})
    parameters = documents[0].get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    chosen = {name: p["defaultValue"] for name, p in parameters.items() if "defaultValue" in p} | (values or {})
    for config in _platform_executors(documents).values():
        for secret in config.get("secretAsEnv", []) or []:
            if backend < FEATURES["optional_secret_env"].needs and secret.get("optional") is False:
                del secret["optional"]
            if backend >= FEATURES["secret_name_parameter"].needs or "secretNameParameter" not in secret:
                continue
            reference = secret["secretNameParameter"]
            constant = reference.get("runtimeValue", {}).get("constant")
            name = reference.get("componentInputParameter")
            if secret.get("secretName") and constant == secret["secretName"]:
                del secret["secretNameParameter"]
            elif name in chosen and chosen[name]:  # a pipeline parameter: fixed to the run's value or default
                secret["secretName"] = str(chosen[name])
                del secret["secretNameParameter"]
    return documents


def minimum_backend(documents: list[dict[str, Any]]) -> Version:
    """The oldest backend that runs this compiled spec, by the table."""
    return max([OLDEST, *(FEATURES[key].needs for key in features_used(documents))])


def beyond(documents: list[dict[str, Any]], backend: Version) -> list[str]:
    """Feature keys the spec uses that `backend` does not run (empty: it runs there)."""
    return sorted(key for key in features_used(documents) if FEATURES[key].needs > backend)


def check(documents: list[dict[str, Any]], backend: Version, pipeline: str) -> None:
    """Raises one line naming the feature `backend` cannot run that needs the newest version."""
    if backend < OLDEST:
        raise ChurnflowError(
            f"KFP backend {show(backend)} runs KFP v1 pipelines only; {pipeline} is a KFP v2 pipeline "
            f"(needs backend {show(OLDEST)} or newer)"
        )
    for key in sorted(beyond(documents, backend), key=lambda k: FEATURES[k].needs, reverse=True):
        feature = FEATURES[key]
        raise ChurnflowError(
            f"{pipeline} uses {feature.what}, which needs KFP backend {show(feature.needs)} or newer; "
            f"this backend is {show(backend)}"
        )
