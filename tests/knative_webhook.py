"""Knative Serving's validating webhook as it judges the Knative Service KServe makes of a predictor.

KServe (Serverless mode) copies the predictor's pod fields into the template of a Knative Service; Knative's
webhook, not the InferenceService's CRD, decides whether that template may exist. Refused, the Knative Service
is never created (or never updated), so no revision appears. Only the rules our InferenceService can meet are
modelled, each with the upstream file and version it follows:

- Pod-level securityContext. Kubeflow 1.9 (kubeflow/manifests v1.9.x, Knative 1.12.4) and 1.10 (v1.10.x,
  Knative 1.16.2) leave config-features at Knative's defaults (pkg/apis/config/features.go:
  `kubernetes.podspec-securitycontext: disabled`, `secure-pod-defaults: disabled`; serving-core.yaml in
  common/knative/knative-serving/base/upstream shows them only in `_example`). With both disabled,
  pkg/apis/serving/fieldmask.go PodSecurityContextMask keeps no field at all, so every field set is
  "must not set" (k8s_validation.go ValidatePodSecurityContext via apis.CheckDisallowedFields).
- Container securityContext: fieldmask.go SecurityContextMask (identical in knative-v1.12.4 and v1.16.2) keeps
  capabilities, readOnlyRootFilesystem, runAsUser, runAsGroup, runAsNonRoot, allowPrivilegeEscalation and
  seccompProfile; anything else (privileged, seLinuxOptions, procMount, windowsOptions, appArmorProfile) is
  refused. CapabilitiesMask keeps `drop` only (`add` needs container-spec-addcapabilities or
  secure-pod-defaults, both disabled here).
- Volume mounts: k8s_validation.go validateVolumeMounts refuses a mountPath in `reservedPaths`: in
  knative-v1.12.4 `/`, `/dev`, `/dev/log`, `/tmp`, `/var`, `/var/log`; from knative-v1.13.0 on only `/`,
  `/dev`, `/dev/log`. emptyDir volumes are allowed (`kubernetes.podspec-volumes-emptydir` defaults to enabled
  in both versions).

Messages follow knative.dev/pkg apis.FieldError (message, then the sorted paths) behind the API server's
admission prefix, as a client such as KServe's controller receives them.
"""

from __future__ import annotations

import posixpath
from typing import Any

WEBHOOK = "validation.webhook.serving.knative.dev"
KNATIVE_OF_KUBEFLOW = {"1.9": "1.12.4", "1.10": "1.16.2"}  # kubeflow/manifests common/knative serving-core.yaml
RESERVED_PATHS_UP_TO_1_12 = frozenset({"/", "/dev", "/dev/log", "/tmp", "/var", "/var/log"})
RESERVED_PATHS_FROM_1_13 = frozenset({"/", "/dev", "/dev/log"})
CONTAINER_SECURITY_FIELDS = frozenset(
    {
        "capabilities",
        "readOnlyRootFilesystem",
        "runAsUser",
        "runAsGroup",
        "runAsNonRoot",
        "allowPrivilegeEscalation",
        "seccompProfile",
    }
)
# What KServe keeps on the InferenceService and does not put into the Knative Service's pod spec
# (kserve pkg/apis/serving/v1beta1 ComponentExtensionSpec).
COMPONENT_EXTENSION_FIELDS = frozenset(
    {
        "minReplicas",
        "maxReplicas",
        "scaleTarget",
        "scaleMetric",
        "scaleMetricType",
        "containerConcurrency",
        "timeout",
        "canaryTrafficPercent",
        "logger",
        "batcher",
        "labels",
        "annotations",
        "deploymentStrategy",
        "autoScaling",
    }
)


def reserved_paths(knative_version: str) -> frozenset[str]:
    """The mount paths Knative `knative_version` refuses (the list shrank in 1.13)."""
    major, minor = (int(part) for part in knative_version.split(".")[:2])
    return RESERVED_PATHS_UP_TO_1_12 if (major, minor) <= (1, 12) else RESERVED_PATHS_FROM_1_13


def pod_spec(predictor: dict) -> dict:
    """The pod spec KServe puts into the Knative Service template for a custom predictor."""
    return {k: v for k, v in predictor.items() if k not in COMPONENT_EXTENSION_FIELDS}


def refusal(predictor: dict, knative_version: str) -> str | None:
    """The webhook's message for the Knative Service made of `predictor`, or None when it is admitted."""
    spec = pod_spec(predictor)
    where = "spec.template.spec"
    disallowed: list[str] = []
    messages: dict[str, list[str]] = {}
    disallowed += [f"{where}.securityContext.{key}" for key in spec.get("securityContext") or {}]
    reserved = reserved_paths(knative_version)
    for index, container in enumerate(spec.get("containers") or []):
        at = f"{where}.containers[{index}]"
        context: dict[str, Any] = container.get("securityContext") or {}
        disallowed += [f"{at}.securityContext.{k}" for k in context if k not in CONTAINER_SECURITY_FIELDS]
        if (context.get("capabilities") or {}).get("add"):
            disallowed.append(f"{at}.securityContext.capabilities.add")
        for number, mount in enumerate(container.get("volumeMounts") or []):
            path = posixpath.normpath(mount.get("mountPath") or "")
            if path.startswith("//"):
                path = path[1:]
            if path in reserved:
                messages.setdefault(f"mountPath {path!r} is a reserved path".replace("'", '"'), []).append(
                    f"{at}.volumeMounts[{number}].mountPath"
                )
    if disallowed:
        messages["must not set the field(s)"] = disallowed
    if not messages:
        return None
    errors = "\n".join(f"{message}: {', '.join(sorted(paths))}" for message, paths in sorted(messages.items()))
    return f'admission webhook "{WEBHOOK}" denied the request: validation failed: {errors}'
