"""Benchmark: the local pipeline end to end, and training alone, at several table sizes.

Run on purpose (not a test):  .venv/bin/python bench/pipeline_bench.py [--sizes 1000,100000,1000000]

Each measurement is a fresh process. "pipeline" is `churnflow run` in seed-exact mode (tune=false:
kfp.local preprocess → train → evaluate → deploy, including compiling the forest to ONNX); its
baseline is the original design's training script on the same rows (bench/baseline_train.py).
"tuned" is the default `churnflow run` (6 candidates × 5-fold CV, calibration, threshold), timed up to
--max-tuned-rows; its ratio is against the seed-exact pipeline, i.e. the tuning cost. "fit" is the forest
fit alone: ours (n_jobs=-1) against the seed's RandomForestClassifier(n_estimators=100, random_state=42).
Ratios are measured in the same run. Peak RSS is the largest single process. The results go to
bench/results/pipeline_bench.json (or --json) with the commit, date and machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _results import write_results

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
CHURNFLOW = str(Path(PYTHON).with_name("churnflow"))


def measure(command: list[str]) -> dict:
    output = subprocess.run(
        [PYTHON, str(HERE / "_measure.py"), *command], capture_output=True, text=True, check=True
    ).stdout
    result = json.loads(output)
    if result["returncode"] != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{result['stderr']}")
    return result


def fit_only(rows: int, which: str) -> dict:
    output = subprocess.run(
        [PYTHON, str(HERE / "_fit_only.py"), str(rows), which], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,100000,1000000")
    parser.add_argument("--max-tuned-rows", type=int, default=100_000)
    parser.add_argument("--note", default="", help="conditions worth recording (e.g. other work on the machine)")
    parser.add_argument("--json", help="write the results here (default bench/results/pipeline_bench.json)")
    args = parser.parse_args()
    results = []
    print(
        f"{'rows':>9} {'what':<9} {'ours s':>8} {'base s':>8} {'ratio':>6} {'ours MiB':>9} {'base MiB':>9} {'ratio':>6}"
    )
    for rows in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            ours = measure([CHURNFLOW, "run", "--rows", str(rows), "--output", f"{tmp}/run", "--set", "tune=false"])
            metrics = json.loads(Path(f"{tmp}/run/metrics.json").read_text())
            base = measure([PYTHON, str(HERE / "baseline_train.py"), str(rows), f"{tmp}/churn_model.pkl"])
            tuned, tuned_metrics = None, None
            if rows <= args.max_tuned_rows:
                tuned = measure([CHURNFLOW, "run", "--rows", str(rows), "--output", f"{tmp}/tuned"])
                tuned_metrics = json.loads(Path(f"{tmp}/tuned/metrics.json").read_text())
        fit_ours, fit_base = fit_only(rows, "ours"), fit_only(rows, "seed")
        rows_out = [("pipeline", ours, base), ("fit", fit_ours, fit_base)]
        if tuned:
            rows_out.insert(1, ("tuned", tuned, ours))
        for what, a, b in rows_out:
            print(
                f"{rows:>9} {what:<9} {a['seconds']:>8.2f} {b['seconds']:>8.2f} {a['seconds'] / b['seconds']:>6.2f} "
                f"{a['peak_rss_mib']:>9.0f} {b['peak_rss_mib']:>9.0f} {a['peak_rss_mib'] / b['peak_rss_mib']:>6.2f}"
            )
        quality = f"seed-exact roc_auc={metrics['roc_auc']:.4f} f1={metrics['f1']:.4f} brier={metrics['brier']:.4f}"
        if tuned_metrics:
            quality += (
                f"; tuned roc_auc={tuned_metrics['roc_auc']:.4f} f1={tuned_metrics['f1']:.4f} "
                f"brier={tuned_metrics['brier']:.4f}"
            )
        print(f"{'':>9} {quality}; compiled={metrics['compiled']} tree_nodes={fit_ours['tree_nodes']}")
        results.append(
            {
                "rows": rows,
                "pipeline": ours,
                "baseline_script": base,
                "tuned": tuned,
                "fit_ours": fit_ours,
                "fit_seed": fit_base,
                "metrics": metrics,
                "tuned_metrics": tuned_metrics,
            }
        )
    for r in results:
        for key in ("pipeline", "baseline_script", "tuned"):
            if r[key]:
                r[key].pop("stderr", None)
    write_results("pipeline_bench", {"sizes": results}, args.note, args.json)


if __name__ == "__main__":
    main()
