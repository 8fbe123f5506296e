"""Issue 13, the end-to-end proof: the monitoring, drift and retraining loop with real parts.

customer table in a real S3 server (moto) → the training pipeline through kfp.local (`churnflow run
--data s3://...`) → `churnflow serve` with the store URL the rendered InferenceService takes from its
Secret (a real PostgreSQL) → real traffic whose behaviour then changes → outcomes recorded with
`churnflow outcomes` → the drift pipeline through kfp.local → its results pushed to a real Pushgateway
and scraped by a real Prometheus with rules.yml → the precision-drop alert quiet, then firing → a
retrain submitted to the KFP API double. Every Grafana panel query returns data from that Prometheus.

What differs from a cluster: Prometheus scrapes static targets carrying the labels Kubernetes service
discovery would (prometheus.yml's own relabelling runs on them); the Secrets are resolved by the test
(kfp.local ignores kfp-kubernetes settings, so the tasks inherit the environment instead).
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from churnflow.core.synthetic import synthetic_customers

from .conftest import CHURNFLOW, ServerProcess
from .daemons import Daemon, start_prometheus, start_pushgateway
from .kfp_api import KfpApi
from .test_postgres_store import PostgresServer, _postgres_bin

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "manifests" / "monitoring"
NAMESPACE = "churn-e2e"
ROWS_PER_PHASE, ROWS_PER_REQUEST = 400, 50


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    bindir = _postgres_bin()
    if bindir is None:
        pytest.fail("PostgreSQL is not installed (bash scripts/system-deps.sh installs it)")
    server = PostgresServer(bindir)
    try:
        server.init()
        yield server
    finally:
        server.cleanup()


def secret_env(manifest: dict, secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """The predictor container's environment as the kubelet builds it: values and secretKeyRefs."""
    (container,) = manifest["spec"]["predictor"]["containers"]
    env = {}
    for variable in container["env"]:
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        else:
            ref = variable["valueFrom"]["secretKeyRef"]
            env[variable["name"]] = secrets[ref["name"]][ref["key"]]  # a missing Secret: the pod would not start
    return env


def prometheus_config(tmp_path: Path, predictor: ServerProcess, pushgateway: str, manifest: dict) -> Path:
    """prometheus.yml's own jobs and relabelling; Kubernetes discovery replaced by one static target
    that carries the meta labels discovery would give the rendered predictor pod."""
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    predictor_job, pushgateway_job = config["scrape_configs"]
    annotations = manifest["spec"]["predictor"]["annotations"]
    labels = manifest["spec"]["predictor"]["labels"]
    predictor_job.pop("kubernetes_sd_configs")
    predictor_job["static_configs"] = [
        {
            "targets": [f"127.0.0.1:{predictor.port}"],
            "labels": {
                "__meta_kubernetes_pod_label_app_kubernetes_io_name": labels["app.kubernetes.io/name"],
                "__meta_kubernetes_pod_label_churnflow_io_model_version": labels["churnflow.io/model-version"],
                "__meta_kubernetes_pod_annotation_prometheus_io_path": annotations["prometheus.io/path"],
                # the rendered port is 8080 (checked in test_cluster_monitoring); here the server's free port
                "__meta_kubernetes_pod_annotation_prometheus_io_port": str(predictor.port),
                "__meta_kubernetes_namespace": NAMESPACE,
                "__meta_kubernetes_pod_name": "churn-predictor-00001-deployment-e2e",
            },
        }
    ]
    pushgateway_job["static_configs"] = [{"targets": [pushgateway.removeprefix("http://")]}]
    rules = yaml.safe_load((MONITORING / "rules.yml").read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(tmp_path / "rules.yml")]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def send_traffic(predictor: ServerProcess, customers, phase: str) -> list[dict]:
    """Scores the customers in requests of ROWS_PER_REQUEST rows; returns (request_id, row_index) per row."""
    rows = customers.drop(columns=["churn"]).to_dict("records")
    keys = []
    for start in range(0, len(rows), ROWS_PER_REQUEST):
        request_id = f"{phase}-{start // ROWS_PER_REQUEST}"
        batch = rows[start : start + ROWS_PER_REQUEST]
        answer = httpx.post(
            f"{predictor.url}/v1/models/churn:predict",
            json={"instances": batch},
            headers={"X-Request-Id": request_id},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        keys += [{"request_id": request_id, "row_index": i} for i in range(len(batch))]
    return keys


def record_outcomes(store_url: str, keys: list[dict], churned, path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["request_id", "row_index", "churned"])
        writer.writeheader()
        for key, outcome in zip(keys, churned, strict=True):
            writer.writerow({**key, "churned": int(outcome)})
    done = subprocess.run(
        [CHURNFLOW, "outcomes", "--store", store_url, "--csv", str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and f"recorded {len(keys)} outcomes" in done.stdout, done.stdout + done.stderr


def wait_logged(store_url: str, rows: int) -> None:
    from churnflow.store.database import PredictionStore

    store = PredictionStore(store_url)
    try:
        deadline = time.monotonic() + 30
        while len(store.read_predictions(model_name="churn")) < rows:
            assert time.monotonic() < deadline, "the predictor did not log its predictions to the store"
            time.sleep(0.2)
    finally:
        store.close()


TRAIN_IMAGE = "registry.example/churnflow-train:e2e"
TOKEN = "projected-sa-token"


def run_drift_pipeline(root: Path, run_dir: Path, pushgateway: str, kfp_host: str, data_uri: str) -> bool:
    """The drift pipeline itself through kfp.local; the store URL reaches its task by the environment,
    as the Secret's env does on a cluster."""
    from kfp import local

    from churnflow.pipelines.drift_pipeline import drift_check_pipeline

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    model = (run_dir / "model").resolve()
    task = drift_check_pipeline(
        model_uri=str(model),
        evaluation_uri=str(model / "evaluation.json"),
        window=ROWS_PER_PHASE,
        pushgateway=pushgateway,
        kfp_host=kfp_host,
        namespace=NAMESPACE,
        data_uri=data_uri,
        train_image=TRAIN_IMAGE,
    )
    return bool(task.output)


class Prometheus:
    def __init__(self, url: str) -> None:
        self.api = f"{url}/api/v1"

    def query(self, expr: str) -> list[dict]:
        answer = httpx.get(f"{self.api}/query", params={"query": expr}, timeout=10).json()
        assert answer["status"] == "success", (expr, answer)
        return answer["data"]["result"]

    def firing(self, alertname: str) -> list[dict]:
        alerts = httpx.get(f"{self.api}/alerts", timeout=10).json()["data"]["alerts"]
        return [a for a in alerts if a["labels"]["alertname"] == alertname and a["state"] == "firing"]

    def wait_for(self, expr: str, check, timeout: float = 30) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if result and check(result):
                return result
            assert time.monotonic() < deadline, f"{expr}: {result}"
            time.sleep(0.5)


@pytest.mark.slow
def test_the_loop_closes_with_real_parts(tmp_path, s3_server, postgres, kfp_api: KfpApi, monkeypatch):
    started = time.monotonic()
    marks: dict[str, float] = {}
    # the KFP API as multi-user Kubeflow has it: the pod's projected token, the profile's namespace
    kfp_api.multi_user, kfp_api.token, kfp_api.namespaces = True, TOKEN, {NAMESPACE}
    (tmp_path / "kfp-token").write_text(TOKEN)
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "kfp-token"))
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    # 1. the customer table in object storage
    bucket = f"customers-{uuid.uuid4().hex[:8]}"
    client = s3_server.client()
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="customers.csv", Body=synthetic_customers(1000, 42).to_csv(index=False))
    data_uri = f"s3://{bucket}/customers.csv"

    marks["step 1"] = round(time.monotonic() - started, 1)
    # 2. the training pipeline through kfp.local, reading s3://
    run_dir = tmp_path / "run"
    trained = subprocess.run(
        [CHURNFLOW, "run", "--data", data_uri, "--output", str(run_dir), "--set", "tune=false"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert trained.returncode == 0, trained.stdout + trained.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["deployed"] and metrics["data_source"] == data_uri

    marks["step 2"] = round(time.monotonic() - started, 1)
    # 3. serve with the store URL the rendered InferenceService takes from its Secret
    manifest = yaml.safe_load((run_dir / "inferenceservice.yaml").read_text())
    store_url = postgres.url
    env = secret_env(manifest, {"churnflow-store": {"url": store_url}})
    assert env["CHURNFLOW_STORE_URL"] == store_url
    monkeypatch.setenv("CHURNFLOW_STORE_URL", store_url)  # what the drift task's Secret env holds
    predictor = ServerProcess(run_dir / "model", env={"CHURNFLOW_STORE_URL": env["CHURNFLOW_STORE_URL"]})
    daemons: list[Daemon] = []
    try:
        predictor.wait_ready()
        gateway = start_pushgateway(tmp_path)
        daemons.append(gateway)
        pushgateway = gateway.url
        config = prometheus_config(tmp_path, predictor, pushgateway, manifest)
        daemons.append(start_prometheus(config, tmp_path))
        prometheus = Prometheus(daemons[-1].url)

        marks["step 3"] = round(time.monotonic() - started, 1)
        # 4. real traffic, the customers behaving as in training; their outcomes; the drift pipeline
        before = synthetic_customers(ROWS_PER_PHASE, 7)
        keys = send_traffic(predictor, before, "before")
        wait_logged(store_url, ROWS_PER_PHASE)
        record_outcomes(store_url, keys, before["churn"], tmp_path / "before.csv")
        assert run_drift_pipeline(tmp_path / "kfp-1", run_dir, pushgateway, kfp_api.url, data_uri) is False
        pushed = prometheus.wait_for(
            f'churnflow_drift_window_predictions{{job="churnflow-drift",namespace="{NAMESPACE}"}}',
            lambda r: True,
        )
        assert pushed[0]["metric"]["model_version"] == metrics["model_version"]
        drop = float(prometheus.query("churnflow_precision_drop_ratio")[0]["value"][1])
        assert drop < 0.1
        time.sleep(2)  # a few rule evaluations over the scraped result
        assert prometheus.firing("ChurnModelPrecisionDrop") == []
        assert not kfp_api.posted("/apis/v2beta1/runs")

        marks["step 4"] = round(time.monotonic() - started, 1)
        # 5. behaviour changes: month-to-month customers dominate, and most predicted churners now stay
        after = synthetic_customers(ROWS_PER_PHASE, 8)
        after["contract_type"] = np.where(np.arange(len(after)) % 5, "Month-to-month", after["contract_type"])
        keys = send_traffic(predictor, after, "after")
        wait_logged(store_url, 2 * ROWS_PER_PHASE)
        stayed = np.random.default_rng(3).random(len(after)) < 0.7
        record_outcomes(store_url, keys, np.where(stayed, 0, after["churn"]), tmp_path / "after.csv")
        assert run_drift_pipeline(tmp_path / "kfp-2", run_dir, pushgateway, kfp_api.url, data_uri) is True

        marks["step 5"] = round(time.monotonic() - started, 1)
        # 6. scraped from the Pushgateway, the alert fires under rule evaluation
        prometheus.wait_for("churnflow_precision_drop_ratio > 0.1", lambda r: r[0]["metric"]["namespace"] == NAMESPACE)
        deadline = time.monotonic() + 20
        while not (firing := prometheus.firing("ChurnModelPrecisionDrop")):
            assert time.monotonic() < deadline, "ChurnModelPrecisionDrop never fired"
            time.sleep(0.5)
        assert firing[0]["labels"]["model_name"] == "churn"
        assert firing[0]["labels"]["model_version"] == metrics["model_version"]
        assert prometheus.firing("ChurnPredictorDown") == []  # the predictor's target is up, labelled app=...

        marks["step 6"] = round(time.monotonic() - started, 1)
        # 7. the retrain reached the KFP API double, with the token, into the profile, on the pipeline's image
        (run,) = kfp_api.posted("/apis/v2beta1/runs")
        assert run["runtime_config"]["parameters"]["data_uri"] == data_uri
        assert run["service_account"] == "churnflow-pipeline"
        (experiment,) = kfp_api.experiments.values()
        assert experiment["namespace"] == NAMESPACE and run["experiment_id"] == experiment["experiment_id"]
        spec = run["pipeline_spec"]
        spec = spec.get("pipeline_spec", spec)  # with a platform spec (the Secrets) the two travel together
        images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
        assert images == {TRAIN_IMAGE}  # the drift pipeline's own image, for every step

        marks["step 7"] = round(time.monotonic() - started, 1)
        # 8. every dashboard panel has data in this Prometheus
        dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
        queries = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]
        deadline = time.monotonic() + 30
        while True:
            empty = []
            for title, expr in queries:
                values = [float(r["value"][1]) for r in prometheus.query(expr)]
                if not values or not any(math.isfinite(v) for v in values):
                    empty.append((title, expr))
            if not empty or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert not empty, f"panels without data: {empty}"
        marks["all"] = round(time.monotonic() - started, 1)
        print(f"end-to-end seconds at each step: {marks}")
    finally:
        for daemon in reversed(daemons):
            daemon.stop()
        predictor.stop()
