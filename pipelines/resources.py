"""CPU and memory requests and limits for every pipeline task, fixed when the pipeline is compiled.

Kubeflow profile namespaces usually carry a ResourceQuota, and the API server rejects a pod without
requests and limits there, so no task may go without. They are compile-time constants, not pipeline
parameters: kfp 2.17 compiles a parameter into the `resourceCpuLimit`-style fields only, which the KFP
backend reads from 2.4.0 on (kubeflow/pipelines PR 11501); the 2.2/2.3 backends of Kubeflow 1.9 read
only the older numeric fields and would start the pod with no resources at all. A constant is
compiled into both, so every backend honours it. `churnflow compile --cpu-limit ...` (and the other
options) choose them.

Two profiles: "compute" for the steps that read data or fit models, "light" for the ones that only
move small JSON or call an API.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from typing import Any

from churnflow.core.errors import ChurnflowError


@dataclass(frozen=True)
class TaskResources:
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str


COMPUTE = TaskResources(cpu_request="500m", cpu_limit="2", memory_request="1Gi", memory_limit="4Gi")
LIGHT = TaskResources(cpu_request="100m", cpu_limit="500m", memory_request="256Mi", memory_limit="1Gi")
DEFAULT_PROFILES = {"compute": COMPUTE, "light": LIGHT}

_profiles: contextvars.ContextVar[dict[str, TaskResources]] = contextvars.ContextVar(
    "churnflow_task_resources", default=DEFAULT_PROFILES
)


def _quantity(field: str, text: str) -> Any:
    from kubernetes.utils.quantity import parse_quantity

    try:
        value = parse_quantity(text)
    except ValueError:
        value = None
    if value is None or value <= 0:
        raise ChurnflowError(f"{field}: expected a positive Kubernetes quantity such as 500m, 2 or 1Gi, got {text!r}")
    return value


def check(resources: TaskResources, profile: str = "compute") -> TaskResources:
    """Every value a positive quantity and no request above its limit (the API server refuses both)."""
    for kind in ("cpu", "memory"):
        request = _quantity(f"--{kind}-request", getattr(resources, f"{kind}_request"))
        limit = _quantity(f"--{kind}-limit", getattr(resources, f"{kind}_limit"))
        if request > limit:
            raise ChurnflowError(
                f"--{kind}-request: the {profile} steps' request {getattr(resources, f'{kind}_request')} is above "
                f"their limit {getattr(resources, f'{kind}_limit')}"
            )
    return resources


def compute_profile(**overrides: str | None) -> TaskResources:
    """The compute profile with the given fields replaced (None: keep the default)."""
    chosen = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(chosen) - {f.name for f in fields(TaskResources)}
    if unknown:
        raise ChurnflowError(f"resources: unknown fields {sorted(unknown)}")
    return check(replace(COMPUTE, **chosen))


@contextlib.contextmanager
def task_resources(compute: TaskResources) -> Iterator[None]:
    """While a pipeline is (re)built inside this block, its compute steps get `compute`."""
    token = _profiles.set({**DEFAULT_PROFILES, "compute": check(compute)})
    try:
        yield
    finally:
        _profiles.reset(token)


def set_resources(task: Any, profile: str) -> Any:
    """Sets CPU and memory requests and limits on a pipeline task from the current `profile`."""
    chosen = _profiles.get()[profile]
    task.set_cpu_request(chosen.cpu_request).set_cpu_limit(chosen.cpu_limit)
    task.set_memory_request(chosen.memory_request).set_memory_limit(chosen.memory_limit)
    return task


def rebuild(pipeline: Any, compute: TaskResources | None) -> Any:
    """The pipeline built again under `compute` (the same one when None): KFP builds a pipeline's
    tasks when it is decorated, so other constants need the function run again."""
    if compute is None or compute == COMPUTE:
        return pipeline
    from kfp import dsl

    with task_resources(compute):
        try:
            return dsl.pipeline(name=pipeline.name, description=pipeline.description)(pipeline.pipeline_func)
        except ValueError as error:  # KFP's own checks are narrower than Kubernetes' quantities (e.g. 1k CPU)
            raise ChurnflowError(f"resources: {str(error).splitlines()[0]}") from None
