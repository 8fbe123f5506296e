"""Drift-check logic (plain Python; the KFP wrapper in component.py and `churnflow drift` call it).

`check` runs churnflow.monitoring.drift over the store's window and writes the report (drift.json,
drift.html, drift.prom). Starting the training pipeline on drift is the pipelines' own business:
churnflow/pipelines/retraining.py (`start_retraining`, `retrain_op`), one layer up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from churnflow.monitoring.drift import DEFAULT_THRESHOLDS, Thresholds, run_check
from churnflow.monitoring.drift_report import write_report


def check(
    store_url: str,
    model_dir: str | Path,
    report_dir: str | Path,
    *,
    model_name: str = "churn",
    window: int | None = 10_000,
    evaluation_path: str | Path | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> dict[str, Any]:
    """Runs the drift check and writes its report into `report_dir`; returns the report."""
    report = run_check(
        store_url,
        model_dir,
        model_name=model_name,
        window=window,
        evaluation_path=evaluation_path,
        thresholds=thresholds,
    )
    write_report(report, report_dir)
    return report
