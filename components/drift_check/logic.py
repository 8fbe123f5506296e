"""Drift-check logic (plain Python; the KFP wrapper in component.py and `churnflow drift` call it).

`check` runs churnflow.monitoring.drift over the store's window, writes the report (drift.json,
drift.html, drift.prom) and returns it with its verdict (churnflow.monitoring.drift.judge, the same
`churnflow drift` turns into its exit status): only DRIFT retrains, so a window still filled by the
previous model version's predictions after a retrain is "not judged" and starts nothing.
Starting the training pipeline on drift is the pipelines' own business:
churnflow/pipelines/retraining.py (`start_retraining`, `retrain_op`), one layer up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from churnflow.core.artifact import DEFAULT_MODEL_NAME
from churnflow.monitoring.drift import DEFAULT_THRESHOLDS, DEFAULT_WINDOW, Thresholds, Verdict, judge, run_check
from churnflow.monitoring.drift_report import write_report


def check(
    store_url: str,
    model_dir: str | Path,
    report_dir: str | Path,
    *,
    model_name: str = DEFAULT_MODEL_NAME,
    window: int | None = DEFAULT_WINDOW,
    evaluation_path: str | Path | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> tuple[dict[str, Any], Verdict]:
    """Runs the drift check and writes its report into `report_dir`; returns the report and its verdict."""
    report = run_check(
        store_url,
        model_dir,
        model_name=model_name,
        window=window,
        evaluation_path=evaluation_path,
        thresholds=thresholds,
    )
    write_report(report, report_dir)
    return report, judge(report)
