"""Issue 13 items 1-4: what reaches Prometheus and the prediction store on a cluster, checked against
KServe's, Knative's and the Prometheus Operator's documented behaviour (no cluster here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from churnflow.components.deploy.inferenceservice import HTTP_PORT, render_inferenceservice

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "manifests" / "monitoring"
QUEUE_PROXY_METRICS_PORT, AGGREGATION_PORT = "9091", "9088"


def kserve_pod_annotations(pod: dict[str, str], cluster_scraping: str, cluster_aggregation: str) -> dict[str, str]:
    """The prometheus.io/* annotations after KServe's pod mutator (pkg/webhook/admission/pod/
    metrics_aggregate_injector.go, 0.11-0.21): the pod's own flags win over inferenceservice-config's
    metricsAggregator defaults; with scraping on it writes the queue-proxy's port (9091) or, with
    aggregation on, the aggregation port (9088), whatever prometheus.kserve.io/port says."""
    result = dict(pod)
    aggregation = result.setdefault("serving.kserve.io/enable-metric-aggregation", cluster_aggregation)
    scraping = result.setdefault("serving.kserve.io/enable-prometheus-scraping", cluster_scraping)
    if scraping == "true":
        result["prometheus.io/port"] = AGGREGATION_PORT if aggregation == "true" else QUEUE_PROXY_METRICS_PORT
        result["prometheus.io/path"] = "/metrics"
    return result


@pytest.mark.parametrize("cluster_scraping", ["true", "false"])
@pytest.mark.parametrize("cluster_aggregation", ["true", "false"])
def test_prometheus_scrapes_the_predictors_own_port_whatever_kserve_defaults(cluster_scraping, cluster_aggregation):
    manifest = render_inferenceservice(name="churn", namespace="ns", storage_uri="s3://b/m")
    predictor = manifest["spec"]["predictor"]
    # ISVC-level annotations reach the pod too: none may switch KServe's scraping back on
    pod = {**manifest["metadata"].get("annotations", {}), **predictor["annotations"]}
    final = kserve_pod_annotations(pod, cluster_scraping, cluster_aggregation)
    (container,) = predictor["containers"]
    assert final["prometheus.io/scrape"] == "true"
    assert final["prometheus.io/port"] == str(HTTP_PORT) == str(container["ports"][0]["containerPort"])
    assert final["prometheus.io/path"] == "/metrics"
    assert f"--http_port={HTTP_PORT}" in container["args"]  # the port /metrics is really served on


def knative_pod_ports(manifest: dict, mode: str) -> list[dict]:
    """The predictor pod's container ports: RawDeployment keeps ours; Serverless (Knative) renames the
    user container's port user-port and adds the queue-proxy's."""
    (container,) = manifest["spec"]["predictor"]["containers"]
    ports = [dict(p, container=container["name"]) for p in container["ports"]]
    if mode == "RawDeployment":
        return ports
    renamed = [dict(p, name="user-port") for p in ports]
    queue = [("http-queueadm", 8022), ("http-autometric", 9090), ("http-usermetric", 9091), ("queue-port", 8012)]
    return renamed + [{"name": n, "containerPort": p, "container": "queue-proxy"} for n, p in queue]


@pytest.mark.parametrize("mode", ["Serverless", "RawDeployment"])
def test_the_podmonitor_finds_the_predictor_port_in_both_modes(mode):
    monitor = yaml.safe_load((MONITORING / "podmonitor.yaml").read_text())
    manifest = render_inferenceservice(name="churn", namespace="ns", storage_uri="s3://b/m")
    pod_labels = manifest["spec"]["predictor"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    ports = knative_pod_ports(manifest, mode)
    scraped = [
        (endpoint, port)
        for endpoint in monitor["spec"]["podMetricsEndpoints"]
        for port in ports
        if port["name"] == endpoint["port"]
    ]
    assert len(scraped) == 1, scraped  # exactly one target per pod: no gaps, no duplicates
    endpoint, port = scraped[0]
    assert (port["container"], port["containerPort"], endpoint["path"]) == ("kserve-container", HTTP_PORT, "/metrics")


def scrape_labels() -> tuple[set[str], set[str]]:
    """Labels each scrape attaches: plain Prometheus (prometheus.yml) and the PodMonitor (the
    Operator's defaults namespace, pod, container, endpoint, plus its relabelings)."""
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "churn-predictor")
    plain = {"job", "instance"} | {r["target_label"] for r in job["relabel_configs"] if "target_label" in r}
    plain = {label for label in plain if not label.startswith("__")}
    monitor = yaml.safe_load((MONITORING / "podmonitor.yaml").read_text())
    operator = {"job", "instance", "namespace", "pod", "container", "endpoint"}
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        operator |= {r["targetLabel"] for r in endpoint.get("relabelings", [])}
    return plain, operator


def test_rules_select_by_labels_both_scrapes_set():
    plain, operator = scrape_labels()
    rules = yaml.safe_load((MONITORING / "rules.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    matched = {m for e in exprs for m in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"", e)}
    grouped = {
        label.strip() for e in exprs for group in re.findall(r"\bby\s*\(([^)]*)\)", e) for label in group.split(",")
    }
    scrape_set = (matched | grouped) & (plain | operator)
    assert scrape_set <= plain & operator, scrape_set - (plain & operator)
    # the PodMonitor's job is "<namespace>/churn-predictor": only the Pushgateway's groups, whose job
    # label the drift check sets and the scrape honours, may be selected by job
    jobs = {m for e in exprs for m in re.findall(r"\bjob\s*(?:=~|!~|!=|=)\s*\"([^\"]*)\"", e)}
    assert jobs <= {"churnflow-drift"}, jobs
    assert "app" in matched and "namespace" in grouped


def test_every_alert_has_a_firing_and_a_quiet_case_over_both_label_sets():
    rules = yaml.safe_load((MONITORING / "rules.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load((MONITORING / "rules-tests.yml").read_text())["tests"]
    cases = [case for group in tests for case in group.get("alert_rule_test", [])]
    firing = {c["alertname"] for c in cases if c["exp_alerts"]}
    quiet = {c["alertname"] for c in cases if not c["exp_alerts"]}
    assert alerts <= firing, alerts - firing
    assert alerts <= quiet, alerts - quiet
    series = " ".join(s["series"] for group in tests for s in group["input_series"])
    assert (
        'job="churn-predictor"' in series and 'job="b/churn-predictor"' in series and 'endpoint="user-port"' in series
    )


def test_the_predictor_logs_to_the_store_secret():
    manifest = render_inferenceservice(name="churn", namespace="ns", storage_uri="s3://b/m", store_secret="my-store")
    (container,) = manifest["spec"]["predictor"]["containers"]
    (store,) = [e for e in container["env"] if e["name"] == "CHURNFLOW_STORE_URL"]
    assert store == {"name": "CHURNFLOW_STORE_URL", "valueFrom": {"secretKeyRef": {"name": "my-store", "key": "url"}}}
    quiet = render_inferenceservice(name="churn", namespace="ns", storage_uri="s3://b/m", store_secret="")
    assert all(e["name"] != "CHURNFLOW_STORE_URL" for e in quiet["spec"]["predictor"]["containers"][0]["env"])
    secret = yaml.safe_load((ROOT / "manifests" / "store-secret.yaml").read_text())
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "churnflow-store"
    assert secret["stringData"]["url"].startswith("postgresql://")


def test_pipelines_take_secrets_by_name_and_never_a_store_url(tmp_path):
    from churnflow.pipelines.drift_pipeline import compile_drift_pipeline
    from churnflow.pipelines.kubeflow import compile_pipeline

    training = list(yaml.safe_load_all(compile_pipeline(tmp_path / "t.yaml").read_text()))
    drift = list(yaml.safe_load_all(Path(compile_drift_pipeline(str(tmp_path / "d.yaml"))).read_text()))
    for spec, secret_parameter, default in (
        (training[0], "store_secret", "churnflow-store"),
        (drift[0], "store_secret", "churnflow-store"),
        (training[0], "data_secret", "churnflow-data"),
    ):
        parameters = spec["root"]["inputDefinitions"]["parameters"]
        assert parameters[secret_parameter]["defaultValue"] == default
        assert not [name for name in parameters if "url" in name.lower() and "store" in name.lower()], parameters
    executors = {**training[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]}
    (data,) = executors["exec-preprocess-op"]["secretAsEnv"]
    assert data["secretNameParameter"] == {"componentInputParameter": "data_secret"}
    assert {k["envVar"] for k in data["keyToEnv"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"}
    (store,) = drift[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-drift-check-op"]["secretAsEnv"]
    assert store["secretNameParameter"] == {"componentInputParameter": "store_secret"}
    assert store["keyToEnv"] == [{"envVar": "CHURNFLOW_STORE_URL", "secretKey": "url"}]
    assert store.get("optional") is not True  # optional=True breaks KFP backends before 2.14
    data_secret = yaml.safe_load((ROOT / "manifests" / "data-secret.yaml").read_text())
    assert data_secret["stringData"]["AWS_ENDPOINT_URL"] == "http://minio-service.kubeflow:9000"


@pytest.mark.parametrize("mode", ["Serverless", "RawDeployment"])
def test_scrapes_and_network_policy_select_the_predictor_pods_as_kserve_labels_them(mode):
    """PodMonitor, prometheus.yml's keep rule and the NetworkPolicy find the predictor pods in both modes.

    In RawDeployment KServe overwrites the pod label `app` with `isvc.<name>-predictor` (kserve
    pkg/controller/v1beta1/inferenceservice/reconcilers/deployment/deployment_reconciler.go, 0.13 to 0.21),
    so a selector on `app: churn-predictor` would find no pod there: no scrape, no alert, no ingress.
    The Kubernetes double's pod_labels writes the labels as KServe and Knative do.
    """
    from .kube_api_double import KubeAPIDouble
    from .test_profile_policies import deploy

    kube = KubeAPIDouble(default_mode=mode)
    try:
        deploy(kube, "v1", mode)
        labels = kube.pod_labels("ml", "churn")
    finally:
        kube.close()
    monitor = yaml.safe_load((MONITORING / "podmonitor.yaml").read_text())
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    policy = yaml.safe_load((ROOT / "manifests" / "networkpolicy.yaml").read_text())
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "churn-predictor")
    meta = {"__meta_kubernetes_pod_label_" + re.sub(r"[^A-Za-z0-9]", "_", k): v for k, v in labels.items()}
    keep = next(r for r in job["relabel_configs"] if r.get("action") == "keep")
    value = ";".join(meta.get(source, "") for source in keep["source_labels"])
    assert re.fullmatch(keep["regex"], value), (keep, labels)
    # the series still carry app="churn-predictor", which the alert rules select by
    for relabel in job["relabel_configs"]:
        if relabel.get("target_label") == "app":
            assert meta[relabel["source_labels"][0]] == "churn-predictor"
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        for relabel in endpoint.get("relabelings", []):
            if relabel.get("targetLabel") == "app":
                assert meta[relabel["sourceLabels"][0]] == "churn-predictor"
