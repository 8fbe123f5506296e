"""The quality table of docs/pipeline.md: each model family and the tuned choice, on two example tables.

Run on purpose (not a test):  .venv/bin/python bench/quality_report.py [--note TEXT]

For each table it runs the pipeline's own logic (preprocess's stratified split, the tuning grid's
5-fold CV on the training split, train with calibration "auto" and the F1 threshold, evaluate on the
test split) three times: the random-forest grid alone, the boosting grid alone, and the default grid
of both families with the one-standard-error rule. It prints a Markdown table and writes
bench/results/quality.json (bench/_results.py: commit, date, machine, command).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from churnflow.components.evaluate.logic import Gate, evaluate
from churnflow.components.preprocess.logic import preprocess
from churnflow.components.train.logic import train
from churnflow.components.tune.logic import DEFAULT_GRID, candidates, cross_validate
from churnflow.components.tune.selection import select_best
from churnflow.core.config import load_config
from churnflow.core.hyperparameters import ForestParams, model_params

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from _results import write_results  # noqa: E402 - bench/ is not a package

GRIDS = {
    "random forest (its grid)": {"random_forest": DEFAULT_GRID["random_forest"]},
    "gradient boosting (its grid)": {"hist_gradient_boosting": DEFAULT_GRID["hist_gradient_boosting"]},
    "chosen by churnflow (both grids)": DEFAULT_GRID,
}


def tables(work: Path, rows: int) -> list[tuple[str, str, Any]]:
    """(name, data path or "" for synthetic, dataset config) of each example table."""
    from churnflow.core.synthetic import telco_customers

    telco = work / "telco.csv"
    telco_customers(rows, seed=11).to_csv(telco, index=False)
    return [
        (f"synthetic default ({rows:,} rows)", "", load_config(None)),
        (f"telecom example ({rows:,} rows)", str(telco), load_config(ROOT / "examples" / "telco" / "config.yaml")),
    ]


def one_run(work: Path, grid: dict[str, Any]) -> dict[str, Any]:
    """Tune, train and evaluate on the splits already in `work`."""
    results = [
        cross_validate(work / "train", work / "contract", candidate, folds=5, seed=42)
        for candidate in candidates(ForestParams(), True, json.dumps(grid))
    ]
    selection = select_best(results)
    model_dir = work / f"model-{len(list(work.glob('model-*')))}"
    metadata = train(
        work / "train",
        work / "contract",
        model_dir,
        model_params(**selection["best"]),
        calibration="auto",
        threshold_goal="f1",
        tuning=selection,
    )
    metrics = evaluate(model_dir, work / "test", Gate())["metrics"]
    chosen = next(r for r in results if r["params"] == selection["best"])
    return {
        "chosen": selection["best"],
        "cv_mean": chosen["score"],
        "cv_std": chosen["std"],
        "highest_cv_mean": selection["highest_score"],
        "one_standard_error": selection["tolerance"],
        "candidates": len(results),
        "calibration": metadata["calibration"]["method"],
        "threshold": metadata["threshold"]["threshold"],
        "roc_auc": metrics["roc_auc"],
        "brier": metrics["brier"],
        "f1": metrics["f1"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000, help="rows of each example table")
    parser.add_argument("--note", default="", help="conditions worth recording (e.g. other work on the machine)")
    args = parser.parse_args()
    report: dict[str, Any] = {"rows": args.rows, "tables": {}}
    with tempfile.TemporaryDirectory() as directory:
        for index, (name, data, config) in enumerate(tables(Path(directory), args.rows)):
            work = Path(directory) / f"table-{index}"
            splits = (work / "train", work / "test", work / "contract")
            preprocess(data, config, *splits, synthetic_rows=args.rows, seed=42)
            report["tables"][name] = {label: one_run(work, grid) for label, grid in GRIDS.items()}
    written = write_results("quality", report, note=args.note)
    print("| table | model | chosen settings | CV ROC-AUC (mean ± sd) | test ROC-AUC | Brier | F1 (threshold) |")
    print("|---|---|---|---|---|---|---|")
    for table, runs in report["tables"].items():
        for label, run in runs.items():
            settings = {k: v for k, v in run["chosen"].items() if k != "random_state"}
            print(
                f"| {table} | {label} | `{json.dumps(settings)}` | {run['cv_mean']:.4f} ± {run['cv_std']:.4f} | "
                f"{run['roc_auc']:.4f} | {run['brier']:.4f} | {run['f1']:.4f} ({run['threshold']:.2f}) |"
            )
    print(f"written: {written.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
