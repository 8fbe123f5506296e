"""The KServe InferenceService that serves one released model: the only place its shape is written."""

from __future__ import annotations

import re
from typing import Any

import yaml

from churnflow.components.deploy.labels import label_value, run_name
from churnflow.core.errors import ChurnflowError

DEFAULT_SERVE_IMAGE = "ghcr.io/churnflow/churnflow-serve:0.1.0"
APP_LABEL = "churn-predictor"
# The pod label the scrapes, the NetworkPolicy and the alerts find the predictor by. Not `app`: KServe
# overwrites that with isvc.<name>-predictor in RawDeployment (reconcilers/deployment/deployment_reconciler.go).
NAME_LABEL = "app.kubernetes.io/name"
MODEL_MOUNT = "/mnt/models"
HTTP_PORT = 8080
# The ServiceAccount manifests/storage.yaml ships: its Secret gives KServe's storage initializer the
# S3 endpoint and keys of Kubeflow's MinIO, without which the predictor never becomes Ready.
DEFAULT_STORAGE_SERVICE_ACCOUNT = "churnflow-storage"
DEFAULT_NAMESPACE = "kubeflow-user-example-com"  # Kubeflow's example profile: where a deploy goes unless told
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
SERVERLESS, RAW_DEPLOYMENT = "Serverless", "RawDeployment"
DEPLOYMENT_MODES = (SERVERLESS, RAW_DEPLOYMENT)
PIPELINE_RUN_LABEL = "churnflow.io/pipeline-run"
PIPELINE_RUN_ANNOTATION = "churnflow.io/pipeline-run-name"
METADATA_DIGEST_ENV = "CHURNFLOW_METADATA_SHA256"
# The predictor's only writable directory. Not /tmp: Knative up to 1.12 (Kubeflow 1.9) refuses a volume
# mounted at /tmp, /var, /dev, ... (knative/serving pkg/apis/serving/k8s_validation.go, reservedPaths), so
# the refusal would leave the InferenceService without a revision. TMPDIR sends every tempfile there.
SCRATCH_VOLUME = "scratch"
SCRATCH_MOUNT = "/scratch"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
METRICS_PATH = "/metrics"
STORE_SECRET = "churnflow-store"
STORE_SECRET_KEY = "url"
STORE_ENV = "CHURNFLOW_STORE_URL"


def kserve_storage_uri(uri: str) -> str:
    """KFP's local MinIO artifact URIs (minio://bucket/key) are S3 to KServe's storage initializer."""
    return "s3://" + uri.removeprefix("minio://") if uri.startswith("minio://") else uri


def check_deployment_mode(mode: str) -> str:
    """The KServe deployment mode, or one clear error: the canary and autoscaling both depend on it."""
    if mode not in DEPLOYMENT_MODES:
        raise ChurnflowError(f"deployment_mode: expected Serverless or RawDeployment, got {mode!r}")
    return mode


def autoscaling(mode: str, scale_target: int, cpu_utilization: int) -> dict[str, Any]:
    """Per mode: Knative scales Serverless on in-flight requests; RawDeployment's HPA knows only cpu
    and memory (a `concurrency` metric there is silently ignored), so it scales on CPU utilisation."""
    if check_deployment_mode(mode) == RAW_DEPLOYMENT:
        return {"scaleMetric": "cpu", "scaleTarget": cpu_utilization}
    return {"scaleMetric": "concurrency", "scaleTarget": scale_target}


def hardened_security_context() -> dict[str, Any]:
    """The predictor container's: non-root, read-only root filesystem (the scratch emptyDir is the only
    writable place), no privilege escalation, every capability dropped, the runtime's default seccomp profile.

    All of it sits on the container, none on the pod: Knative as Kubeflow 1.9/1.10 install it
    (`kubernetes.podspec-securitycontext` and `secure-pod-defaults` disabled) refuses every pod-level
    securityContext field, while its container mask (pkg/apis/serving/fieldmask.go SecurityContextMask,
    knative-v1.12.4 and knative-v1.16.2) admits exactly these ones. The same in RawDeployment, so the two
    modes run the same pod."""
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _check_inputs(service_account: str, metadata_sha256: str) -> None:
    if service_account and (len(service_account) > 253 or not _DNS_SUBDOMAIN.match(service_account)):
        raise ChurnflowError(
            "service_account: expected a Kubernetes name (lower-case letters, digits, '-', '.'), "
            f"got {service_account!r}"
        )
    if metadata_sha256 and not _SHA256.match(metadata_sha256):
        raise ChurnflowError(f"metadata_sha256: expected 64 lower-case hex digits, got {metadata_sha256!r}")


def scrape_annotations(port: int = HTTP_PORT) -> dict[str, str]:
    """Pod annotations that make Prometheus scrape the predictor's own /metrics in both KServe modes.

    KServe's pod mutator, when `serving.kserve.io/enable-prometheus-scraping` is "true" (per pod or as the
    cluster default in inferenceservice-config), overwrites `prometheus.io/port` with the queue-proxy's
    port (9091) or, with metric aggregation on, the aggregation port (9088): never the model's. Nothing
    listens on either in RawDeployment. So the flag is pinned to "false" here (a cluster default of "true"
    must not win) and the standard annotations are ours. `prometheus.kserve.io/*` tell the queue-proxy
    where our metrics are, should someone turn metric aggregation on.
    """
    return {
        "serving.kserve.io/enable-prometheus-scraping": "false",
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": METRICS_PATH,
        "prometheus.kserve.io/port": str(port),
        "prometheus.kserve.io/path": METRICS_PATH,
    }


def store_env(store_secret: str) -> list[dict[str, Any]]:
    """CHURNFLOW_STORE_URL from the Secret `store_secret` (key `url`): predictions are logged to that store.

    The URL holds a password, so it never travels as a plain value (pipeline parameter, manifest or ML
    Metadata); an empty `store_secret` logs nothing. Not optional: a missing Secret keeps the pod from
    starting, which is louder than a predictor that silently logs nothing.
    """
    if not store_secret:
        return []
    reference = {"name": store_secret, "key": STORE_SECRET_KEY}
    return [{"name": STORE_ENV, "valueFrom": {"secretKeyRef": reference}}]


def render_inferenceservice(
    *,
    name: str,
    namespace: str,
    storage_uri: str,
    image: str = DEFAULT_SERVE_IMAGE,
    model_version: str = "",
    pipeline_run: str = "",
    min_replicas: int = 1,
    max_replicas: int = 3,
    scale_target: int = 50,
    cpu: str = "1",
    memory: str = "1Gi",
    service_account: str = DEFAULT_STORAGE_SERVICE_ACCOUNT,
    deployment_mode: str = SERVERLESS,
    cpu_utilization: int = 80,
    metadata_sha256: str = "",
    store_secret: str = STORE_SECRET,
) -> dict[str, Any]:
    """The InferenceService manifest as a dict: custom predictor container, storageUri, scraping.

    Label values go through label_value (a run's display name is not one); the run's full name is
    kept in an annotation. `metadata_sha256` is the digest of the model's metadata.json the predictor
    must find before it reads anything else.
    """
    mode = check_deployment_mode(deployment_mode)
    _check_inputs(service_account, metadata_sha256)
    labels = {"app": APP_LABEL, NAME_LABEL: APP_LABEL, "app.kubernetes.io/part-of": "churnflow"}
    annotations = {MODE_ANNOTATION: mode}
    if model_version:
        labels["churnflow.io/model-version"] = label_value(model_version)
    pipeline_run = run_name(pipeline_run)
    if pipeline_run:
        labels[PIPELINE_RUN_LABEL] = label_value(pipeline_run)
        annotations[PIPELINE_RUN_ANNOTATION] = pipeline_run
    env = [
        {"name": "STORAGE_URI", "value": kserve_storage_uri(storage_uri)},
        *store_env(store_secret),
        # Python's tempfile (model downloads, Prometheus multiprocess directories) follows TMPDIR.
        {"name": "TMPDIR", "value": SCRATCH_MOUNT},
    ]
    if metadata_sha256:
        env.append({"name": METADATA_DIGEST_ENV, "value": metadata_sha256})
    predictor: dict[str, Any] = {
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
        **autoscaling(mode, scale_target, cpu_utilization),
        "labels": dict(labels),
        "annotations": scrape_annotations(),
        "containers": [
            {
                "name": "kserve-container",
                "image": image,
                "args": [f"--model_name={name}", f"--model_dir={MODEL_MOUNT}", f"--http_port={HTTP_PORT}"],
                "env": env,
                "ports": [{"name": "http1", "containerPort": HTTP_PORT, "protocol": "TCP"}],
                "resources": {
                    "requests": {"cpu": cpu, "memory": memory},
                    "limits": {"cpu": cpu, "memory": memory},
                },
                "readinessProbe": {"httpGet": {"path": f"/v1/models/{name}", "port": HTTP_PORT}},
                "securityContext": hardened_security_context(),
                # The root filesystem is read-only: worker start-up and remote model downloads write here.
                "volumeMounts": [{"name": SCRATCH_VOLUME, "mountPath": SCRATCH_MOUNT}],
            }
        ],
        "volumes": [{"name": SCRATCH_VOLUME, "emptyDir": {"sizeLimit": "1Gi"}}],
    }
    if service_account:
        predictor["serviceAccountName"] = service_account
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {"predictor": predictor},
    }


def to_yaml(manifest: dict[str, Any]) -> str:
    return yaml.safe_dump(manifest, sort_keys=False)
