"""One definition of PSI and its thresholds (churnflow/monitoring/psi.py), held against the Prometheus rules.

The recording rule `churnflow:feature_psi:1h` is evaluated by promtool on counter series made from
the drift check's own bins for a shifted stream (empty bins included, so the floor matters), and must
give the drift check's PSI per feature to 1e-12; the rules' floor and alert thresholds must be the
code's constants. Both rule files (plain Prometheus and the Operator's PrometheusRule) are checked.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from churnflow.core.synthetic import CONTRACT_TYPES, synthetic_customers
from churnflow.monitoring.drift import DEFAULT_THRESHOLDS, data_drift
from churnflow.monitoring.psi import PSI_ACT, PSI_FLOOR, PSI_WATCH
from churnflow.monitoring.reference import load_reference

MONITORING = Path(__file__).resolve().parents[1] / "manifests" / "monitoring"
PROMTOOL = shutil.which("promtool") or "promtool"
MINUTES = 120  # two hours of one-minute samples; the rule looks at the last hour


def rule_groups(name: str) -> list[dict]:
    document = yaml.safe_load((MONITORING / name).read_text())
    return document["groups"] if "groups" in document else document["spec"]["groups"]


def rules_by_name(name: str) -> dict[str, dict]:
    return {r.get("record") or r["alert"]: r for g in rule_groups(name) for r in g["rules"]}


def live_stream(rows: int = 3000) -> pd.DataFrame:
    """Newer customers on monthly contracts: tenure's upper deciles stay empty, so the floor is used."""
    rng = np.random.default_rng(17)
    frame = synthetic_customers(rows, seed=17)
    return frame.assign(
        tenure=rng.integers(1, 13, rows),
        contract_type=rng.choice(np.array(CONTRACT_TYPES, dtype=object), rows, p=[0.9, 0.1, 0.0]),
    )


@pytest.mark.parametrize("rules_file", ["rules.yml", "prometheusrule.yaml"])
def test_the_recording_rule_computes_the_drift_checks_psi_on_the_same_bins(model_dir, tmp_path, rules_file):
    reference = load_reference(model_dir)
    frame = live_stream()
    features = data_drift(reference, frame, DEFAULT_THRESHOLDS)["features"]
    assert any(0 in f["live_fractions"] for f in features.values()), "no empty live bin: the floor is not exercised"

    series = []
    for feature, result in features.items():
        labels = f'model_name="churn", feature="{feature}"'
        for bin_name, reference_fraction, live_fraction in zip(
            reference["features"][feature]["bins"], result["reference_fractions"], result["live_fractions"], strict=True
        ):
            per_minute = round(live_fraction * len(frame))  # the rows this bin counted, every minute
            bin_labels = f"{labels}, bin={json.dumps(bin_name)}"
            series.append(
                {"series": f"churnflow_feature_bin_total{{{bin_labels}}}", "values": f"0+{per_minute}x{MINUTES}"}
            )
            series.append(
                {
                    "series": f"churnflow_feature_reference_ratio{{{bin_labels}}}",
                    "values": f"{reference_fraction!r}x{MINUTES}",
                }
            )
        series.append({"series": f"expected_psi{{{labels}}}", "values": f"{result['psi']!r}x{MINUTES}"})

    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": rule_groups(rules_file)}))
    unit = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": "abs(churnflow:feature_psi:1h - on (model_name, feature) expected_psi) < bool 1e-12",
                        "eval_time": f"{MINUTES}m",
                        "exp_samples": [
                            {"labels": f'{{model_name="churn", feature="{feature}"}}', "value": 1}
                            for feature in features
                        ],
                    }
                ],
            }
        ],
    }
    (tmp_path / "psi-test.yml").write_text(yaml.safe_dump(unit))
    result = subprocess.run([PROMTOOL, "test", "rules", str(tmp_path / "psi-test.yml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("rules_file", ["rules.yml", "prometheusrule.yaml"])
def test_the_rules_use_the_codes_floor_and_thresholds(rules_file):
    rules = rules_by_name(rules_file)
    floors = re.findall(
        r"clamp_min\([^()]*(?:\([^()]*\)[^()]*)*,\s*([0-9.e+-]+)\)", rules["churnflow:feature_psi:1h"]["expr"]
    )
    assert len(floors) == 4 and {float(f) for f in floors} == {PSI_FLOOR}, floors
    watch = re.fullmatch(r"churnflow:feature_psi:1h > ([0-9.]+)", rules["ChurnFeatureDriftWatch"]["expr"].strip())
    act = re.fullmatch(r"churnflow:feature_psi:1h > ([0-9.]+)", rules["ChurnFeatureDrift"]["expr"].strip())
    assert watch and float(watch.group(1)) == PSI_WATCH == DEFAULT_THRESHOLDS.psi_watch
    assert act and float(act.group(1)) == PSI_ACT == DEFAULT_THRESHOLDS.psi_act
