"""Issue 5: Prometheus rules and scrape config checked by promtool, alerts unit-tested, the Grafana
dashboard round-tripped through grafana-foundation-sdk, and everything run against a real Prometheus
scraping a real predictor."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from .conftest import KUBECTL
from .daemons import start_prometheus

MONITORING = Path(__file__).resolve().parents[1] / "manifests" / "monitoring"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(not PROMTOOL, reason="promtool not installed (bash scripts/system-deps.sh)")
# Series that come from outside the predictor: Prometheus' own `up`, and what `churnflow drift`
# exports in drift.prom (textfile collector or pushgateway).
EXTERNAL = {"up", "churnflow_precision_drop_ratio"}


def rules() -> dict:
    return yaml.safe_load((MONITORING / "rules.yml").read_text())


def dashboard() -> dict:
    return json.loads((MONITORING / "grafana-dashboard.json").read_text())


def panel_queries() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def rule_exprs() -> list[str]:
    return [r["expr"] for g in rules()["groups"] for r in g["rules"]]


def recorded() -> set[str]:
    return {r["record"] for g in rules()["groups"] for r in g["rules"] if "record" in r}


def metric_names(expr: str) -> set[str]:
    """Metric and recording-rule names an expression reads (not functions, labels or keywords)."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_labels = re.sub(r"\{[^}]*\}", "", without_strings)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_labels)
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*(?=\s*(?:\{|\[|\)|$|\s|[-+*/><=!]))", without_ranges))
    keywords = {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "le",
        "offset",
    }
    return {
        n
        for n in names
        if n not in keywords
        and not re.fullmatch(r"\d.*", n)
        and (n.startswith(("churnflow", "request_")) or n in EXTERNAL)
    }


@needs_promtool
def test_rules_pass_promtool_and_their_unit_tests():
    check = subprocess.run([PROMTOOL, "check", "rules", str(MONITORING / "rules.yml")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    tests = subprocess.run(
        [PROMTOOL, "test", "rules", "rules-tests.yml"], capture_output=True, text=True, cwd=MONITORING
    )
    assert tests.returncode == 0 and "SUCCESS" in tests.stdout, tests.stdout + tests.stderr
    alerts = {r["alert"] for g in rules()["groups"] for r in g["rules"] if "alert" in r}
    tested = set(re.findall(r"alertname: (\w+)", (MONITORING / "rules-tests.yml").read_text()))
    assert alerts <= tested, alerts - tested


@needs_promtool
def test_scrape_config_passes_promtool(tmp_path):
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    job, pushgateway = config["scrape_configs"]
    assert pushgateway["job_name"] == "churnflow-pushgateway" and pushgateway["honor_labels"] is True
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    keep = job["relabel_configs"][0]
    name_label = "__meta_kubernetes_pod_label_app_kubernetes_io_name"
    assert keep == {"source_labels": [name_label], "action": "keep", "regex": "churn-predictor"}
    # Debian's Prometheus is built without Kubernetes service discovery, so promtool checks the rest of
    # the configuration with the discovery swapped for a static target.
    job.pop("kubernetes_sd_configs")
    job["static_configs"] = [{"targets": ["127.0.0.1:8080"]}]
    config["rule_files"] = [str(MONITORING / "rules.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    check = subprocess.run(
        [PROMTOOL, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_prometheusrule_carries_the_same_groups():
    operator = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert operator["kind"] == "PrometheusRule" and operator["spec"]["groups"] == rules()["groups"]


def test_dashboard_round_trips_through_grafana_foundation_sdk():
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import Dashboard

    def without_nulls(node):
        if isinstance(node, dict):
            return {k: without_nulls(v) for k, v in node.items() if v is not None}
        if isinstance(node, list):
            return [without_nulls(v) for v in node]
        return node

    committed = dashboard()
    again = json.loads(json.dumps(Dashboard.from_json(committed), cls=JSONEncoder))
    assert without_nulls(again) == without_nulls(committed)  # an unknown key would have been dropped
    titles = " ".join(p["title"] for p in committed["panels"]).lower()
    for topic in ("request rate", "latency", "error", "churn rate", "probability", "drift", "model"):
        assert topic in titles, topic


def test_dashboard_is_shipped_as_a_grafana_configmap(tmp_path):
    built = subprocess.run([KUBECTL, "kustomize", str(MONITORING)], capture_output=True, text=True, check=True)
    documents = [d for d in yaml.safe_load_all(built.stdout) if d]
    (config_map,) = [d for d in documents if d["kind"] == "ConfigMap"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["grafana-dashboard.json"]) == dashboard()
    (tmp_path / "cm.yaml").write_text(yaml.safe_dump(config_map))
    validate = str(Path(sys.executable).with_name("kubernetes-validate"))
    result = subprocess.run([validate, "--strict", str(tmp_path / "cm.yaml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_every_panel_query_is_valid_promql(tmp_path):
    group = {
        "groups": [
            {
                "name": "panels",
                "rules": [{"record": f"panel:query_{i}", "expr": expr} for i, expr in enumerate(panel_queries())],
            }
        ]
    }
    (tmp_path / "panels.yml").write_text(yaml.safe_dump(group))
    check = subprocess.run([PROMTOOL, "check", "rules", str(tmp_path / "panels.yml")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_every_metric_used_is_really_exported(server):
    import httpx as client

    row = {"tenure": 3, "usage": 1, "age": 30, "monthly_charges": 99, "contract_type": "Month-to-month"}
    client.post(f"{server.url}/v1/models/churn:predict", json={"instances": [row]})
    client.post(f"{server.url}/v1/models/churn:predict", json={"instances": [{"tenure": "x"}]})
    scrape = client.get(f"{server.url}/metrics").text
    exported = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)", scrape, re.M))
    used = set().union(*(metric_names(e) for e in panel_queries() + rule_exprs()))
    assert {
        "churnflow_requests_total",
        "churnflow_feature_bin_total",
        "churnflow_request_duration_seconds_bucket",
    } <= used
    missing = used - exported - recorded() - EXTERNAL
    assert not missing, f"rules or dashboard read series the predictor does not export: {sorted(missing)}"


@pytest.mark.slow
def test_real_prometheus_scrapes_the_predictor_and_evaluates_rules(server, tmp_path):
    fast_rules = rules()
    for group in fast_rules["groups"]:
        group["interval"] = "1s"
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(fast_rules))
    (tmp_path / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(tmp_path / "rules.yml")],
                "scrape_configs": [
                    {
                        "job_name": "churn-predictor",
                        "static_configs": [
                            {"targets": [server.url.removeprefix("http://")], "labels": {"namespace": "test"}}
                        ],
                    }
                ],
            }
        )
    )
    prometheus = start_prometheus(tmp_path / "prometheus.yml", tmp_path)
    api = f"{prometheus.url}/api/v1"

    def query(expr: str) -> list:
        answer = httpx.get(f"{api}/query", params={"query": expr}, timeout=10).json()
        assert answer["status"] == "success", (expr, answer)
        return answer["data"]["result"]

    try:
        deadline = time.monotonic() + 60
        rows = [
            {
                "tenure": t,
                "usage": 10.0 * t % 100,
                "age": 20 + t,
                "monthly_charges": 20.0 + t,
                "contract_type": "Month-to-month",
            }
            for t in range(1, 60)
        ]
        while time.monotonic() < deadline:
            httpx.post(f"{server.url}/v1/models/churn:predict", json={"instances": rows})
            try:
                # every feature's PSI, each from a full window: an evaluation that raced the first
                # scrapes can leave a feature's 0/0 share (NaN) until the next one
                ready = query("churnflow:feature_psi:1h")
                if len(ready) == 5 and all(math.isfinite(float(r["value"][1])) for r in ready):
                    break
            except (httpx.HTTPError, AssertionError, ValueError):
                pass
            time.sleep(1)
        scraped = query('sum(churnflow_requests_total{protocol="v1",status="200"})')
        assert scraped and float(scraped[0]["value"][1]) >= 1
        psi = {r["metric"]["feature"]: float(r["value"][1]) for r in query("churnflow:feature_psi:1h")}
        assert set(psi) == {"tenure", "usage", "age", "monthly_charges", "contract_type"}, psi
        assert psi["contract_type"] > 0.25  # every row month-to-month: a real shift from training's mix
        for expr in panel_queries():
            query(expr)  # each dashboard query runs against the live data without error
        alerts = httpx.get(f"{api}/rules", timeout=10).json()["data"]["groups"]
        assert {g["name"] for g in alerts} == {"churnflow-recording", "churnflow-alerts"}
        assert all(r["health"] == "ok" for g in alerts for r in g["rules"]), alerts
    finally:
        prometheus.stop()
