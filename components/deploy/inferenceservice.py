"""The KServe InferenceService that serves one released model: the only place its shape is written."""

from __future__ import annotations

from typing import Any

import yaml

DEFAULT_SERVE_IMAGE = "ghcr.io/churnflow/churnflow-serve:0.1.0"
APP_LABEL = "churn-predictor"
MODEL_MOUNT = "/mnt/models"
HTTP_PORT = 8080
METRICS_PATH = "/metrics"
STORE_SECRET = "churnflow-store"
STORE_SECRET_KEY = "url"
STORE_ENV = "CHURNFLOW_STORE_URL"


def kserve_storage_uri(uri: str) -> str:
    """KFP's local MinIO artifact URIs (minio://bucket/key) are S3 to KServe's storage initializer."""
    return "s3://" + uri.removeprefix("minio://") if uri.startswith("minio://") else uri


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
    service_account: str = "",
    store_secret: str = "",
) -> dict[str, Any]:
    """The InferenceService manifest as a dict: custom predictor container, storageUri, scraping."""
    labels = {"app": APP_LABEL, "app.kubernetes.io/part-of": "churnflow"}
    if model_version:
        labels["churnflow.io/model-version"] = model_version
    if pipeline_run:
        labels["churnflow.io/pipeline-run"] = pipeline_run[:63]
    predictor: dict[str, Any] = {
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
        "scaleMetric": "concurrency",
        "scaleTarget": scale_target,
        "labels": dict(labels),
        "annotations": scrape_annotations(),
        "containers": [
            {
                "name": "kserve-container",
                "image": image,
                "args": [f"--model_name={name}", f"--model_dir={MODEL_MOUNT}", f"--http_port={HTTP_PORT}"],
                "env": [{"name": "STORAGE_URI", "value": kserve_storage_uri(storage_uri)}, *store_env(store_secret)],
                "ports": [{"name": "http1", "containerPort": HTTP_PORT, "protocol": "TCP"}],
                "resources": {
                    "requests": {"cpu": cpu, "memory": memory},
                    "limits": {"cpu": cpu, "memory": memory},
                },
                "readinessProbe": {"httpGet": {"path": f"/v1/models/{name}", "port": HTTP_PORT}},
                "securityContext": {
                    "runAsNonRoot": True,
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
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
        },
        "spec": {"predictor": predictor},
    }


def to_yaml(manifest: dict[str, Any]) -> str:
    return yaml.safe_dump(manifest, sort_keys=False)
