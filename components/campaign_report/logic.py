"""The campaign report step as a plain function (the component in component.py only wraps it)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from churnflow.campaigns.measurement import campaign_report, summary_lines


def report_step(plan_uri: str, outcomes_uri: str, html_path: str, report_dir: str) -> dict[str, Any]:
    """Writes report.html to `html_path` (the KFP UI shows an HTML artifact as one file) and report.json
    with the charts into `report_dir`; returns the report and prints the summary `churnflow` prints."""
    with tempfile.TemporaryDirectory() as directory:
        report = campaign_report(plan_uri, outcomes_uri, directory)
        Path(report_dir).mkdir(parents=True, exist_ok=True)
        for name in ("report.json", "customers.csv", "churn_by_group.png", "reduction_by_decile.png"):
            shutil.copy(Path(directory) / name, report_dir)
        shutil.copyfile(Path(directory) / "report.html", html_path)
    for line in summary_lines(report):
        print(f"campaign-report: {line}")
    return report


def headline_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The numbers the KFP UI shows as Metrics (only those that exist: an empty arm has no effect)."""
    effect = report["effect"]
    metrics = {
        "contacted_customers": float(report["contacted"]["customers"]),
        "control_customers": float(report["control"]["customers"]),
        "missing_outcomes": float(report["contacted"]["missing_outcome"] + report["control"]["missing_outcome"]),
    }
    if effect["churn_rate_reduction"] is not None:
        metrics.update(
            churn_rate_reduction=effect["churn_rate_reduction"],
            churn_rate_reduction_ci95_low=effect["ci95"][0],
            churn_rate_reduction_ci95_high=effect["ci95"][1],
            customers_saved=effect["customers_saved"]["estimate"],
            net_saving=effect["net_saving"]["estimate"],
        )
    return metrics
